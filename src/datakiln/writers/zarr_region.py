"""Zarr v3 arrays of a cache: creating them, and writing one bake shard's rows.

Every dense field is an N-leading array of 1-sample inner chunks grouped by the sharding codec
into shard objects of ``shard_rows`` rows. A bake shard's rows cover whole shard objects, so
concurrent tasks write disjoint objects and need no locks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from datakiln.cache.layout import zarr_store


@dataclass(frozen=True, slots=True)
class FieldLayout:
    """Shape, dtype and chunking of one stored field (``sample_shape`` excludes the N axis)."""

    name: str
    dtype: str
    sample_shape: tuple[int, ...]
    shard_rows: int
    sharded: bool = True  # False: plain chunks of shard_rows rows (small per-row fields)

    def to_dict(self, rows: int) -> dict[str, Any]:
        return {
            "path": self.name,
            "dtype": self.dtype,
            "shape": list(self.sample_shape),
            "rows": rows,
            "chunk_rows": 1 if self.sharded else self.shard_rows,
            "shard_rows": self.shard_rows,
            "codec": "none" if self.sharded else "zstd",
        }


def create_arrays(
    url: str,
    storage_options: Mapping[str, Any] | None,
    fields: list[FieldLayout],
    rows: int,
    attributes: Mapping[str, Any],
) -> None:
    """Create (or replace) the root group and one array per field, all ``rows`` long."""
    group = zarr.open_group(zarr_store(url, storage_options, read_only=False), mode="a")
    group.attrs.update(dict(attributes))
    for field in fields:
        shape = (rows, *field.sample_shape)
        if field.sharded:
            group.create_array(
                field.name,
                shape=shape,
                dtype=field.dtype,
                chunks=(1, *field.sample_shape),
                shards=(field.shard_rows, *field.sample_shape),
                compressors=None,
                fill_value=0,
                overwrite=True,
            )
        else:
            group.create_array(
                field.name,
                shape=shape,
                dtype=field.dtype,
                chunks=(field.shard_rows, *field.sample_shape),
                fill_value=0,
                overwrite=True,
            )


def write_rows(
    url: str, storage_options: Mapping[str, Any] | None, field: str, row_start: int,
    data: np.ndarray,
) -> None:  # fmt: skip
    """Write ``data`` into rows ``[row_start, row_start + len(data))`` of ``field``."""
    store = zarr_store(url, storage_options, read_only=False)
    array = zarr.open_array(store, path=field, mode="r+")
    array[row_start : row_start + len(data)] = data


def object_keys(field: FieldLayout, row_start: int, capacity: int) -> list[str]:
    """Store keys of the chunk/shard objects that rows ``[row_start, +capacity)`` occupy."""
    first = row_start // field.shard_rows
    last = (row_start + capacity - 1) // field.shard_rows
    tail = "/0" * len(field.sample_shape)
    return [f"{field.name}/c/{k}{tail}" for k in range(first, last + 1)]
