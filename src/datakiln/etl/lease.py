"""A store lease: at most one bake writes a store at a time.

The lease is ``_lease.json`` at the store root: its owner (host, pid and the pid's start time),
start and expiry. How it is held depends on the store:

- Local disks: an exclusive ``flock`` on the lease file, held for the bake's life. The kernel
  drops it when the bake dies, however it dies, so the next bake takes over at once.
- S3: conditional writes. Taking, renewing and releasing the lease are compare-and-swaps on
  the record (``If-None-Match: *`` / ``If-Match: <etag>``), so two bakes never both win.
- Other object stores: a put followed by a read-back, with a warning naming the store.

A lease whose holder ran on this host (same boot and pid namespace) and whose pid is gone, or
now belongs to a younger process, is taken over at once. Leases of other hosts expire after
``ttl_s`` without renewal; ``force`` takes over any lease, with a warning naming its holder.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping
from typing import Any, TypedDict, cast

from datakiln.cache.conditional import ConditionalObjects, Versioned
from datakiln.cache.layout import LEASE, is_local, store_fs
from datakiln.errors import LeaseHeldError

logger = logging.getLogger(__name__)


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="seconds")


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def process_start(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot; ``None`` if it is gone or a zombie."""
    stat = _read_text(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _namespace() -> str:
    with contextlib.suppress(OSError):
        return os.readlink("/proc/self/ns/pid")
    return ""


class Holder(TypedDict):
    """Who holds a lease: enough to tell, on the same host, whether the holder still runs."""

    host: str
    boot: str  # the kernel's boot id: a pid means nothing after a reboot
    pid_ns: str
    pid: int
    pid_start: int | None


class LeaseRecord(TypedDict, total=False):
    """The lease object's JSON: its owner, start, expiry, and the ``Holder`` keys.

    Read from a store, any key may be absent (a record written by another version); readers
    use ``.get``. ``_forced`` is never written: it marks, in memory, a record taken over
    with ``--force-unlock``.
    """

    owner: str
    started: float
    expires: float
    host: str
    boot: str
    pid_ns: str
    pid: int
    pid_start: int | None
    _forced: bool


def this_process() -> Holder:
    """Who holds a lease: enough to tell, on the same host, whether the holder still runs."""
    return {
        "host": socket.gethostname(),
        "boot": _read_text("/proc/sys/kernel/random/boot_id"),
        "pid_ns": _namespace(),
        "pid": os.getpid(),
        "pid_start": process_start(os.getpid()),
    }


def holder_is_dead(record: LeaseRecord) -> bool:
    """Whether the lease's holder provably no longer runs (only knowable on its own host)."""
    me = this_process()
    where = (record.get("host"), record.get("boot"), record.get("pid_ns"))
    if not me["boot"] or where != (me["host"], me["boot"], me["pid_ns"]):
        return False
    pid = record.get("pid")
    if not isinstance(pid, int) or record.get("pid_start") is None:
        return False
    return bool(process_start(pid) != record["pid_start"])


def _parse_record(raw: bytes) -> LeaseRecord | None:
    """A lease record from its JSON, or ``None`` when it is not a JSON object."""
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    # its keys are checked where read (``.get``, ``isinstance``)
    return cast(LeaseRecord, record) if isinstance(record, dict) else None


class StoreLease:
    """Context manager holding the lease of the store at ``url``.

    Args:
        ttl_s: how long a lease stays valid without renewal.
        wait_s: how long to wait for a held lease before failing.
        force: take over a live holder's lease (it is told when it next renews).
    """

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        *,
        ttl_s: float = 60.0,
        wait_s: float = 0.0,
        poll_s: float = 1.0,
        force: bool = False,
    ) -> None:
        self.url = url
        self._fs, root = store_fs(url, storage_options)
        self._path = f"{root}/{LEASE}"
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.ttl_s, self.wait_s, self.poll_s, self.force = ttl_s, wait_s, poll_s, force
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Held by the heartbeat while it renews, and by ``paused``.
        self._renewing = threading.Lock()
        self._local = is_local(self._fs)
        self._objects = ConditionalObjects(self._fs, url)
        self._held: Versioned | None = None  # the record as last written (object stores)
        self._fd: int | None = None  # the locked lease file (local disks)
        self.lost = False

    def read(self) -> LeaseRecord | None:
        """The current lease record, or ``None`` when there is none (or it is unreadable)."""
        try:
            return _parse_record(self._fs.cat_file(self._path))
        except FileNotFoundError:
            return None

    def _record(self) -> bytes:
        return json.dumps(
            {
                "owner": self.owner,
                "started": self.started,
                "expires": time.time() + self.ttl_s,
                **this_process(),
            }
        ).encode()

    def _why_free(self, record: LeaseRecord | None) -> str | None:
        """Why a lease in ``record`` may be taken: ``None`` when it is validly held."""
        if record is None or record.get("owner") == self.owner:
            return "free"
        if record.get("expires", 0) <= time.time():
            return "expired"
        if holder_is_dead(record):
            return "holder gone"
        if self.force:
            return "forced"
        return None

    # -- local disks: a kernel lock ---------------------------------------------------------

    @staticmethod
    def _fd_record(fd: int) -> LeaseRecord | None:
        raw = os.pread(fd, 1 << 16, 0)
        return _parse_record(raw) if raw else None

    def _write_local(self) -> None:
        assert self._fd is not None
        data = self._record()
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))

    # -- acquire, renew, release ------------------------------------------------------------

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_s
        self._fs.makedirs(self._path.rsplit("/", 1)[0], exist_ok=True)
        if not self._local:
            self._objects.warn_if_unsupported("the store lease")
        while True:
            taken, current, why = self._attempt()
            if taken:
                break
            if time.monotonic() >= deadline:
                holder = current or self.read() or LeaseRecord()
                raise LeaseHeldError(
                    f"another bake is writing {self.url}: lease held by "
                    f"{holder.get('owner', '?')} since {_when(holder.get('started', 0))}, "
                    f"expires {_when(holder.get('expires', 0))} unless renewed; wait for it "
                    "(--wait), or if that bake is gone, take the lease over with --force-unlock"
                )
            time.sleep(self.poll_s)
        if (
            current is not None
            and current.get("owner") != self.owner
            and why is not None  # always set once taken
            and why != "free"
        ):
            log = logger.warning if why == "forced" else logger.info
            log(
                "took over the lease of %s from %s (%s)",
                self.url,
                current.get("owner"),
                {"expired": "it had expired", "holder gone": "that process is gone"}.get(
                    why, "--force-unlock; that bake, if it still runs, stops at its next renewal"
                ),
            )
        self._thread = threading.Thread(target=self._renew, name="datakiln-lease", daemon=True)
        self._thread.start()

    def _attempt(self) -> tuple[bool, LeaseRecord | None, str | None]:
        """One try at the lease: (taken, the record found, why it could be taken)."""
        if self._local:
            locked, current = self._try_lock_local_or_force()
            if not locked:
                return False, current, None
            why: str | None = (
                "free" if current is None else self._why_free(current) or "holder gone"
            )
            if current is not None and current.get("host") not in (None, socket.gethostname()):
                # A lock on a shared disk says nothing for sure about another host's bake.
                why = self._why_free(current)
                if why is None:
                    self._drop_local()
                    return False, current, None
            self._write_local()
            return True, current, why
        found = self._objects.read(self._path)
        current = _parse_record(found.data) if found.data is not None else None
        why = self._why_free(current)
        if why is None:
            return False, current, None
        if not self._objects.supported:
            self._fs.pipe_file(self._path, self._record())
            time.sleep(0.05)
            mine = self.read()
            return mine is not None and mine.get("owner") == self.owner, current, why
        data = self._record()
        tag = self._objects.put(self._path, data, expect=found)
        if tag is None:  # another bake changed the record first
            return False, current, None
        self._held = Versioned(data, tag)
        return True, current, why

    def _try_lock_local_or_force(self) -> tuple[bool, LeaseRecord | None]:
        locked, current = self._try_lock_local_fd()
        if locked or not self.force:
            return locked, current
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)  # its holder keeps a lock on a file no one else opens
        locked, _ = self._try_lock_local_fd()
        forced: LeaseRecord = {**(current or LeaseRecord()), "_forced": True}
        return locked, forced

    def _try_lock_local_fd(self) -> tuple[bool, LeaseRecord | None]:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False, self.read()
        try:
            same = os.fstat(fd).st_ino == os.stat(self._path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # released and unlinked between our open and our lock: try again
            os.close(fd)
            return self._try_lock_local_fd()
        self._fd = fd
        _LOCKED.add(self)
        return True, self._fd_record(fd)

    def _drop_local(self) -> None:
        if self._fd is not None:
            _LOCKED.discard(self)
            os.close(self._fd)
            self._fd = None

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            with self._renewing:
                try:
                    if not self._renew_once():
                        self.lost = True
                        logger.error("lost the lease of %s to another bake", self.url)
                        return
                except OSError as err:  # keep trying: a transient store error must not kill it
                    logger.warning("could not renew the lease of %s: %s", self.url, err)

    def _renew_once(self) -> bool:
        if self._local:
            if self._fd is None or (self.read() or {}).get("owner") != self.owner:
                return False
            self._write_local()
            return True
        if self._held is not None:
            data = self._record()
            tag = self._objects.put(self._path, data, expect=self._held)
            if tag is None:
                return False
            self._held = Versioned(data, tag)
            return True
        if (self.read() or {}).get("owner") != self.owner:
            return False
        self._fs.pipe_file(self._path, self._record())
        return True

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """The heartbeat thread, once the lease is held."""
        return (self._thread,) if self._thread is not None else ()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold off renewals: meanwhile the heartbeat thread waits on a lock of its own.

        So it holds nothing a forked child could need, which makes this the moment to fork.
        """
        with self._renewing:
            yield

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._local:
            if self._fd is not None:
                with contextlib.suppress(FileNotFoundError):
                    if os.fstat(self._fd).st_ino == os.stat(self._path).st_ino:
                        os.unlink(self._path)
                self._drop_local()
            return
        if self._held is not None:
            self._objects.delete(self._path, expect=self._held)
            self._held = None
        elif (self.read() or {}).get("owner") == self.owner:
            self._fs.rm_file(self._path)

    def __enter__(self) -> StoreLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_LOCKED: weakref.WeakSet[StoreLease] = weakref.WeakSet()


def _close_in_child() -> None:
    """A forked worker closes its copy of the lock.

    Else it kept the lease alive after a killed bake, until it too had exited. (Closing,
    unlike unlocking, leaves the parent's lock.)
    """
    for lease in list(_LOCKED):
        if lease._fd is not None:
            with contextlib.suppress(OSError):
                os.close(lease._fd)
            lease._fd = None


os.register_at_fork(after_in_child=_close_in_child)
