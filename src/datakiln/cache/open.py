"""Opening a committed cache as a ``BaseDataset``.

Opening reads the manifest and the arrays' metadata only; memory does not grow with the number
of samples (a few integers per bake shard). Each request reads just the chunks it needs.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr

from datakiln.cache.layout import store_fs, zarr_store
from datakiln.cache.manifest import read_manifest, read_parquet
from datakiln.cache.shard_reader import ShardedFieldReader
from datakiln.datasets.base import BaseDataset
from datakiln.errors import CacheFormatError


class CachedDataset(BaseDataset):
    """A baked cache, served on demand.

    Batches are dicts as in the seed guide: ``images`` float32 (B, H, W, C) in [0, 1]
    (or [-1, 1] when the spec had ``normalize = false``), ``labels`` int32 (B,) when the cache
    has labels, and ``indices`` int64 (B,). ``read_batch`` is thread-safe.

    Dataset index ``i`` counts baked samples in input order; rejected inputs leave no gaps.
    """

    def __init__(
        self,
        url: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        split: str = "train",
        rngs: Any = None,
        manifest: Mapping[str, Any] | None = None,
        fast: bool = True,
        max_cache_bytes: int = 64 * 2**20,
    ) -> None:
        manifest = dict(manifest or read_manifest(url, storage_options))
        super().__init__(None, split, rngs=rngs)
        self.url = url
        self.manifest = manifest
        self._storage_options = storage_options
        self.class_names: list[str] | None = manifest.get("class_names")
        store = zarr_store(url, storage_options, read_only=True)
        self._fields = manifest["fields"]
        self._arrays: dict[str, zarr.Array] = {}
        for name, field in self._fields.items():
            array = zarr.open_array(store, path=field["path"], mode="r")
            # Arrays only grow (a later version may append rows), so more rows is fine.
            expected = (manifest["rows"], *field["shape"])
            if (
                array.shape[0] < expected[0]
                or tuple(array.shape[1:]) != expected[1:]
                or str(array.dtype) != field["dtype"]
            ):
                raise CacheFormatError(
                    f"{url}: array {name!r} is {array.dtype}{tuple(array.shape)}, the manifest "
                    f"says {field['dtype']}{expected}; run `datakiln verify` and re-bake"
                )
            self._arrays[name] = array
        # Hot path: sharded fields are read straight from their shard objects, small
        # per-row fields through a byte-bounded cache of decoded chunks; zarr-python
        # (fast=False) is the reference both are tested against.
        self._scratch = threading.local()
        self._sharded: dict[str, ShardedFieldReader] = {}
        self._chunked: dict[str, _ChunkCache] = {}
        if fast:
            fs, root = store_fs(url, storage_options)
            for name, field in self._fields.items():
                if field.get("chunk_rows") == 1:
                    self._sharded[name] = ShardedFieldReader(
                        fs, root, field["path"], max_cache_bytes=max_cache_bytes
                    )
                else:
                    self._chunked[name] = _ChunkCache(self._arrays[name], max_cache_bytes)
        shards = manifest["shards"]
        counts = np.array([s["rows"] for s in shards], dtype=np.int64)
        self._row_start = np.array([s["row_start"] for s in shards], dtype=np.int64)
        self._first_index = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self._end_index = np.cumsum(counts)
        self._length = int(counts.sum())

    def __len__(self) -> int:
        return self._length

    def __repr__(self) -> str:
        return f"CachedDataset({self.url!r}, {self._length} samples, fields={list(self._fields)})"

    def metadata(self) -> Any:
        """Per-sample metadata (source URI, content hash, original size, …) in index order.

        Reads every live shard's Parquet part: a pyarrow Table with one row per sample.
        """

        import pyarrow as pa

        parts = [read_parquet(self.url, s["meta"], self._storage_options)
                 for s in self.manifest["shards"]]  # fmt: skip
        return pa.concat_tables(parts)

    def rows_of(self, indices: np.ndarray) -> np.ndarray:
        """Array rows holding the samples at dataset ``indices`` (checked, int64)."""
        shard = np.searchsorted(self._end_index, indices, side="right")
        return self._row_start[shard] + (indices - self._first_index[shard])

    def _read_field(self, name: str, rows: np.ndarray) -> np.ndarray:
        if name in self._sharded:
            reader = self._sharded[name]
            out = self._scratch_buffer(name, (len(rows), *reader.sample_shape), reader.dtype)
            reader.read_into(rows, out)
            return out
        if name in self._chunked:
            return self._chunked[name].take(rows)
        unique, inverse = np.unique(rows, return_inverse=True)
        data = self._arrays[name].get_orthogonal_selection((unique,))
        return data[inverse]

    def _scratch_buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A per-thread buffer for stored bytes, reused across batches.

        Fresh multi-megabyte arrays per batch cost page faults on every call; the stored bytes
        are converted into a new output right away, so reusing their buffer is safe. Fields
        without a read-time transform get a fresh array, as the caller keeps it.
        """
        if self._fields[name].get("transform") is None:
            return np.empty(shape, dtype)
        buffers = self._scratch.__dict__.setdefault("buffers", {})
        size = int(np.prod(shape, dtype=np.int64))
        buffer = buffers.get(name)
        if buffer is None or buffer.size < size:
            buffer = buffers[name] = np.empty(size, dtype)
        return buffer[:size].reshape(shape)

    def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
        rows = self.rows_of(np.asarray(indices, dtype=np.int64))
        batch: dict[str, Any] = {}
        for name, field in self._fields.items():
            data = self._read_field(name, rows)
            transform = field.get("transform")
            if transform is not None and transform["kind"] == "affine":
                # one pass from the stored dtype into float32, then the offset in place
                out = np.multiply(data, np.float32(transform["scale"]), dtype=np.float32)
                if transform["offset"]:
                    out += np.float32(transform["offset"])
                data = out
            batch[name] = data
        batch["indices"] = np.asarray(indices, dtype=np.int64)
        return batch


class _ChunkCache:
    """Whole chunks of a small per-row field, decoded once and kept up to a byte bound."""

    def __init__(self, array: zarr.Array, max_cache_bytes: int) -> None:
        self._array = array
        self._chunk_rows = int(array.chunks[0])
        self._max_bytes = max_cache_bytes
        self._chunks: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def _chunk(self, k: int) -> np.ndarray:
        with self._lock:
            if k in self._chunks:
                self._chunks.move_to_end(k)
                return self._chunks[k]
        data = self._array[k * self._chunk_rows : (k + 1) * self._chunk_rows]
        with self._lock:
            self._chunks[k] = data
            self._bytes += data.nbytes
            while self._bytes > self._max_bytes and len(self._chunks) > 1:
                self._bytes -= self._chunks.popitem(last=False)[1].nbytes
        return data

    def take(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self._array.shape[1:]), self._array.dtype)
        chunk_of = rows // self._chunk_rows
        for k in np.unique(chunk_of).tolist():
            where = chunk_of == k
            out[where] = self._chunk(k)[rows[where] - k * self._chunk_rows]
        return out


def open_cache(
    url: str,
    *,
    split: str = "train",
    storage_options: Mapping[str, Any] | None = None,
    rngs: Any = None,
) -> BaseDataset:
    """Open the committed cache at ``url`` (any fsspec URL) as a dataset.

    ``split`` names the split the dataset serves; a TFDS-style slice such as
    ``"train[:80%]"`` or ``"train[80%:]"`` returns that O(1) index subset of the cache.

    Raises:
        CacheNotFoundError: there is no committed cache at ``url``.
        CacheFormatError: the cache is of another format version or is damaged.
        SpecError: a malformed split string.
    """
    name = split.split("[", 1)[0]
    dataset = CachedDataset(url, storage_options=storage_options, split=name, rngs=rngs)
    if "[" not in split:
        return dataset
    from datakiln.datasets.splits import split_dataset

    return split_dataset(dataset, split)
