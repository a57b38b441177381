"""A bounded local directory of a remote cache's objects, shared by the processes of a host.

Remote caches are read through a local mirror: each shard object is fetched whole, once,
checked against the sha256 its bake shard's marker recorded, and published by rename, so the
reader serves it with the local fast path (memory maps). The directory holds at most
``limit`` bytes: objects are evicted least recently used first, but never one that a process
has *pinned* (the shards of the batches a Loader is about to read, or of a batch being read).

Coordination between processes is by ``flock`` on one small lock file per object (the lock
files are never deleted, which would race): a process downloads holding it exclusively, pins
holding it shared, and evicts only what it can lock exclusively without waiting. A download
writes ``<object>.partial`` first, sized up front so that every process counts it; a process
killed mid-download leaves a partial file whose lock nobody holds, which the next scan
removes. Nothing lives in shared memory.

Layout of ``local_dir``::

    <cache_key[:16]>-v<version>/      the store's own layout (manifest paths), one per version
        resident.json                 objects the version keeps (metadata, small fields)
    .locks/<sha1>.lock                one per object, never removed
    .dir.lock                         held while the directory's usage is counted
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from datakiln.errors import ChecksumMismatchError, SpecError
from datakiln.errors import LocalLimitError as LocalLimitError  # its old home re-exports it

logger = logging.getLogger(__name__)

LOCK_DIR = ".locks"
DIR_LOCK = ".dir.lock"
RESIDENT = "resident.json"
PARTIAL = ".partial"
_COPY_BYTES = 8 * 2**20
_ONE_GET_BYTES = 64 * 2**20
_ROOM_WAIT_S = 2.0
# An object this process stops using keeps its shared lock this long before it is released
# (and its use time recorded): consecutive batches touch the same shards, and re-locking each
# one per batch cost more than the batch's copy. Well under _ROOM_WAIT_S, so another process
# that needs the room gets it while it waits.
_LINGER_S = 0.5


@dataclass(frozen=True, slots=True)
class RemoteObject:
    """One object of the remote store: its size and, when the bake recorded one, checksum."""

    size: int
    checksum: str | None = None
    algorithm: str = "sha256"


class LocalDir:
    """The mirror of one cache version inside a shared, bounded ``local_dir``. Thread-safe.

    Args:
        fs, root: the remote store's filesystem and root path.
        local_dir: the shared directory (created if missing).
        version_dir: this cache version's folder name inside it.
        limit: bound on the bytes of every file under ``local_dir``.
        objects: relative path -> :class:`RemoteObject` of every object this reader may fetch.
        resident: relative paths fetched at open and never evicted while the version is used
            (array metadata and small per-row fields).
    """

    def __init__(
        self,
        fs: Any,
        root: str,
        local_dir: str,
        version_dir: str,
        *,
        limit: int,
        objects: Mapping[str, RemoteObject],
        resident: Iterable[str],
        fetch_threads: int = 8,
    ) -> None:
        self._fs, self._root = fs, root
        self.base = os.path.abspath(local_dir)
        self.root = os.path.join(self.base, version_dir)
        self.limit = int(limit)
        self._objects = dict(objects)
        self._resident = sorted(resident)
        self._pins: dict[str, list[Any]] = {}  # relative path -> [count, lock fd]
        # Unpinned objects whose shared lock lingers: relative path -> (lock fd, since), in
        # release order; released by _release_idle (a timer, pin_many, making room, close).
        self._idle: dict[str, tuple[int, float]] = {}
        self._idle_timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str], None]] = []
        self._resident_of: dict[str, frozenset[str]] = {}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.fetch_threads = int(fetch_threads)
        os.makedirs(os.path.join(self.base, LOCK_DIR), exist_ok=True)
        os.makedirs(self.root, exist_ok=True)
        resident_path = os.path.join(self.root, RESIDENT)
        if not os.path.exists(resident_path):
            _write_atomic(resident_path, json.dumps(self._resident).encode())
        self._resident_of[os.path.basename(self.root)] = frozenset(self._resident)
        resident_bytes = sum(self._objects[rel].size for rel in self._resident)
        if resident_bytes > self.limit:
            raise SpecError(
                f"local_limit={self.limit} bytes cannot hold the cache's metadata and small "
                f"fields ({resident_bytes} bytes); raise local_limit"
            )
        for rel in self._resident:
            self.pin(rel)  # held for the life of this reader

    # -- public --------------------------------------------------------------------------

    def path(self, rel: str) -> str:
        """Local path of the object ``rel`` (it exists only while pinned)."""
        return os.path.join(self.root, rel)

    def objects(self) -> list[str]:
        return list(self._objects)

    def resident_bytes(self) -> int:
        return sum(self._objects[rel].size for rel in self._resident)

    def has(self, rel: str) -> bool:
        """Whether the store holds object ``rel``."""
        return rel in self._objects

    def size(self, rel: str) -> int:
        return self._objects[rel].size

    def on_evict(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(rel)`` when this process evicts an object of this version.

        The listener drops its memory maps, which would otherwise keep the disk space in use.
        """
        self._listeners.append(listener)

    def pin(self, rel: str) -> None:
        """Make ``rel`` present locally and keep it there until :meth:`unpin`.

        Fetches it if no process has; waits if another process is fetching it.
        """
        with self._lock:
            entry = self._pins.get(rel)
            if entry is not None:
                entry[0] += 1
                return
            idle = self._idle.pop(rel, None)
            if idle is not None:  # still locked from its last use
                self._pins[rel] = [1, idle[0]]
                return
        fd = self._pinned_fd(rel)
        with self._lock:
            entry = self._pins.get(rel)
            if entry is not None:  # another thread of this process pinned it meanwhile
                entry[0] += 1
                os.close(fd)
                return
            self._pins[rel] = [1, fd]
        with contextlib.suppress(OSError):
            os.utime(self.path(rel))

    def unpin(self, rel: str) -> None:
        self.unpin_many((rel,))

    def unpin_many(self, rels: Iterable[str]) -> None:
        """Release one pin of each of ``rels`` (one lock for the whole batch)."""
        with self._lock:
            now = None
            for rel in rels:
                entry = self._pins[rel]
                entry[0] -= 1
                if entry[0]:
                    continue
                del self._pins[rel]
                now = time.monotonic() if now is None else now
                self._idle[rel] = (entry[1], now)
            if self._idle and self._idle_timer is None:
                self._idle_timer = threading.Timer(_LINGER_S, self._on_idle_timer)
                self._idle_timer.daemon = True
                self._idle_timer.start()

    def _on_idle_timer(self) -> None:
        with self._lock:
            self._idle_timer = None
        self._release_idle(_LINGER_S)
        with self._lock:
            if self._idle and self._idle_timer is None:
                self._idle_timer = threading.Timer(_LINGER_S, self._on_idle_timer)
                self._idle_timer.daemon = True
                self._idle_timer.start()

    def _release_idle(self, older_than: float = 0.0) -> None:
        """Release the locks of objects unused for ``older_than`` seconds (0: all of them).

        Least recently used then counts from now.
        """
        cutoff = time.monotonic() - older_than
        with self._lock:
            released = []
            for rel, (fd, since) in list(self._idle.items()):
                if since > cutoff:
                    break  # release order: the rest are younger
                del self._idle[rel]
                released.append((rel, fd))
        for rel, fd in released:
            with contextlib.suppress(OSError):
                os.utime(self.path(rel))
            os.close(fd)

    def pin_many(self, rels: Iterable[str]) -> None:
        """Pin every object of ``rels``, fetching the missing ones concurrently."""
        rels = list(dict.fromkeys(rels))
        done: list[str] = []
        missing = []
        with self._lock:  # what this process holds already: one lock for the whole batch
            for rel in rels:
                entry = self._pins.get(rel)
                if entry is not None:
                    entry[0] += 1
                elif rel in self._idle:
                    self._pins[rel] = [1, self._idle.pop(rel)[0]]
                else:
                    missing.append(rel)
                    continue
                done.append(rel)
        if len(missing) <= 1:
            try:
                for rel in missing:
                    self.pin(rel)
            except BaseException:
                self.unpin_many(done)
                raise
            return
        try:
            errors = list(self._pool().map(self._try_pin, missing))
            done.extend(rel for rel, err in zip(missing, errors, strict=True) if err is None)
            for error in errors:
                if error is not None:
                    raise error
        except BaseException:
            self.unpin_many(done)
            raise

    def _try_pin(self, rel: str) -> BaseException | None:
        try:
            self.pin(rel)
        except BaseException as err:  # raised by pin_many once the others finished
            return err
        return None

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    self.fetch_threads, thread_name_prefix="datakiln-fetch"
                )
            return self._executor

    def pinned_bytes(self) -> int:
        with self._lock:
            return sum(self._objects[rel].size for rel in self._pins)

    def usage(self) -> int:
        """Bytes of every file under ``local_dir`` (partial downloads included)."""
        with self._dir_locked():
            return sum(size for _, size, _, _ in self._scan())

    def close(self) -> None:
        """Release every pin of this process."""
        with self._lock:
            pins, self._pins = self._pins, {}
            executor, self._executor = self._executor, None
            timer, self._idle_timer = self._idle_timer, None
        if timer is not None:
            timer.cancel()
        if executor is not None:
            executor.shutdown(wait=True)
        for _, fd in pins.values():
            os.close(fd)
        self._release_idle()

    # -- fetching ------------------------------------------------------------------------

    def _lock_path(self, version: str, rel: str) -> str:
        name = hashlib.sha1(f"{version}/{rel}".encode()).hexdigest()
        return os.path.join(self.base, LOCK_DIR, f"{name}.lock")

    def _pinned_fd(self, rel: str) -> int:
        """An fd holding a shared lock on ``rel``'s lock file, with ``rel`` published."""
        if rel not in self._objects:
            raise KeyError(f"{rel} is not an object of this cache")
        final = self.path(rel)
        fd = os.open(self._lock_path(os.path.basename(self.root), rel), os.O_RDWR | os.O_CREAT)
        try:
            while True:
                fcntl.flock(fd, fcntl.LOCK_SH)
                if os.path.exists(final):
                    return fd
                fcntl.flock(fd, fcntl.LOCK_EX)  # to fetch it, unless another process did
                if not os.path.exists(final):
                    self._download(rel, final)
                # downgrade; not atomic, so an evictor may slip in: check again
        except BaseException:
            os.close(fd)
            raise

    def _download(self, rel: str, final: str) -> None:
        """Fetch ``rel`` to ``final`` (the caller holds its lock exclusively)."""
        info = self._objects[rel]
        partial = final + PARTIAL
        os.makedirs(os.path.dirname(final), exist_ok=True)
        # Pins are held only while a batch is read or waits in a window, so a full directory
        # is usually full for a moment: wait a little for readers to let go before failing.
        deadline = time.monotonic() + _ROOM_WAIT_S
        while True:
            try:
                with self._dir_locked():
                    self._make_room(info.size, exclude=partial)
                    with open(partial, "wb") as f:
                        f.truncate(info.size)  # counted by every process from now on
                break
            except LocalLimitError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        try:
            digest = hashlib.new(info.algorithm) if info.checksum else None
            written = 0
            with open(partial, "r+b") as dst:
                for piece in self._pieces(rel, info.size):
                    dst.write(piece)
                    written += len(piece)
                    if digest is not None:
                        digest.update(piece)
            if written != info.size:
                raise ChecksumMismatchError(
                    f"{rel}: fetched {written} bytes, the store listed {info.size}; the remote "
                    "cache changed while it was read, or is damaged: run `datakiln verify`"
                )
            if digest is not None and digest.hexdigest() != info.checksum:
                raise ChecksumMismatchError(
                    f"{rel}: the fetched bytes do not match the checksum its bake recorded; "
                    "run `datakiln verify` on the remote cache"
                )
            with self._dir_locked():  # a scan must not see neither name nor both
                os.replace(partial, final)
            logger.debug("fetched %s (%d bytes)", rel, info.size)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise

    def _pieces(self, rel: str, size: int) -> Iterator[bytes]:
        """The bytes of remote object ``rel``: one GET up to ``_ONE_GET_BYTES``, else streamed.

        One GET, because an object store's ``open`` first asks for the object's size, a
        request more.
        """
        path = f"{self._root}/{rel}"
        if size <= _ONE_GET_BYTES:
            yield self._fs.cat_file(path)
            return
        with self._fs.open(path, "rb", block_size=_COPY_BYTES) as src:
            while piece := src.read(_COPY_BYTES):
                yield piece

    # -- accounting and eviction ---------------------------------------------------------

    @contextlib.contextmanager
    def _dir_locked(self) -> Iterator[None]:
        fd = os.open(os.path.join(self.base, DIR_LOCK), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _resident_set(self, version: str) -> frozenset[str]:
        known = self._resident_of.get(version)
        if known is None:
            try:
                with open(os.path.join(self.base, version, RESIDENT), "rb") as f:
                    known = frozenset(json.load(f))
            except (OSError, ValueError):
                known = frozenset()
            self._resident_of[version] = known
        return known

    def _scan(self) -> list[tuple[str, int, float, str | None]]:
        """``(version, size, mtime, rel or None)`` of every file.

        ``rel`` is set on the objects that may be evicted. Removes partial downloads whose
        process is gone (the caller holds the directory lock).
        """
        found: list[tuple[str, int, float, str | None]] = []
        for version in os.listdir(self.base):
            top = os.path.join(self.base, version)
            if version == LOCK_DIR or not os.path.isdir(top):
                if os.path.isfile(top):
                    found.append((version, os.path.getsize(top), 0.0, None))
                continue
            resident = self._resident_set(version)
            for folder, _, files in os.walk(top):
                for name in files:
                    path = os.path.join(folder, name)
                    rel = os.path.relpath(path, top).replace(os.sep, "/")
                    try:
                        stat = os.stat(path)
                    except FileNotFoundError:
                        continue
                    if name.endswith(PARTIAL):
                        if self._stale(version, rel[: -len(PARTIAL)], path):
                            continue
                        found.append((version, stat.st_size, stat.st_mtime, None))
                    elif rel == RESIDENT or rel in resident or name == "zarr.json":
                        found.append((version, stat.st_size, stat.st_mtime, None))
                    else:
                        found.append((version, stat.st_size, stat.st_mtime, rel))
        return found

    def _stale(self, version: str, rel: str, partial: str) -> bool:
        """Remove ``partial`` if no process is downloading it; whether it was removed."""
        fd = os.open(self._lock_path(version, rel), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
                logger.info("removed %s, left by a download that did not finish", partial)
            return True
        finally:
            os.close(fd)

    def _make_room(self, need: int, *, exclude: str) -> None:
        """Evict least recently used objects until ``need`` more bytes fit the limit."""
        files = self._scan()
        if sum(size for _, size, _, _ in files) + need > self.limit:
            self._release_idle()  # this process's lingering locks must not block eviction
        usage = sum(size for _, size, _, _ in files)
        if usage + need <= self.limit:
            return
        candidates = sorted((f for f in files if f[3] is not None), key=lambda f: f[2])
        for version, size, _, rel in candidates:
            if usage + need <= self.limit:
                break
            assert rel is not None
            if self._evict(version, rel):
                usage -= size
        if usage + need > self.limit:
            raise LocalLimitError(
                f"local_dir {self.base}: cannot fit {need} more bytes within local_limit="
                f"{self.limit}: {usage} bytes are in use and pinned by readers (this process "
                f"pins {self.pinned_bytes()}); raise local_limit, or lower the Loader's "
                "prefetch window or the batch's spread over shards (BlockShuffle)"
            )

    def _evict(self, version: str, rel: str) -> bool:
        fd = os.open(self._lock_path(version, rel), os.O_RDWR | os.O_CREAT)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # pinned or being fetched by some process
            try:
                os.unlink(os.path.join(self.base, version, rel))
            except FileNotFoundError:
                return False
            if version == os.path.basename(self.root):
                for listener in self._listeners:
                    listener(rel)
            logger.debug("evicted %s/%s", version, rel)
            return True
        finally:
            os.close(fd)


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def lazy_fields(manifest: Mapping[str, Any]) -> dict[str, str]:
    """Field name -> array path of the fields read shard object by shard object.

    Those are fetched on demand; the other fields are small and fetched whole at open.
    """
    return {
        name: field["path"]
        for name, field in manifest["fields"].items()
        if field["dtype"] == "string" or field.get("chunk_rows") == 1
    }


def version_dir_name(manifest: Mapping[str, Any]) -> str:
    """The folder of a cache version, named by its key and version.

    So a new version never reads objects of an old one.
    """
    return f"{str(manifest['cache_key'])[:16]}-v{int(manifest['version'])}"


def mirror_cache(
    fs: Any,
    root: str,
    manifest: Mapping[str, Any],
    local_dir: str,
    *,
    limit: int,
) -> LocalDir:
    """A :class:`LocalDir` for the cache at ``fs``/``root``, its small objects fetched.

    Object sizes come from one listing of the generation's folder and checksums from the
    bake shards' markers (one small GET each).
    """
    from datakiln.cache.layout import check_relative

    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise SpecError(f"local_limit must be a positive number of bytes, got {limit!r}")
    prefix = f"{root}/"
    sizes: dict[str, int] = {}
    folders = {check_relative(manifest["generation"])}
    for field in manifest["fields"].values():
        folders.add(check_relative(field["path"]).rsplit("/", 1)[0])
    for folder in sorted(folders):
        for path, info in fs.find(f"{root}/{folder}", detail=True).items():
            if path.startswith(prefix):
                sizes[path[len(prefix) :]] = int(info["size"])
    for name in ("zarr.json",):
        if fs.exists(f"{root}/{name}"):
            sizes[name] = int(fs.size(f"{root}/{name}"))
    checksums: dict[str, tuple[str, str]] = {}
    for shard in manifest["shards"]:
        marker = json.loads(fs.cat_file(f"{root}/{check_relative(shard['marker'])}"))
        algorithm = marker.get("checksum_algorithm", "blake2b-128")
        for key, digest in (marker.get("checksums") or {}).items():
            if digest is not None:
                checksums[key] = (digest, algorithm)
    field_paths = [f["path"] for f in manifest["fields"].values()]
    lazy = [f"{path}/" for path in lazy_fields(manifest).values()]
    objects: dict[str, RemoteObject] = {}
    resident: list[str] = []
    for rel, size in sizes.items():
        in_field = any(rel.startswith(f"{path}/") for path in field_paths)
        is_meta = rel.endswith("zarr.json")
        if not (in_field or is_meta):
            continue  # Parquet parts, markers: read from the store when asked for
        if is_meta:
            objects[rel] = RemoteObject(size)
        else:
            digest, algorithm = checksums.get(rel, (None, "sha256"))
            if digest is None:
                logger.warning("%s has no recorded checksum; fetched without verification", rel)
            objects[rel] = RemoteObject(size, digest, _hash_name(algorithm))
        if is_meta or not any(rel.startswith(p) for p in lazy):
            resident.append(rel)
    return LocalDir(
        fs,
        root,
        local_dir,
        version_dir_name(manifest),
        limit=limit,
        objects=objects,
        resident=resident,
    )


def _hash_name(algorithm: str) -> str:
    if algorithm == "sha256":
        return "sha256"
    raise SpecError(
        f"objects checksummed with {algorithm!r} cannot be verified while fetched; re-bake "
        "the cache with this datakiln (sha256), or read it without local_dir"
    )
