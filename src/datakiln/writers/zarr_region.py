"""Zarr v3 arrays of a cache: creating them, and writing one bake shard's rows.

Every dense field is an N-leading array of 1-sample inner chunks grouped by the sharding codec
into shard objects of ``shard_rows`` rows. A bake shard's rows cover whole shard objects, so
concurrent tasks write disjoint objects and need no locks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import zarr

from datakiln.cache.chunk_codecs import ChunkCodec
from datakiln.cache.fingerprint import content_hash
from datakiln.cache.layout import store_fs, zarr_store
from datakiln.writers.shard_encoder import (
    encode_compressed_shard,
    encode_shard,
    encode_string_shard,
)

# FieldLayout.dtype of variable-length UTF-8 strings (Zarr v3 data type "string").
STRING_DTYPE = "string"


@dataclass(frozen=True, slots=True)
class FieldLayout:
    """Shape, dtype and chunking of one stored field (``sample_shape`` excludes the N axis).

    ``dtype`` is a numpy dtype name, or ``"string"`` for variable-length UTF-8 strings (Zarr
    v3's ``string`` data type with the ``vlen-utf8`` codec), which must be ``sharded``: each
    string is its own inner chunk, so a reader fetches exactly the strings it needs.
    ``codec`` compresses each inner chunk of a sharded field on its own
    (``datakiln.cache.chunk_codecs``; ``quality`` is jpeg's).
    """

    name: str
    path: str  # inside the store, under the generation folder
    dtype: str
    sample_shape: tuple[int, ...]
    shard_rows: int
    sharded: bool = True  # False: plain chunks of shard_rows rows (small per-row fields)
    # Sharded 1-D samples only: inner chunks of this many elements instead of whole rows, so
    # that a row's trailing fill (token padding) is stored as no chunk at all.
    chunk_cols: int | None = None
    codec: str = "none"
    quality: int = 90

    def __post_init__(self) -> None:
        if self.codec != "none":
            why = self.chunk_codec.check_layout(self.dtype, self.sample_shape)
            if why or not self.sharded or self.chunk_cols is not None:
                raise ValueError(
                    f"field {self.name!r}: codec {self.codec!r} needs a sharded field of whole "
                    f"rows{'; ' + why if why else ''}"
                )
        if self.chunk_cols is not None and (
            not self.sharded
            or len(self.sample_shape) != 1
            or self.chunk_cols < 1
            or self.sample_shape[0] % self.chunk_cols
        ):
            raise ValueError(
                f"field {self.name!r}: chunk_cols={self.chunk_cols} needs a sharded field of "
                f"1-D samples whose length it divides, not {self.sample_shape}"
            )

    @property
    def inner_chunk(self) -> tuple[int, ...]:
        """The inner chunk shape (the chunk shape when the field is not sharded)."""
        if not self.sharded:
            return (self.shard_rows, *self.sample_shape)
        return (1, self.chunk_cols) if self.chunk_cols else (1, *self.sample_shape)

    @property
    def chunk_codec(self) -> ChunkCodec:
        return ChunkCodec(self.codec, self.quality)

    @property
    def chunks_per_row(self) -> int:
        """Inner chunks a row is split into (1 unless ``chunk_cols`` is set)."""
        return self.sample_shape[0] // self.chunk_cols if self.chunk_cols else 1

    def to_task(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "dtype": self.dtype,
            "sample_shape": list(self.sample_shape),
            "shard_rows": self.shard_rows,
            "sharded": self.sharded,
            "chunk_cols": self.chunk_cols,
            "codec": self.codec,
            "quality": self.quality,
        }

    @classmethod
    def from_task(cls, data: Mapping[str, Any]) -> FieldLayout:
        return cls(
            name=data["name"],
            path=data["path"],
            dtype=data["dtype"],
            sample_shape=tuple(data["sample_shape"]),
            shard_rows=data["shard_rows"],
            sharded=data["sharded"],
            chunk_cols=data.get("chunk_cols"),
            codec=data.get("codec", "none"),
            quality=data.get("quality", 90),
        )

    def to_dict(self, rows: int) -> dict[str, Any]:
        if not self.sharded:
            codec = "zstd"
        else:
            codec = "vlen-utf8" if self.dtype == STRING_DTYPE else self.codec
        quality = {"quality": self.quality} if codec == "jpeg" else {}
        return {
            "path": self.path,
            "dtype": self.dtype,
            "shape": list(self.sample_shape),
            "rows": rows,
            "chunk_rows": 1 if self.sharded else self.shard_rows,
            "chunk_shape": list(self.inner_chunk[1:]),
            "shard_rows": self.shard_rows,
            "codec": codec,
            **quality,
        }


def dtype_name(array: zarr.Array[Any]) -> str:
    """The FieldLayout dtype of a Zarr array: ``"string"`` for variable-length strings."""
    return STRING_DTYPE if array.dtype.kind in "TOU" else str(array.dtype)


def prepare_arrays(
    url: str,
    storage_options: Mapping[str, Any] | None,
    fields: list[FieldLayout],
    rows: int,
    attributes: Mapping[str, Any],
) -> None:
    """Make every field an array of at least ``rows`` rows, keeping what is already written.

    An existing array of the same dtype, sample shape, chunking and codec is grown (never
    shrunk or rewritten), so appending shards leaves committed rows untouched; any other is
    replaced.
    """
    store = zarr_store(url, storage_options, read_only=False)
    zarr.open_group(store, mode="a")  # the root group, so the store is one Zarr hierarchy
    for field in fields:
        parent, _, name = field.path.rpartition("/")
        group = zarr.open_group(store, path=parent, mode="a")
        group.attrs.update(dict(attributes))
        chunks = field.inner_chunk
        shards = (field.shard_rows, *field.sample_shape) if field.sharded else None
        serializer, compressors = field.chunk_codec.zarr_codecs()
        try:
            existing = zarr.open_array(store, path=field.path, mode="r+")
        except (FileNotFoundError, KeyError, ValueError, zarr.errors.BaseZarrError):
            existing = None
        if (
            existing is not None
            and dtype_name(existing) == field.dtype
            and tuple(existing.shape[1:]) == field.sample_shape
            and tuple(existing.chunks) == chunks
            and (
                existing.shards is None
                if shards is None
                else existing.shards is not None and tuple(existing.shards) == shards
            )
            and (
                shards is None
                or field.dtype == STRING_DTYPE
                or _inner_codec(existing) == field.chunk_codec
            )
        ):
            if existing.shape[0] < rows:
                existing.resize((rows, *field.sample_shape))
            continue
        strings = field.dtype == STRING_DTYPE
        group.create_array(
            name,
            shape=(rows, *field.sample_shape),
            dtype=str if strings else field.dtype,
            chunks=chunks,
            shards=shards,
            serializer=serializer,
            compressors=compressors if field.sharded else "auto",
            fill_value="" if strings else 0,
            overwrite=True,
        )


def _inner_codec(array: zarr.Array[Any]) -> ChunkCodec | None:
    """The codec of a sharded array's inner chunks (None: not one of ours)."""
    # Zarr v3 metadata: "codecs" is a list of {"name", "configuration"} objects
    codecs = cast(list[dict[str, Any]], array.metadata.to_dict().get("codecs") or [{}])
    return ChunkCodec.from_inner(codecs[0].get("configuration", {}).get("codecs", []))


def write_field(
    url: str,
    storage_options: Mapping[str, Any] | None,
    field: FieldLayout,
    row_start: int,
    data: np.ndarray | Sequence[str],
) -> dict[str, str | None]:
    """Write rows ``[row_start, row_start + len(data))`` of ``field``; return content hashes.

    Sharded fields are encoded by :func:`encode_shard` (:func:`encode_string_shard` for
    strings, given as a sequence of ``str``) and put one object each (hashed as written);
    other fields go through zarr-python and are hashed as read back. A ``None`` hash means no
    object: every row of it is fill.
    """
    keys = object_keys(field, row_start, len(data))
    fs, root = store_fs(url, storage_options)
    sums: dict[str, str | None] = {}
    if not field.sharded:
        write_rows(url, storage_options, field.path, row_start, data)
        for key in keys:
            try:
                sums[key] = content_hash(fs.cat_file(f"{root}/{key}"))
            except FileNotFoundError:
                sums[key] = None
        return sums
    per_row = field.chunks_per_row
    for k, key in enumerate(keys):
        rows = data[k * field.shard_rows : (k + 1) * field.shard_rows]
        if field.dtype == STRING_DTYPE:
            # string fields are given as a sequence of str (see the docstring)
            encoded = encode_string_shard(cast(Sequence[str], rows), field.shard_rows)
        elif field.codec != "none":
            encoded = encode_compressed_shard(
                np.asarray(rows), field.shard_rows, field.chunk_codec, threads=_ENCODE_THREADS
            )
        else:  # a row of `per_row` inner chunks is that many consecutive units of the index
            units = np.asarray(rows).reshape(len(rows) * per_row, -1)
            encoded = encode_shard(units, field.shard_rows * per_row)
        path = f"{root}/{key}"
        if encoded is None:
            if fs.exists(path):
                fs.rm_file(path)
            sums[key] = None
        elif len(encoded) < _HASH_BESIDE_BYTES:
            fs.pipe_file(path, encoded)
            sums[key] = content_hash(encoded)
        else:  # hashing and writing both release the GIL: do them side by side
            with ThreadPoolExecutor(1) as hasher:
                digest = hasher.submit(content_hash, encoded)
                fs.pipe_file(path, encoded)
                sums[key] = digest.result()
    return sums


# Objects at least this large are hashed in a second thread while they are written.
_HASH_BESIDE_BYTES = 2**20
# Threads that compress the rows of one shard object (the codecs release the GIL).
_ENCODE_THREADS = 2


def write_rows(
    url: str,
    storage_options: Mapping[str, Any] | None,
    field: str,
    row_start: int,
    data: np.ndarray | Sequence[str],
) -> None:
    """Write ``data`` into rows ``[row_start, row_start + len(data))`` of ``field``."""
    store = zarr_store(url, storage_options, read_only=False)
    array = zarr.open_array(store, path=field, mode="r+")
    array[row_start : row_start + len(data)] = data


def object_keys(field: FieldLayout, row_start: int, capacity: int) -> list[str]:
    """Store keys of the chunk/shard objects that rows ``[row_start, +capacity)`` occupy."""
    first = row_start // field.shard_rows
    last = (row_start + capacity - 1) // field.shard_rows
    tail = "/0" * len(field.sample_shape)
    return [f"{field.path}/c/{k}{tail}" for k in range(first, last + 1)]
