"""A direct reader of sharded variable-length string fields (the ``texts`` of text caches).

The field is a plain Zarr v3 array of data type ``string`` whose sharding codec holds one
inner chunk per row, each encoded by ``vlen-utf8`` as ``<u4 count=1><u4 nbytes><utf-8>``. A
batch then costs one cached shard-index lookup and one slice (memory map, local disks) or one
ranged read (object stores, all in one ``cat_ranges`` call) per string: O(batch), whatever the
shard size. zarr-python stays the reference reader (``CachedDataset(fast=False)``).
"""

from __future__ import annotations

import collections
import json
import mmap
import threading
from typing import Any

import numpy as np

from datakiln.cache.layout import MISSING_CHUNK, is_local
from datakiln.cache.shard_reader import ShardedFieldReader, supports_fast_path
from datakiln.errors import CacheFormatError

# A missing inner chunk (the fill value "") has offset 2**64 - 1 in the shard index.
_MISSING = MISSING_CHUNK
# vlen-utf8 header: item count and byte length, little-endian uint32 each.
_HEADER_BYTES = 8


class StringFieldReader(ShardedFieldReader):
    """Reads rows of a sharded string field as Python strings. Thread-safe.

    Args:
        fs, root: the store's filesystem and root path.
        path: the array's path inside the store.
        max_cache_bytes: bound on the cached shard indexes.
    """

    def __init__(self, fs: Any, root: str, path: str, *, max_cache_bytes: int = 64 * 2**20):
        self._fs, self._root, self._path = fs, root, path
        meta = json.loads(fs.cat_file(f"{root}/{path}/zarr.json"))
        if meta.get("data_type") != "string" or not supports_fast_path(
            meta, inner_codec="vlen-utf8"
        ):
            raise CacheFormatError(f"{path}: not the sharded string layout this reader handles")
        self.rows = int(meta["shape"][0])
        self.sample_shape = ()
        self.shard_rows = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
        self._shard_units = self.shard_rows  # one inner chunk per string
        self._local = is_local(fs)
        self._tail = ""
        self._cache: collections.OrderedDict[int, tuple[np.ndarray, Any]] = (
            collections.OrderedDict()
        )
        self._cache_bytes = 0
        self._max_cache_bytes = max_cache_bytes
        self._lock = threading.Lock()

    def _view(self, mapped: mmap.mmap) -> np.ndarray:
        return np.frombuffer(mapped, np.uint8)

    def read(self, rows: np.ndarray) -> list[str]:
        """The strings at ``rows`` (int64, any order, repeats allowed); ``""`` for fill."""
        out = [""] * len(rows)
        shards = rows // self.shard_rows
        inner = rows - shards * self.shard_rows
        keys: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        targets: list[int] = []
        for shard in np.unique(shards).tolist():
            positions = np.flatnonzero(shards == shard)
            index, data = self._entry(shard)
            entries = index[inner[positions]].tolist()
            for pos, (offset, size) in zip(positions.tolist(), entries, strict=True):
                if offset == _MISSING:
                    continue
                if data is not None:
                    out[pos] = self._decode(data[offset : offset + size].tobytes(), rows[pos])
                else:
                    keys.append(self._key(shard))
                    starts.append(offset)
                    ends.append(offset + size)
                    targets.append(pos)
        if keys:
            for pos, chunk in zip(targets, self._fs.cat_ranges(keys, starts, ends), strict=True):
                out[pos] = self._decode(chunk, rows[pos])
        return out

    def _decode(self, chunk: bytes, row: Any) -> str:
        count = int.from_bytes(chunk[:4], "little")
        size = int.from_bytes(chunk[4:_HEADER_BYTES], "little")
        if count != 1 or len(chunk) != _HEADER_BYTES + size:
            raise CacheFormatError(
                f"{self._path}: the chunk of row {int(row)} is not one vlen-utf8 string "
                f"({len(chunk)} bytes, count {count}); run `datakiln verify` on the cache"
            )
        try:
            return chunk[_HEADER_BYTES:].decode("utf-8")
        except UnicodeDecodeError as err:
            raise CacheFormatError(
                f"{self._path}: the string of row {int(row)} is not valid UTF-8 ({err}); run "
                "`datakiln verify` on the cache"
            ) from err
