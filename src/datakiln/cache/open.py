"""Opening a committed cache as a ``BaseDataset``.

Opening reads the manifest and the arrays' metadata only; memory does not grow with the number
of samples (a few integers per bake shard). Each request reads just the chunks it needs.
"""

from __future__ import annotations

import collections
import contextlib
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import numpy as np
import zarr
from numpy.typing import DTypeLike, NDArray

from datakiln.cache.layout import store_fs, zarr_store
from datakiln.cache.local_dir import LocalDir, lazy_fields, mirror_cache
from datakiln.cache.manifest import read_manifest, read_parquet
from datakiln.cache.pins import pin_version
from datakiln.cache.shard_reader import ShardedFieldReader
from datakiln.cache.string_reader import StringFieldReader
from datakiln.datasets.base import BaseDataset
from datakiln.errors import CacheFormatError, SpecError

# Field dtype of variable-length UTF-8 strings (Zarr v3 data type "string"); read as lists.
STRING_DTYPE = "string"


def _dtype_name(array: zarr.Array[Any]) -> str:
    return STRING_DTYPE if array.dtype.kind in "TOU" else str(array.dtype)


class CachedDataset(BaseDataset):
    """A baked cache, served on demand.

    Batches are dicts as in the seed guide, one entry per stored field (under its field name,
    after the field's read-time transform) plus ``indices`` int64 (B,):

    * images: ``images`` float32 (B, H, W, C) in [0, 1] (or [-1, 1] when the spec had
      ``normalize = false``), ``labels`` int32 (B,) when the cache has labels;
    * text: ``text_tokens`` int32 (B, max_length), ``text_lengths`` int32 (B,), ``texts``
      (a list of B strings; ``text`` in a sample);
    * audio: ``audio`` float32 (B, samples), ``mel`` float32 (B, n_mels, frames), and the
      constants ``sample_rate`` int64 (B,) and ``duration`` float32 (B,).

    ``read_batch`` is thread-safe. Dataset index ``i`` counts baked samples in input order;
    rejected inputs leave no gaps.
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
        local_dir: str | None = None,
        local_limit: int | None = None,
        local_window: int | None = None,
        dtype: str | Mapping[str, str] | None = None,
    ) -> None:
        manifest = dict(manifest or read_manifest(url, storage_options))
        pin_version(url, storage_options, manifest)  # gc keeps this version for a while
        super().__init__(None, split, rngs=rngs)
        self.url = url
        self.manifest = manifest
        self._storage_options = storage_options
        self.class_names: list[str] | None = manifest.get("class_names")
        self._fields = manifest["fields"]
        self._raw = _raw_fields(dtype, self._fields, url)
        # A remote cache with a local directory is read from its local mirror, whose shard
        # objects are pinned (fetched if need be) around every read.
        self.local: LocalDir | None = None
        self.local_window = 0
        self._object_keys: dict[str, list[str | None]] = {}  # objects_of's lookup, per field
        self._caller_pins = threading.local()  # see objects_pinned
        data_url, data_options = url, storage_options
        if local_dir is not None:
            if local_limit is None:
                raise SpecError("local_dir needs local_limit, the directory's bound in bytes")
            self.local = mirror_cache(
                *store_fs(url, storage_options), manifest, local_dir, limit=local_limit
            )
            self.local_window = _check_window(self.local, manifest, local_limit, local_window)
            data_url, data_options = self.local.root, None
        store = zarr_store(data_url, data_options, read_only=True)
        self._arrays: dict[str, zarr.Array[Any]] = {}
        for name, field in self._fields.items():
            array = zarr.open_array(store, path=field["path"], mode="r")
            # Arrays only grow (a later version may append rows), so more rows is fine.
            expected = (manifest["rows"], *field["shape"])
            if (
                array.shape[0] < expected[0]
                or tuple(array.shape[1:]) != expected[1:]
                or _dtype_name(array) != field["dtype"]
            ):
                raise CacheFormatError(
                    f"{url}: array {name!r} is {_dtype_name(array)}{tuple(array.shape)}, the "
                    "manifest "
                    f"says {field['dtype']}{expected}; run `datakiln verify` and re-bake"
                )
            self._arrays[name] = array
        # Hot path: sharded fields are read straight from their shard objects, small
        # per-row fields through a byte-bounded cache of decoded chunks; zarr-python
        # (fast=False) is the reference both are tested against.
        self._scratch = threading.local()
        self._outputs = _OutputPool()
        self._sharded: dict[str, ShardedFieldReader] = {}
        self._strings: dict[str, StringFieldReader] = {}
        self._chunked: dict[str, _ChunkCache] = {}
        if fast:
            fs, root = store_fs(data_url, data_options)
            for name, field in self._fields.items():
                if field["dtype"] == STRING_DTYPE:
                    self._strings[name] = StringFieldReader(
                        fs, root, field["path"], max_cache_bytes=max_cache_bytes
                    )
                elif field.get("chunk_rows") == 1:
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
        # Per-sample constants of the cache (audio: sample_rate, duration): name -> (value, dtype)
        self._constants = {
            name: (entry["value"], np.dtype(entry["dtype"]))
            for name, entry in (manifest.get("constants") or {}).items()
        }
        if self.local is not None:
            self.local.on_evict(self._forget)

    def _lazy_readers(self) -> dict[str, ShardedFieldReader]:
        return {**self._sharded, **self._strings}

    def _forget(self, rel: str) -> None:
        path, _, rest = rel.rpartition("/c/")
        for reader in self._lazy_readers().values():
            if reader.relative_key(0).rpartition("/c/")[0] == path:
                reader.forget(int(rest.split("/", 1)[0]))

    def objects_of(self, indices: np.ndarray) -> list[str]:
        """Store paths of the shard objects that reading ``indices`` touches.

        Only caches opened with a ``local_dir`` have them; empty otherwise.
        """
        if self.local is None:
            return []
        rows = self.rows_of(np.asarray(indices, dtype=np.int64))
        keys = []
        for name, reader in self._lazy_readers().items():
            table = self._object_keys.get(name)
            if table is None:  # per shard: its object's key, None for an all-fill shard
                local = self.local
                shards = -(-reader.rows // reader.shard_rows)
                every = [reader.relative_key(s) for s in range(shards)]
                table = self._object_keys[name] = [k if local.has(k) else None for k in every]
            for shard in np.unique(rows // reader.shard_rows).tolist():
                key = table[shard]
                if key is not None:
                    keys.append(key)
        return keys

    def object_bytes(self, keys: list[str]) -> int:
        assert self.local is not None
        return sum(self.local.size(key) for key in keys)

    @contextlib.contextmanager
    def objects_pinned(self) -> Iterator[None]:
        """Reads in this thread skip pinning while this context is open.

        The caller already holds the pins of every object they read (a ``Loader``'s
        fetch-ahead pins each batch's objects until read).
        """
        self._caller_pins.held = True
        try:
            yield
        finally:
            self._caller_pins.held = False

    def pin_objects(self, keys: list[str]) -> None:
        """Fetch ``keys`` into the local directory and keep them until ``unpin_objects``."""
        assert self.local is not None
        self.local.pin_many(keys)

    def unpin_objects(self, keys: list[str]) -> None:
        assert self.local is not None
        self.local.unpin_many(keys)

    def __len__(self) -> int:
        return self._length

    @property
    def identity(self) -> str:
        """The cache's key and version: a ``Loader`` state saved over another is refused."""
        return f"{self.manifest['cache_key']}@v{self.manifest['version']}"

    def __repr__(self) -> str:
        return f"CachedDataset({self.url!r}, {self._length} samples, fields={list(self._fields)})"

    def metadata(self) -> Any:
        """Per-sample metadata (source URI, content hash, original size, …) in index order.

        Reads every live shard's Parquet part: a pyarrow Table with one row per sample. A
        column that parts written by an older datakiln lack (text's ``encoding``) is null in
        their rows.
        """
        import pyarrow as pa

        parts = [  # from the store itself: a local directory holds what batches need only
            read_parquet(self.url, s["meta"], self._storage_options)
            for s in self.manifest["shards"]
        ]
        return pa.concat_tables(parts, promote_options="default")

    def rows_of(self, indices: NDArray[np.int64]) -> NDArray[np.int64]:
        """Array rows holding the samples at dataset ``indices`` (checked, int64)."""
        shard = np.searchsorted(self._end_index, indices, side="right")
        return self._row_start[shard] + (indices - self._first_index[shard])

    def _read_field(self, name: str, rows: np.ndarray) -> np.ndarray | list[str]:
        if name in self._strings:
            return self._strings[name].read(rows)
        if name in self._sharded:
            reader = self._sharded[name]
            out = self._scratch_buffer(name, (len(rows), *reader.sample_shape), reader.dtype)
            reader.read_into(rows, out)
            return out
        if name in self._chunked:
            return self._chunked[name].take(rows)
        unique, inverse = np.unique(rows, return_inverse=True)
        # zarr's default buffer prototype returns numpy arrays
        data = cast("NDArray[Any]", self._arrays[name].get_orthogonal_selection((unique,)))
        data = data[inverse]
        return (
            cast("list[str]", data.tolist())
            if self._fields[name]["dtype"] == STRING_DTYPE
            else data
        )

    def _scratch_buffer(self, name: str, shape: tuple[int, ...], dtype: DTypeLike) -> np.ndarray:
        """A buffer for the stored bytes of ``name``.

        Per thread and reused across batches when the field has a read-time transform
        (which converts them into the output right away), else an output array from the
        pool, as the caller keeps it.
        """
        if name in self._raw or self._fields[name].get("transform") is None:
            return self._outputs.take(name, shape, dtype)
        buffers: dict[str, np.ndarray] = self._scratch.__dict__.setdefault("buffers", {})
        size = int(np.prod(shape, dtype=np.int64))
        buffer = buffers.get(name)
        if buffer is None or buffer.size < size:
            buffer = buffers[name] = np.empty(size, dtype)
        return buffer[:size].reshape(shape)

    @property
    def field_names(self) -> list[str]:
        """The stored fields, as batches name them."""
        return list(self._fields)

    def read_batch(
        self, indices: np.ndarray, fields: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """The samples at ``indices``: every field, or only ``fields`` (read nothing else)."""
        if self.local is None or getattr(self._caller_pins, "held", False):
            return self._read_batch(indices, fields)
        keys = self.objects_of(indices)
        self.local.pin_many(keys)
        try:
            return self._read_batch(indices, fields)
        finally:
            self.local.unpin_many(keys)

    def _read_batch(self, indices: np.ndarray, fields: Sequence[str] | None) -> dict[str, Any]:
        rows = self.rows_of(np.asarray(indices, dtype=np.int64))
        batch: dict[str, Any] = {}
        if fields is not None:
            unknown = sorted(set(fields) - set(self._fields))
            if unknown:
                raise CacheFormatError(
                    f"{self.url} has no field {unknown[0]!r}; its fields are {sorted(self._fields)}"
                )
        for name, field in self._fields.items():
            if fields is not None and name not in fields:
                continue
            data = self._read_field(name, rows)
            transform = None if name in self._raw else field.get("transform")
            if transform is not None and transform["kind"] == "affine":
                stored = np.asarray(data)  # strings have no transform: this is the array itself
                data = _affine(
                    stored, transform, self._outputs.take(name, stored.shape, np.float32)
                )
            elif transform is not None and transform["kind"] == "cast":
                # a new array: the stored bytes may sit in a reused scratch buffer
                data = np.array(data, dtype=transform["dtype"])
            elif transform is not None:
                raise CacheFormatError(
                    f"{self.url}: field {name!r} has read-time transform {transform['kind']!r}, "
                    "which this version of datakiln does not know; upgrade datakiln"
                )
            batch[name] = data
        for name, (value, dtype) in self._constants.items():
            batch[name] = np.full(len(rows), value, dtype=dtype)
        batch["indices"] = np.asarray(indices, dtype=np.int64)
        return batch

    # -- text caches -----------------------------------------------------------------------

    def _require(self, name: str, what: str) -> None:
        if name not in self._fields:
            raise CacheFormatError(
                f"{self.url}: {what} needs the field {name!r}, which this "
                f"{self.manifest.get('modality')} cache does not have (fields "
                f"{sorted(self._fields)})"
            )

    def get_sample_text(self, index: int) -> str:
        """The original text of sample ``index`` (after decoding and CRLF normalisation)."""
        self._require("texts", "get_sample_text")
        rows = self.rows_of(self.check_indices([index]))
        return str(self._read_field("texts", rows)[0])  # a string field reads as a list of str

    def token_lengths(self) -> NDArray[np.int32]:
        """Token lengths (BOS and EOS included) of every sample, int32 ``(len(self),)``."""
        self._require("text_lengths", "token_lengths")
        return np.asarray(
            self._read_field("text_lengths", self.rows_of(np.arange(len(self), dtype=np.int64))),
            dtype=np.int32,
        )

    def get_vocab_stats(self) -> dict[str, Any]:
        """Token statistics of the whole cache, computed at bake time (no data is read).

        Returns the seed's keys (``unique_tokens``, ``vocab_coverage`` = unique / vocab_size,
        ``total_sequences``, ``max_length``, ``mean_length``) and the bake's own:
        ``vocab_size``, ``n_tokens``, ``n_truncated``, ``coverage`` (share of the non-special
        ids that occur), ``length_histogram`` (samples per token length), ``top_tokens``.
        """
        self._require("text_tokens", "get_vocab_stats")
        return dict(self.manifest.get("stats") or {})


# Rows converted per step by _affine: its float32 block (about 1 MiB for 64x64x3 images) stays
# in a core's L2 cache between the cast and the multiply.
_AFFINE_BLOCK_BYTES = 2**20


def _affine(data: np.ndarray, transform: Mapping[str, Any], out: np.ndarray) -> np.ndarray:
    """``data * scale + offset`` as float32 into ``out``, in cache-sized blocks of rows.

    A plain cast then an in-place float32 multiply is faster than one mixed-type multiply
    (numpy's casting loop); doing both per block reads the output from cache, not memory.
    """
    scale, offset = np.float32(transform["scale"]), np.float32(transform["offset"])
    step = max(1, _AFFINE_BLOCK_BYTES // max(1, out[:1].nbytes))
    for start in range(0, len(out), step):
        block = out[start : start + step]
        np.copyto(block, data[start : start + step])
        block *= scale
        if offset:
            block += offset
    return out


def _refcount(arrays: list[np.ndarray], k: int) -> int:
    return sys.getrefcount(arrays[k])


# What _refcount reports for an array that only the pool's list references (measured rather
# than assumed, as interpreters differ in the temporary references they take).
_POOL_ONLY = _refcount([np.empty(0)], 0)


class _OutputPool:
    """Batch output arrays, reused once nobody else holds them.

    A fresh multi-megabyte array per batch costs page faults (glibc hands large freed blocks
    back to the OS, most of all from reader threads' arenas). The pool hands out an array
    again only when its reference count shows that the caller dropped it and every view of
    it, so batches a caller keeps are never overwritten. At most ``per_shape`` arrays are kept
    for each of the ``shapes`` most recent (field, shape, dtype) keys; beyond that, arrays are
    allocated as usual.
    """

    def __init__(self, *, per_shape: int = 8, shapes: int = 4) -> None:
        self._per_shape, self._shapes = per_shape, shapes
        self._arrays: collections.OrderedDict[tuple[Any, ...], list[np.ndarray]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def take(self, name: str, shape: tuple[int, ...], dtype: DTypeLike) -> np.ndarray:
        key = (name, tuple(shape), np.dtype(dtype).str)
        with self._lock:
            arrays = self._arrays.get(key)
            if arrays is None:
                arrays = self._arrays[key] = []
                while len(self._arrays) > self._shapes:
                    self._arrays.popitem(last=False)
            else:
                self._arrays.move_to_end(key)
            for k in range(len(arrays)):
                if _refcount(arrays, k) == _POOL_ONLY:
                    return arrays[k]
            array = np.empty(shape, dtype)
            if len(arrays) < self._per_shape:
                arrays.append(array)
            return array


class _ChunkCache:
    """Whole chunks of a small per-row field, decoded once and kept up to a byte bound.

    Chunks live in slots of one array, found through a chunk -> slot table, so a batch is
    one fancy index however many chunks it touches (a random batch of a million-row cache
    touches one chunk per row); only chunks not yet resident cost a read. The least recently
    used slots are reused first.
    """

    def __init__(self, array: zarr.Array[Any], max_cache_bytes: int) -> None:
        self._array = array
        self._chunk_rows = int(array.chunks[0])
        chunks = -(-int(array.shape[0]) // self._chunk_rows)
        chunk_bytes = self._chunk_rows * int(np.prod(array.shape[1:], dtype=np.int64))
        chunk_bytes *= np.dtype(array.dtype).itemsize
        self._slots = max(1, min(chunks, max_cache_bytes // max(chunk_bytes, 1)))
        self._data: NDArray[Any] | None = None  # (slots, chunk_rows, *row shape), made on use
        self._slot_of = np.full(chunks, -1, np.int64)
        self._chunk_in = np.full(self._slots, -1, np.int64)
        self._used = np.zeros(self._slots, np.int64)  # when each slot was last read from
        self._clock = 0
        self._lock = threading.Lock()

    def resident_chunks(self) -> int:
        """Chunks held now (at most the slots the byte bound allows)."""
        return int(np.count_nonzero(self._chunk_in >= 0))

    def take(self, rows: NDArray[np.int64]) -> NDArray[Any]:
        rows = np.asarray(rows, np.int64)
        if not len(rows):
            return np.empty((0, *self._array.shape[1:]), self._array.dtype)
        chunk_of = rows // self._chunk_rows
        needed = np.unique(chunk_of)
        if len(needed) <= self._slots:
            return self._take_resident(rows, chunk_of, needed)
        # more chunks than slots: a group of chunks at a time
        out = np.empty((len(rows), *self._array.shape[1:]), self._array.dtype)
        for first in range(0, len(needed), self._slots):
            group = needed[first : first + self._slots]
            where = np.isin(chunk_of, group)
            out[where] = self._take_resident(rows[where], chunk_of[where], group)
        return out

    def _take_resident(
        self, rows: NDArray[np.int64], chunk_of: NDArray[np.int64], needed: NDArray[np.int64]
    ) -> NDArray[Any]:
        with self._lock:
            self._clock += 1
            missing = needed[self._slot_of[needed] < 0]
            if len(missing):
                self._load(missing, keep=needed)
            self._used[self._slot_of[needed]] = self._clock
            assert self._data is not None
            taken: NDArray[Any] = self._data[
                self._slot_of[chunk_of], rows - chunk_of * self._chunk_rows
            ]
            return taken

    def _load(self, missing: NDArray[np.int64], keep: NDArray[np.int64]) -> None:
        """Read ``missing`` chunks into free or least recently used slots (not ``keep``'s)."""
        if self._data is None:
            shape = (self._slots, self._chunk_rows, *self._array.shape[1:])
            self._data = np.zeros(shape, self._array.dtype)
        order = np.argsort(self._used, kind="stable")  # free slots (0) and the oldest first
        held = np.zeros(self._slots, bool)
        held[self._slot_of[keep][self._slot_of[keep] >= 0]] = True
        victims = order[~held[order]][: len(missing)]
        for k, slot in zip(missing.tolist(), victims.tolist(), strict=True):
            if self._chunk_in[slot] >= 0:
                self._slot_of[self._chunk_in[slot]] = -1
            # zarr's default buffer prototype returns numpy arrays
            data = cast(
                "NDArray[Any]", self._array[k * self._chunk_rows : (k + 1) * self._chunk_rows]
            )
            self._data[slot, : len(data)] = data
            self._chunk_in[slot], self._slot_of[k] = k, slot


def _raw_fields(
    dtype: str | Mapping[str, str] | None, fields: Mapping[str, Any], url: str
) -> frozenset[str]:
    """Fields returned as stored (``dtype="raw"``): all, some (a mapping), or none."""
    if dtype is None:
        return frozenset()
    if isinstance(dtype, str):
        dtype = dict.fromkeys(fields, dtype)
    unknown = sorted(set(dtype) - set(fields))
    wrong = sorted(v for v in dtype.values() if v not in ("raw", "converted"))
    if unknown or wrong:
        raise SpecError(
            f"{url}: dtype names fields {unknown} that the cache lacks (it has "
            f"{sorted(fields)}) or values {wrong}; use dtype='raw' or {{field: 'raw'}}"
            if unknown
            else f"{url}: dtype values must be 'raw' or 'converted', got {wrong}"
        )
    return frozenset(name for name, value in dtype.items() if value == "raw")


def _check_window(
    local: LocalDir, manifest: Mapping[str, Any], limit: int, window: int | None
) -> int:
    """The prefetch window in bytes; refuses a limit that cannot hold one window."""
    lazy = [f"{path}/" for path in lazy_fields(manifest).values()]
    largest = [
        max((local.size(k) for k in local.objects() if k.startswith(p)), default=0) for p in lazy
    ]
    one_batch = sum(largest)  # one shard object of each field: the least any batch needs
    resident = local.resident_bytes()
    if window is None:
        window = max(one_batch, (limit - resident) // 2)
    if window < one_batch or resident + window > limit:
        raise SpecError(
            f"local_limit={limit} bytes is smaller than one prefetch window: the cache's "
            f"metadata takes {resident} bytes and a window needs at least {one_batch} (one "
            f"shard object of each field; local_window={window}); raise local_limit to at "
            f"least {resident + max(one_batch, window)}"
        )
    return int(window)


def open_cache(
    url: str,
    *,
    split: str = "train",
    storage_options: Mapping[str, Any] | None = None,
    rngs: Any = None,
    version: int | str = "latest",
    local_dir: str | None = None,
    local_limit: int | None = None,
    local_window: int | None = None,
    dtype: str | Mapping[str, str] | None = None,
) -> BaseDataset:
    """Open the committed cache at ``url`` (any fsspec URL) as a dataset.

    ``split`` names the split the dataset serves; a TFDS-style slice such as
    ``"train[:80%]"`` or ``"train[80%:]"`` returns that O(1) index subset of the cache.

    ``version`` is ``"latest"`` (the committed manifest when opened) or a manifest version
    number. Either way the dataset is pinned to that version: a later incremental bake
    (``datakiln watch``) commits a new version beside it, and opening again with
    ``"latest"`` sees the new one. Older versions stay readable until ``datakiln gc``.

    ``local_dir`` (with ``local_limit`` bytes) keeps whole shard objects of a remote cache in
    a local directory, checked against their checksums and read with memory maps; processes
    on one host may share it. ``local_window`` bounds, in bytes, how far ahead a ``Loader``
    fetches (default: half of what the limit leaves after the cache's metadata).

    ``dtype="raw"`` (or ``{field: "raw"}``) returns fields as stored (uint8 images, int16
    audio) instead of converted to float32, to be scaled on the device.

    Raises:
        CacheNotFoundError: there is no committed cache at ``url``, or no such version.
        CacheFormatError: the cache is of another format version or is damaged.
        SpecError: a malformed split string or version, or a ``local_limit`` too small for
            one window.
    """
    if version != "latest" and (not isinstance(version, int) or version < 1):
        from datakiln.errors import SpecError

        raise SpecError(f"version must be 'latest' or a version number >= 1; got {version!r}")
    manifest = read_manifest(
        url, storage_options, version=None if version == "latest" else int(version)
    )
    name = split.split("[", 1)[0]
    dataset = CachedDataset(
        url,
        storage_options=storage_options,
        split=name,
        rngs=rngs,
        local_dir=local_dir,
        local_limit=local_limit,
        local_window=local_window,
        dtype=dtype,
        manifest=manifest,
    )
    if "[" not in split:
        return dataset
    from datakiln.datasets.splits import split_dataset

    return split_dataset(dataset, split)
