"""Planning a bake: list inputs, give them labels, cut them into shards, compute the cache key.

A plan is plain data: each ``ShardPlan`` becomes one Dask task and round-trips through JSON, so
a task never needs anything pickled beyond strings and numbers.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from datakiln.cache.fingerprint import fingerprint
from datakiln.cache.layout import FORMAT_VERSION
from datakiln.etl.spec import BakeSpec
from datakiln.readers.listing import InputFile, list_inputs

# Upper bound on the bytes of one Zarr shard object: big enough that a bake shard writes few
# objects, small enough that a writer holds it in memory comfortably.
MAX_ZARR_SHARD_BYTES = 64 * 2**20


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """One bake shard: a contiguous run of inputs and the rows it owns in every array.

    Rows ``[row_start, row_start + capacity)`` belong to this shard alone; baked samples are
    packed at the start and the tail left by rejected inputs stays fill.
    """

    shard_id: int
    row_start: int
    inputs: tuple[InputFile, ...]
    labels: tuple[int, ...] | None

    @property
    def capacity(self) -> int:
        return len(self.inputs)

    @property
    def fingerprint(self) -> str:
        """Identifies this shard's inputs; a completion marker must match it to be reused."""
        return fingerprint(
            {"row_start": self.row_start, "inputs": [i.to_dict() for i in self.inputs],
             "labels": list(self.labels) if self.labels is not None else None}
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard_id": self.shard_id,
            "row_start": self.row_start,
            "inputs": [i.to_dict() for i in self.inputs],
            "labels": list(self.labels) if self.labels is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardPlan:
        labels = data["labels"]
        return cls(
            shard_id=int(data["shard_id"]),
            row_start=int(data["row_start"]),
            inputs=tuple(InputFile.from_dict(i) for i in data["inputs"]),
            labels=tuple(labels) if labels is not None else None,
        )


@dataclass(frozen=True, slots=True)
class BakePlan:
    spec: BakeSpec
    inputs: tuple[InputFile, ...]
    class_names: tuple[str, ...] | None
    shards: tuple[ShardPlan, ...]
    cache_key: str
    zarr_shard_rows: int

    @property
    def rows(self) -> int:
        return sum(s.capacity for s in self.shards)


def parent_label(uri: str) -> str:
    """The class name of an input under the ``parent`` label source: its folder's name."""
    return posixpath.basename(posixpath.dirname(uri.split("://", 1)[-1]))


def zarr_shard_rows(shard_size: int, sample_bytes: int) -> int:
    """Rows per Zarr shard object: ``shard_size`` halved until one object fits the budget.

    Always divides ``shard_size``, so a bake shard covers whole Zarr shards and no two tasks
    ever write the same object.
    """
    rows = shard_size
    while rows % 2 == 0 and rows * sample_bytes > MAX_ZARR_SHARD_BYTES:
        rows //= 2
    return rows


def cache_key(spec: BakeSpec, inputs: tuple[InputFile, ...]) -> str:
    """Hash of the format version, the preprocessing spec and the input listing."""
    return fingerprint(
        {"format_version": FORMAT_VERSION, "spec": spec.key_dict(),
         "inputs": [i.to_dict() for i in inputs]}
    )  # fmt: skip


def plan_bake(spec: BakeSpec) -> BakePlan:
    """List the inputs of ``spec`` and cut them into shards (raises ``SourceError``)."""
    inputs = tuple(list_inputs(spec.sources, spec.storage_options))
    class_names: tuple[str, ...] | None = None
    labels: list[int] | None = None
    if spec.image.labels == "parent":
        names = [parent_label(i.uri) for i in inputs]
        class_names = tuple(sorted(set(names)))
        index = {name: k for k, name in enumerate(class_names)}
        labels = [index[name] for name in names]
    size = spec.shard_size
    shards = tuple(
        ShardPlan(
            shard_id=k,
            row_start=start,
            inputs=inputs[start : start + size],
            labels=tuple(labels[start : start + size]) if labels is not None else None,
        )
        for k, start in enumerate(range(0, len(inputs), size))
    )
    image = spec.image
    sample_bytes = image.height * image.width * image.channels
    return BakePlan(
        spec=spec,
        inputs=inputs,
        class_names=class_names,
        shards=shards,
        cache_key=cache_key(spec, inputs),
        zarr_shard_rows=zarr_shard_rows(size, sample_bytes),
    )
