"""A direct reader of Zarr v3 shard objects for the hot path of random batches.

zarr-python is the reference read path, but it spends about a millisecond of Python per
chunk, which caps random batches at a few hundred samples a second. Our arrays use one
layout only (1-sample inner chunks, or ``(1, C)`` chunks of 2-D token rows; raw ``bytes``
codec; shard index at the end protected by crc32c), so a batch can be served by reading each
shard's index once and copying inner chunks straight into one preallocated output. On local
disks under Linux every shard file of a field is mapped into one address range
(``mapped_region``), so the copy of a whole batch is one ``np.take`` that runs without the
GIL; elsewhere each shard is memory-mapped and copied from row by row. Object stores get one
concurrent ``cat_ranges`` call per batch.

Fields whose inner chunks are compressed (``datakiln.cache.chunk_codecs``: zstd, blosc-lz4,
png, jpeg) are read the same way up to the copy: each requested chunk's bytes are sliced from
the mapped shard (or fetched by ``cat_ranges``) and decoded straight into the output by a
shared thread pool; the codecs release the GIL, so a batch decodes on every core.

Anything that is not exactly that layout makes :func:`supports_fast_path` return False and the
caller uses zarr-python instead. Stores stay plain Zarr v3: any Zarr reader opens them.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import mmap
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from datakiln.cache.chunk_codecs import ChunkCodec
from datakiln.cache.layout import MISSING_CHUNK, is_local
from datakiln.cache.mapped_region import reserve
from datakiln.errors import CacheFormatError

logger = logging.getLogger(__name__)

# A missing inner chunk has offset and length both 2**64 - 1 in the shard index.
_MISSING = np.uint64(MISSING_CHUNK)
_CRC_BYTES = 4


def supports_fast_path(array_meta: Mapping[str, Any], *, inner_codec: str = "bytes") -> bool:
    """Whether ``zarr.json`` of an array describes the layout this module reads.

    ``inner_codec`` is ``"bytes"`` for fixed-size fields (raw, or compressed by one of
    ``chunk_codecs``), ``"vlen-utf8"`` for string fields.
    """
    codecs = array_meta.get("codecs", [])
    if len(codecs) != 1 or codecs[0].get("name") != "sharding_indexed":
        return False
    conf = codecs[0]["configuration"]
    inner = conf.get("codecs", [])
    index = conf.get("index_codecs", [])
    shape = array_meta["shape"]
    return (
        conf.get("index_location", "end") == "end"
        and (
            list(conf["chunk_shape"]) == [1, *shape[1:]]
            or _row_split(shape, conf["chunk_shape"]) > 1
        )
        and (
            ChunkCodec.from_inner(inner) is not None
            if inner_codec == "bytes"
            else [c["name"] for c in inner] == [inner_codec]
        )
        and [c["name"] for c in index] == ["bytes", "crc32c"]
        and index[0].get("configuration", {}).get("endian", "little") == "little"
        and array_meta["chunk_key_encoding"]["name"] == "default"
        and array_meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/") == "/"
    )


def _row_split(shape: list[int], chunk_shape: list[int]) -> int:
    """Inner chunks per row of a 2-D array chunked ``(1, C)``, ``C`` dividing the row length.

    0 for any other chunking.
    """
    if len(shape) != 2 or len(chunk_shape) != 2 or chunk_shape[0] != 1:
        return 0
    cols = int(chunk_shape[1])
    return shape[1] // cols if 0 < cols <= shape[1] and shape[1] % cols == 0 else 0


class ShardedFieldReader:
    """Reads rows of one sharded field into a caller's buffer. Thread-safe.

    Args:
        fs, root: the store's filesystem and root path.
        path: the array's path inside the store.
        max_cache_bytes: bound on the cached shard indexes (and, on local disks, open maps,
            which cost address space but no memory beyond the OS page cache).
    """

    def __init__(self, fs: Any, root: str, path: str, *, max_cache_bytes: int = 64 * 2**20):
        self._fs, self._root, self._path = fs, root, path
        meta = json.loads(fs.cat_file(f"{root}/{path}/zarr.json"))
        if not supports_fast_path(meta):
            raise CacheFormatError(f"{path}: not the sharded layout the fast reader handles")
        self.dtype = np.dtype(meta["data_type"])
        self.rows = int(meta["shape"][0])
        self.sample_shape = tuple(meta["shape"][1:])
        self.shard_rows = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
        self.sample_bytes = int(np.prod(self.sample_shape, dtype=np.int64)) * self.dtype.itemsize
        # A row may be split into `_per_row` inner chunks ("units", e.g. (1, 64) of a token
        # row); the shard index lists units row-major, so unit u of the array is unit
        # `u % _shard_units` of shard `u // _shard_units`, and everything below works on units.
        inner_chunk = meta["codecs"][0]["configuration"]["chunk_shape"]
        self._per_row = max(1, _row_split(meta["shape"], inner_chunk))
        self._shard_units = self.shard_rows * self._per_row
        self._unit_bytes = self.sample_bytes // self._per_row
        self._unit_shape = tuple(inner_chunk[1:])
        self._fill = np.full(self._unit_shape, meta.get("fill_value", 0), self.dtype)
        self.codec = ChunkCodec.from_inner(meta["codecs"][0]["configuration"]["codecs"])
        self._compressed = self.codec is not None and self.codec.compressed
        if self._compressed and self._per_row > 1:
            raise CacheFormatError(f"{path}: compressed rows split into several chunks")
        self._local = is_local(fs)
        self._tail = len(self.sample_shape) * "/0"
        self._cache: collections.OrderedDict[int, tuple[np.ndarray, Any]] = (
            collections.OrderedDict()
        )
        self._cache_bytes = 0
        self._max_cache_bytes = max_cache_bytes
        self._lock = threading.Lock()
        # The batch path keeps shard indexes stacked in one table of ``slots`` rows, so one
        # numpy gather looks up a whole batch; slots are reused round-robin, bounded in bytes.
        n_shards = -(-self.rows // self.shard_rows)
        slots = max(1, min(n_shards, max_cache_bytes // (16 * self._shard_units)))
        self._slot_of = np.full(max(n_shards, 1), -1, dtype=np.int64)
        self._table = np.empty((slots, self._shard_units, 2), dtype=np.uint64)
        self._slot_shard = np.full(slots, -1, dtype=np.int64)
        self._slot_view: list[Any] = [None] * slots
        self._next_slot = 0
        # Local stores: every shard file mapped into one address range, so that a batch is
        # one GIL-free np.take (None where that is unsupported: then one copy per row).
        max_file = self._shard_units * (self._unit_bytes + 16) + _CRC_BYTES
        mappable = self._local and not self._compressed
        self._region = reserve(n_shards, max_file, self._unit_bytes) if mappable else None
        # Region row of each unit already read through the region (-1: not yet, or its chunk
        # is missing): a batch of known rows is then one gather and one take, with none of
        # the index lookups and checks of its first read (8 bytes a unit, made on first use).
        self._unit_map: np.ndarray | None = None

    def forget(self, shard: int) -> None:
        """Drop what is kept of ``shard`` (index, memory maps).

        Its object was deleted from a local directory and may come back with a new inode.
        No read of it may be running.
        """
        with self._lock:
            self._cache.pop(shard, None)
            slot_of = getattr(self, "_slot_of", None)
            if slot_of is not None and shard < len(slot_of) and slot_of[shard] >= 0:
                slot = int(slot_of[shard])
                slot_of[shard] = -1
                self._slot_shard[slot] = -1
                self._slot_view[slot] = None
            unit_map = getattr(self, "_unit_map", None)
            if unit_map is not None:
                unit_map[shard * self._shard_units : (shard + 1) * self._shard_units] = -1
            region = getattr(self, "_region", None)
            if region is not None:
                region.unmap(shard)

    def _lookup(
        self, shards: np.ndarray, inner: np.ndarray, unique: np.ndarray
    ) -> tuple[np.ndarray, dict[int, Any]]:
        """Index entries of ``(shards, inner)`` and the mapped views of ``unique`` shards.

        Loads what is not in the slot table; the entries are copied under the lock, so a
        slot reused by another thread afterwards cannot change them.
        """
        absent = unique[self._slot_of[unique] < 0]
        loaded = {int(shard): self._load(int(shard)) for shard in absent}
        with self._lock:
            for shard, (index, view) in loaded.items():
                if self._slot_of[shard] >= 0:
                    continue
                slot = self._next_slot
                self._next_slot = (slot + 1) % len(self._slot_shard)
                old = self._slot_shard[slot]
                if old >= 0:
                    self._slot_of[old] = -1
                self._table[slot] = index
                self._slot_shard[slot] = shard
                self._slot_view[slot] = view
                self._slot_of[shard] = slot
            slots = self._slot_of[shards]
            if (slots < 0).any():  # evicted by another thread in between: read again
                return self._lookup_grouped(shards, inner, unique)
            entries = self._table[slots, inner]
            views = {int(s): self._slot_view[self._slot_of[s]] for s in unique.tolist()}
        return entries, views

    def _take(
        self,
        rows: np.ndarray,
        shards: np.ndarray,
        offsets: np.ndarray,
        present: np.ndarray,
        flat: np.ndarray,
        unique: np.ndarray,
    ) -> bool:
        """Copy the ``present`` units into ``flat`` with one take from the mapped region.

        Returns False, having copied nothing, when a shard cannot be mapped (the region is
        full, or the system refuses): the caller then copies row by row.
        """
        region = self._region
        assert region is not None
        try:
            for shard in unique[region.lengths(unique) == 0].tolist():
                region.map(shard, self._key(shard))
        except OSError as err:
            logger.debug("%s: copying row by row: %s", self._path, err)
            return False
        where = shards[present]
        starts = offsets[present].astype(np.int64)
        # the region is readable only inside mapped files: check before touching it
        short = starts + self._unit_bytes > region.lengths(where).astype(np.int64)
        if short.any():
            bad = int(where[np.argmax(short)])
            raise CacheFormatError(
                f"{self._path}: shard object {bad} is shorter than its index says; "
                "run `datakiln verify` on the cache"
            )
        units = where * region.units_per_slot + starts // self._unit_bytes
        if self._unit_map is None:
            self._unit_map = np.full(len(self._slot_of) * self._shard_units, -1, np.int64)
        self._unit_map[rows[present]] = units
        if len(present) == len(flat):
            np.take(region.units, units, axis=0, out=flat, mode="clip")
        else:
            flat[present] = np.take(region.units, units, axis=0, mode="clip")
        return True

    def _lookup_grouped(
        self, shards: np.ndarray, inner: np.ndarray, unique: np.ndarray
    ) -> tuple[np.ndarray, dict[int, Any]]:
        """The same as ``_lookup`` one shard at a time, for batches wider than the table."""
        entries = np.empty((len(shards), 2), dtype=np.uint64)
        views = {}
        for shard in unique.tolist():
            index, view = self._entry(shard)
            where = shards == shard
            entries[where] = index[inner[where]]
            views[shard] = view
        return entries, views

    def _key(self, shard: int) -> str:
        return f"{self._root}/{self.relative_key(shard)}"

    def relative_key(self, shard: int) -> str:
        """Path of shard object ``shard`` inside the store."""
        return f"{self._path}/c/{shard}{self._tail}"

    def _load(self, shard: int) -> tuple[np.ndarray, Any]:
        """The (offset, nbytes) index of a shard, and its bytes as a mapped array.

        The bytes (local stores only) are ``(n, sample_bytes)``.
        """
        nrows = self._shard_units  # edge shards keep a full-size index
        index_bytes = 16 * nrows + _CRC_BYTES
        key = self._key(shard)
        view: Any = None
        try:
            if self._local:
                with open(key, "rb") as f:
                    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                raw = mapped[len(mapped) - index_bytes : len(mapped) - _CRC_BYTES]
                view = self._view(mapped)
            else:
                raw = self._fs.cat_file(key, start=-index_bytes)[:-_CRC_BYTES]
        except FileNotFoundError:  # no object: every chunk of the shard is fill
            index = np.full((nrows, 2), _MISSING, dtype=np.uint64)
            return index, None
        index = np.frombuffer(raw, dtype="<u8").reshape(nrows, 2)
        return index, view

    def _view(self, mapped: mmap.mmap) -> np.ndarray:
        """A mapped shard object as ``(n, unit_bytes)`` rows of inner chunks.

        Compressed fields get its bytes, as their chunks have no fixed size.
        """
        if self._compressed:
            return np.frombuffer(mapped, np.uint8)
        usable = (len(mapped) // self._unit_bytes) * self._unit_bytes
        return np.frombuffer(mapped, np.uint8, usable).reshape(-1, self._unit_bytes)

    def _entry(self, shard: int) -> tuple[np.ndarray, Any]:
        with self._lock:
            hit = self._cache.get(shard)
            if hit is not None:
                self._cache.move_to_end(shard)
                return hit
        loaded = self._load(shard)
        with self._lock:
            if shard not in self._cache:
                self._cache[shard] = loaded
                self._cache_bytes += loaded[0].nbytes
                while self._cache_bytes > self._max_cache_bytes and len(self._cache) > 1:
                    _, (old_index, _old_view) = self._cache.popitem(last=False)
                    self._cache_bytes -= old_index.nbytes
            return self._cache[shard]

    def read_into(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Copy rows ``rows`` (int64, any order, repeats allowed) into ``out[: len(rows)]``.

        One vectorised index lookup for the batch, then one copy per row straight from the
        mapped shard (or one ``cat_ranges`` call for the rows of remote shards).
        """
        if len(rows) == 0:
            return
        if self._per_row > 1:
            per_row = self._per_row
            rows = (rows[:, None] * per_row + np.arange(per_row)).reshape(-1)
            out = out.reshape(len(rows), *self._unit_shape)
        self._read_units(rows, out)

    def _read_units(self, rows: np.ndarray, out: np.ndarray) -> None:
        """``read_into`` over inner chunks: ``rows`` are unit numbers, ``out`` is per unit."""
        if self._unit_map is not None:
            units = self._unit_map[rows]
            if units.min() >= 0:  # every unit read before, through the region
                assert self._region is not None
                flat = out.reshape(len(out), -1).view(np.uint8)
                np.take(self._region.units, units, axis=0, out=flat, mode="clip")
                return
        shards = rows // self._shard_units
        inner = rows - shards * self._shard_units
        unique = np.unique(shards)
        if len(unique) <= len(self._slot_shard):
            entries, views = self._lookup(shards, inner, unique)
        else:
            entries, views = self._lookup_grouped(shards, inner, unique)
        offsets, nbytes = entries[:, 0], entries[:, 1]
        missing = offsets == _MISSING
        if self._compressed:
            if missing.any():
                out[np.flatnonzero(missing)] = self._fill
            self._decode_units(rows, shards, offsets, nbytes, np.flatnonzero(~missing), views, out)
            return
        wrong = ~missing & (nbytes != self._unit_bytes)
        if wrong.any():
            bad = int(rows[np.argmax(wrong)]) // self._per_row
            raise CacheFormatError(
                f"{self._path}: a chunk of row {bad} does not hold {self._unit_bytes} bytes; "
                "run `datakiln verify` on the cache"
            )
        flat = out.reshape(len(out), -1).view(np.uint8)
        if missing.any():
            out[np.flatnonzero(missing)] = self._fill
        present = np.flatnonzero(~missing)
        if not len(present):
            return
        aligned = not (offsets[present] % self._unit_bytes).any()
        if (
            self._region is not None
            and aligned
            and self._take(rows, shards, offsets, present, flat, unique)
        ):
            return
        chunk_of = (offsets // np.uint64(self._unit_bytes)).astype(np.intp).tolist()
        shard_of = shards.tolist()
        remote: list[int] = []
        # One slice copy per row: with a few rows per shard in a random batch, this beats a
        # fancy-index gather per shard (which copies twice and costs more per call).
        for pos in present.tolist():
            view = views[shard_of[pos]]
            if view is not None and aligned:
                flat[pos] = view[chunk_of[pos]]
            else:
                remote.append(pos)
        if remote:
            keys = [self._key(int(shards[p])) for p in remote]
            starts_remote = [int(offsets[p]) for p in remote]
            ends_remote = [start + self._unit_bytes for start in starts_remote]
            fetched = self._fs.cat_ranges(keys, starts_remote, ends_remote)
            for pos, data in zip(remote, fetched, strict=True):
                if len(data) != self._unit_bytes:
                    row = int(rows[pos]) // self._per_row
                    raise CacheFormatError(f"{self._path}: short read of row {row}")
                flat[pos] = np.frombuffer(data, np.uint8)

    def _decode_units(
        self,
        rows: np.ndarray,
        shards: np.ndarray,
        offsets: np.ndarray,
        nbytes: np.ndarray,
        present: np.ndarray,
        views: dict[int, Any],
        out: np.ndarray,
    ) -> None:
        """Decode the ``present`` compressed units into ``out``, in the shared decode pool."""
        if not len(present):
            return
        index_bytes = 16 * self._shard_units + _CRC_BYTES
        data: list[Any] = [None] * len(present)
        remote: list[int] = []
        for k, pos in enumerate(present.tolist()):
            view = views.get(int(shards[pos]))
            start, size = int(offsets[pos]), int(nbytes[pos])
            if view is None:
                remote.append(k)
            elif start + size > len(view) - index_bytes:
                raise CacheFormatError(
                    f"{self._path}: shard object {int(shards[pos])} is shorter than its index "
                    "says; run `datakiln verify` on the cache"
                )
            else:
                data[k] = view[start : start + size]
        if remote:
            keys = [self._key(int(shards[present[k]])) for k in remote]
            starts = [int(offsets[present[k]]) for k in remote]
            ends = [s + int(nbytes[present[k]]) for s, k in zip(starts, remote, strict=True)]
            for k, fetched in zip(remote, self._fs.cat_ranges(keys, starts, ends), strict=True):
                if isinstance(fetched, BaseException):  # cat_ranges returns errors in place
                    raise fetched
                data[k] = fetched
        codec = self.codec
        assert codec is not None
        positions = present.tolist()

        def decode(part: range) -> None:
            for k in part:
                try:
                    codec.decode_into(data[k], out[positions[k]])
                except ValueError as err:
                    row = int(rows[positions[k]])
                    raise CacheFormatError(
                        f"{self._path}: row {row}: {err}; run `datakiln verify` on the cache"
                    ) from err

        parts = _split(len(positions), _DECODE_THREADS)
        if len(parts) == 1:
            decode(parts[0])
        else:
            list(_decode_pool().map(decode, parts))  # re-raises a part's error here


# Threads that decode compressed fields, shared by every reader of the process.
_DECODE_THREADS = max(1, os.cpu_count() or 1)
_POOL: list[ThreadPoolExecutor] = []
_POOL_LOCK = threading.Lock()


def _decode_pool() -> ThreadPoolExecutor:
    with _POOL_LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(_DECODE_THREADS, thread_name_prefix="datakiln-decode"))
        return _POOL[0]


def _split(n: int, parts: int) -> list[range]:
    """``range(n)`` cut into at most ``parts`` contiguous pieces of at least 8 items."""
    count = max(1, min(parts, n // 8))
    bounds = np.linspace(0, n, count + 1).astype(int).tolist()
    return [range(a, b) for a, b in itertools.pairwise(bounds)]
