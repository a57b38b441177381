"""The contract between the shared bake machinery and one modality."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from datakiln.readers.rejections import Rejection

T = TypeVar("T")
R = TypeVar("R")

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from datakiln.etl.spec import BakeSpec
    from datakiln.etl.task import ShardMarker, ShardPlan
    from datakiln.readers.listing import InputFile
    from datakiln.writers.zarr_region import FieldLayout


@dataclass(frozen=True, slots=True)
class Unit:
    """One planned piece of input: a whole file, or a byte/row range of one.

    ``capacity`` is an upper bound on the samples it yields (1 for an image or a clip, the
    line count of a text range), so its shard can reserve rows before reading it.
    ``encoding`` is the text codec detected for its file when planned (``encoding="auto"``),
    ``None`` when the spec's codec applies.
    """

    input: InputFile
    start: int | None = None
    end: int | None = None
    capacity: int = 1
    encoding: str | None = None

    @property
    def span(self) -> tuple[int, int] | None:
        """``(start, end)`` to read, or ``None`` for the whole file."""
        if self.start is None or self.end is None:
            return None
        return self.start, self.end


@dataclass(slots=True)
class ShardOutput:
    """What a modality's shard function hands back to the shared writer.

    ``arrays`` maps field name to an array of ``shard.capacity`` rows whose first ``rows``
    hold the samples (a list of ``str`` for a string field); ``meta`` is the Parquet part
    without its ``row`` column (added by the writer); ``stats`` and ``extra`` go into the
    completion marker.
    """

    rows: int
    arrays: dict[str, np.ndarray | list[str]]
    meta: pa.Table
    rejections: list[Rejection]
    bytes_in: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class Modality(Protocol):
    """What the shared planner, shard runner, commit and reader need from a modality."""

    name: str
    extensions: tuple[str, ...]  # taken from folders given as sources
    # imported lazily by bake_shard; a worker pool imports them before its workers start
    worker_modules: tuple[str, ...]
    # the local Dask scheduler ``scheduler='auto'`` picks on a machine with several CPUs
    local_scheduler: str

    def plan_units(self, spec: BakeSpec, inputs: Sequence[InputFile]) -> list[Unit]:
        """Cut inputs into units (may read them, e.g. to count lines)."""
        ...

    def fields(
        self, spec: BakeSpec, generation: str, shard_rows: int, labelled: bool
    ) -> list[FieldLayout]:
        """The stored fields, with Zarr paths under ``generation``."""
        ...

    def sample_bytes(self, spec: BakeSpec) -> int:
        """Bytes of one row of the largest field (sizes the Zarr shard objects)."""
        ...

    def transforms(self, spec: BakeSpec) -> dict[str, dict[str, Any] | None]:
        """Read-time transform of each field, recorded in the manifest."""
        ...

    def bake_shard(
        self,
        shard: ShardPlan,
        spec_params: Mapping[str, Any],
        source_options: Mapping[str, Any],
        timings: dict[str, float],
    ) -> ShardOutput:
        """Fetch, decode and transform one shard's inputs; never raise for one bad input."""
        ...

    def merge_stats(self, spec: BakeSpec, markers: Sequence[ShardMarker]) -> dict[str, Any]:
        """The manifest's ``stats`` from every live shard's marker."""
        ...


class HasManifestEntries(Protocol):
    """Optional: a modality whose manifest carries more than the shared keys.

    ``manifest_entries(spec)`` returns top-level manifest entries, e.g. ``{"tokenizer": ...}``
    (an identity that is also hashed into the generation key) or ``{"constants": {name:
    {"value": v, "dtype": d}}}`` (per-sample constants the reader adds to every batch).
    Modalities whose units are not one sample each also set ``one_sample_per_input = False``.
    """

    def manifest_entries(self, spec: BakeSpec) -> dict[str, Any]: ...


def rejection(
    uri: str, stage: str, err: BaseException | str, shard_id: int, error_type: str | None = None
) -> Rejection:
    """A rejection record: which input, at which stage, and why."""
    message = err if isinstance(err, str) else (str(err) or type(err).__name__)
    kind = error_type or (type(err).__name__ if not isinstance(err, str) else "Rejected")
    return Rejection(uri=uri, stage=stage, error_type=kind, message=message, shard=shard_id)


def fetch_all(shard: ShardPlan, storage_options: Mapping[str, Any]) -> list[bytes | BaseException]:
    """Bytes of every input of ``shard``, or the exception fetching it raised (per input)."""
    import fsspec

    if not shard.inputs:
        return []
    fs, _ = fsspec.core.url_to_fs(shard.inputs[0].uri, **dict(storage_options))
    paths = [fs._strip_protocol(i.uri) for i in shard.inputs]
    got = fs.cat(paths, on_error="return")
    if not isinstance(got, dict):  # one path: fsspec returns the bytes themselves
        got = {paths[0]: got}
    return [got.get(p, FileNotFoundError(p)) for p in paths]


# Inputs from this size on are read through by a codec that can decode from an open file
# (hashed in blocks, then only what the sample needs decoded) rather than fetched whole: a
# 3-hour WAV costs its clip, not its size.
STREAM_BYTES = 32 << 20

# Decode threads of a shard task that may use more than one CPU (Pillow, libsndfile and
# hashlib release the GIL), and the items each thread takes at a time: a future per item
# cost about 7% of a 256-image shard's decode on one CPU.
DECODE_THREADS = 2
DECODE_CHUNK = 16


def decode_all(decode: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[decode(x) for x in items]``, on ``DECODE_THREADS`` threads where they can help.

    A bake worker pinned to one CPU decodes in order: threads there only add hand-offs (on
    one CPU, 512 JPEGs took 336 ms through a two-thread pool, 314 ms in order).
    """
    if len(items) <= DECODE_CHUNK or _usable_cpus() == 1:
        return [decode(x) for x in items]
    chunks = [items[k : k + DECODE_CHUNK] for k in range(0, len(items), DECODE_CHUNK)]
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        parts = pool.map(lambda chunk: [decode(x) for x in chunk], chunks)
        return [result for part in parts for result in part]


def _usable_cpus() -> int:
    """CPUs this process may run on now (a pinned bake worker: one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1
