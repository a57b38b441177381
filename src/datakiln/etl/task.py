"""What crosses the process boundary of a bake: the shard plan and task out, its marker back.

Both are frozen data that round-trip through plain JSON (``to_dict``/``from_dict``), so a
local worker process or a ``distributed`` worker gets and returns strings and numbers, never a
pickle. The marker is also the completion record the task writes beside the shard's data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict, cast

from datakiln.cache.fingerprint import fingerprint
from datakiln.readers.listing import InputFile
from datakiln.readers.rejections import Rejection
from datakiln.readers.sources import RecordUnit
from datakiln.writers.zarr_region import FieldLayout


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """One bake shard: a run of input units and the rows it owns in every array.

    Rows ``[row_start, row_start + capacity)`` belong to this shard alone; baked samples are
    packed at the start and the tail left by rejected or empty inputs stays fill. ``ranges``
    gives, per input, the byte/row range to read (``None``: the whole file); ``encodings``,
    per input, the text codec detected when planned (``None``: the spec's). Both are part of
    the fingerprint.
    """

    shard_id: int
    row_start: int
    inputs: tuple[InputFile, ...]
    labels: tuple[int, ...] | None
    capacity: int = -1
    ranges: tuple[tuple[int, int] | None, ...] | None = None
    # Records bakes: the record units the shard reads (``inputs`` are their containers).
    units: tuple[RecordUnit, ...] | None = None
    encodings: tuple[str | None, ...] | None = None

    def __post_init__(self) -> None:
        if self.capacity < 0:  # one row per input unless the planner says otherwise
            object.__setattr__(self, "capacity", len(self.inputs))

    @property
    def fingerprint(self) -> str:
        """Identifies this shard's inputs; a completion marker must match it to be reused."""
        return fingerprint(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        units = {"units": [u.to_dict() for u in self.units]} if self.units is not None else {}
        # absent when None, so that the fingerprints of other shards stay what they were
        encodings = {"encodings": list(self.encodings)} if self.encodings is not None else {}
        return {
            **units,
            **encodings,
            "shard_id": self.shard_id,
            "row_start": self.row_start,
            "capacity": self.capacity,
            "inputs": [i.to_dict() for i in self.inputs],
            "labels": list(self.labels) if self.labels is not None else None,
            "ranges": [list(r) if r is not None else None for r in self.ranges]
            if self.ranges is not None
            else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardPlan:
        labels = data["labels"]
        ranges = data.get("ranges")
        return cls(
            shard_id=int(data["shard_id"]),
            row_start=int(data["row_start"]),
            inputs=tuple(InputFile.from_dict(i) for i in data["inputs"]),
            labels=tuple(labels) if labels is not None else None,
            capacity=int(data.get("capacity", len(data["inputs"]))),
            ranges=tuple(tuple(r) if r is not None else None for r in ranges)
            if ranges is not None
            else None,
            units=tuple(RecordUnit.from_dict(u) for u in data["units"])
            if "units" in data
            else None,
            encodings=tuple(data["encodings"]) if data.get("encodings") is not None else None,
        )


class DedupStep(TypedDict):
    """A task's dedup: ``mode`` and ``distance`` as the spec's.

    ``drops`` (position in the shard -> why) when the shard is baked again without the copies
    found after the first pass.
    """

    mode: str
    distance: int
    drops: NotRequired[dict[str, str]]


class TaskSteps(TypedDict, total=False):
    """The user steps a shard task runs after its modality's kernels (``etl.steps``).

    ``views``: read-time transforms the steps see fields through, by field name;
    ``transforms`` and ``filters``: each step's key (``function``, ``source``, ``module``,
    ``version``, ``params``; a transform also its ``outputs``), or a filter's host checks
    (``{"min_side": 32}``). An absent key means no such step.
    """

    views: dict[str, dict[str, Any]]
    transforms: list[dict[str, Any]]
    filters: list[dict[str, Any]]
    dedup: DedupStep


@dataclass(frozen=True, kw_only=True)
class ShardTask:
    """One shard to bake: where to write, what to read, and how.

    ``params``: the modality's parameter table; ``fields``: the stored arrays' layouts.
    """

    url: str
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    source_options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    generation_key: str
    generation: str
    modality: str
    params: Mapping[str, Any]
    fields: tuple[FieldLayout, ...]
    shard: ShardPlan
    jax_cache_dir: str | None = None
    # The user's transforms, filters and dedup (``etl.steps.task_steps``); empty: none.
    steps: TaskSteps = field(default_factory=TaskSteps)

    def to_dict(self) -> dict[str, Any]:
        steps = {"steps": dict(self.steps)} if self.steps else {}
        return {
            **steps,
            "url": self.url,
            "storage_options": dict(self.storage_options),
            "source_options": dict(self.source_options),
            "generation_key": self.generation_key,
            "generation": self.generation,
            "modality": self.modality,
            "params": dict(self.params),
            "fields": [f.to_task() for f in self.fields],
            "shard": self.shard.to_dict(),
            "jax_cache_dir": self.jax_cache_dir,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardTask:
        return cls(
            url=data["url"],
            storage_options=data.get("storage_options") or {},
            source_options=data.get("source_options") or {},
            generation_key=data["generation_key"],
            generation=data["generation"],
            modality=data["modality"],
            params=data["params"],
            fields=tuple(FieldLayout.from_task(f) for f in data["fields"]),
            shard=ShardPlan.from_dict(data["shard"]),
            jax_cache_dir=data.get("jax_cache_dir"),
            # JSON written by to_dict from a TaskSteps
            steps=cast(TaskSteps, data.get("steps") or {}),
        )


@dataclass(frozen=True, kw_only=True)
class ShardMarker:
    """A finished shard: which plan it baked, what it wrote and what it cost.

    Its plan's ``fingerprint``, its rows and rejections, the checksum of every object it
    wrote, its statistics and timings.

    ``extra`` holds what a modality adds (``kernel_shapes``, ``records``); it is written at
    the top level of the marker's JSON, as markers have always been.
    """

    shard_id: int
    generation_key: str
    fingerprint: str
    shard: Mapping[str, Any]
    row_start: int
    capacity: int
    inputs: int
    rows: int
    rejections: tuple[Rejection, ...]
    bytes_in: int
    bytes_out: int
    stats: Mapping[str, Any]
    checksum_algorithm: str
    checksums: Mapping[str, str | None]
    timings: Mapping[str, float]
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kernel_shapes(self) -> list[Any]:
        return list(self.extra.get("kernel_shapes", []))

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard_id": self.shard_id,
            "generation_key": self.generation_key,
            "fingerprint": self.fingerprint,
            "shard": dict(self.shard),
            "row_start": self.row_start,
            "capacity": self.capacity,
            "inputs": self.inputs,
            "rows": self.rows,
            "rejections": [r.to_dict() for r in self.rejections],
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "stats": dict(self.stats),
            "checksum_algorithm": self.checksum_algorithm,
            "checksums": dict(self.checksums),
            "timings": dict(self.timings),
            **self.extra,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardMarker:
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        return cls(
            shard_id=int(data["shard_id"]),
            generation_key=data["generation_key"],
            fingerprint=data["fingerprint"],
            shard=data["shard"],
            row_start=int(data["row_start"]),
            capacity=int(data["capacity"]),
            inputs=int(data["inputs"]),
            rows=int(data["rows"]),
            rejections=tuple(Rejection.from_dict(r) for r in data["rejections"]),
            bytes_in=int(data.get("bytes_in", 0)),
            bytes_out=int(data.get("bytes_out", 0)),
            stats=data.get("stats") or {},
            checksum_algorithm=data.get("checksum_algorithm", "blake2b-128"),
            checksums=data.get("checksums") or {},
            timings=data.get("timings") or {},
            extra={k: v for k, v in data.items() if k not in known},
        )
