"""Opening a committed cache as a ``BaseDataset``.

Opening reads the manifest and the arrays' metadata only; memory does not grow with the number
of samples (a few integers per bake shard). Each request reads just the chunks it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr

from datakiln.cache.layout import zarr_store
from datakiln.cache.manifest import read_manifest
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
    ) -> None:
        manifest = dict(manifest or read_manifest(url, storage_options))
        super().__init__(None, split, rngs=rngs)
        self.url = url
        self.manifest = manifest
        self.class_names: list[str] | None = manifest.get("class_names")
        store = zarr_store(url, storage_options, read_only=True)
        self._fields = manifest["fields"]
        self._arrays: dict[str, zarr.Array] = {}
        for name, field in self._fields.items():
            array = zarr.open_array(store, path=field["path"], mode="r")
            expected = (manifest["rows"], *field["shape"])
            if tuple(array.shape) != expected or str(array.dtype) != field["dtype"]:
                raise CacheFormatError(
                    f"{url}: array {name!r} is {array.dtype}{tuple(array.shape)}, the manifest "
                    f"says {field['dtype']}{expected}; the store is damaged, re-bake it"
                )
            self._arrays[name] = array
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

    def rows_of(self, indices: np.ndarray) -> np.ndarray:
        """Array rows holding the samples at dataset ``indices`` (checked, int64)."""
        shard = np.searchsorted(self._end_index, indices, side="right")
        return self._row_start[shard] + (indices - self._first_index[shard])

    def _read_field(self, name: str, rows: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(rows, return_inverse=True)
        data = self._arrays[name].get_orthogonal_selection((unique,))
        return data[inverse]

    def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
        rows = self.rows_of(np.asarray(indices, dtype=np.int64))
        batch: dict[str, Any] = {}
        for name, field in self._fields.items():
            data = self._read_field(name, rows)
            transform = field.get("transform")
            if transform is not None and transform["kind"] == "affine":
                out = data.astype(np.float32)
                out *= np.float32(transform["scale"])
                out += np.float32(transform["offset"])
                data = out
            batch[name] = data
        batch["indices"] = np.asarray(indices, dtype=np.int64)
        return batch


def open_cache(
    url: str,
    *,
    split: str = "train",
    storage_options: Mapping[str, Any] | None = None,
    rngs: Any = None,
) -> CachedDataset:
    """Open the committed cache at ``url`` (any fsspec URL) as a ``CachedDataset``.

    Raises:
        CacheNotFoundError: there is no committed cache at ``url``.
        CacheFormatError: the cache is of another format version or is damaged.
    """
    return CachedDataset(url, storage_options=storage_options, split=split, rngs=rngs)
