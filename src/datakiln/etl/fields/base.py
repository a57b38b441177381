"""The contract between the records bake and one field codec."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from datakiln.etl.spec import FieldSpec
    from datakiln.writers.zarr_region import FieldLayout


class FieldError(Exception):
    """One value of one field cannot be used.

    Its record is rejected (or, for a field with ``required = false``, marked invalid).
    ``stage`` is a rejection stage.
    """

    def __init__(self, stage: str, error_type: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.error_type = error_type


@dataclass(slots=True)
class Encoded:
    """A field's share of a shard.

    ``arrays`` of ``capacity`` rows keyed by stored name, Parquet meta columns (one value per
    baked row), marker stats and the kernel shapes compiled.
    """

    arrays: dict[str, np.ndarray | list[str]]
    meta: dict[str, list[Any]] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    kernel_shapes: list[list[Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Context:
    """What a codec may need beyond its field: the class names a label field maps to."""

    classes: Sequence[str] | None = None


class FieldCodec(Protocol):
    """A modality of record fields.

    ``media``: values name or hold a file (strings are paths, bytes are file contents), so the
    bake fetches them and the metadata records their URI and content hash. ``params_type``
    parses the field's table (``None``: the field takes no parameters).

    Optionally ``batch_rows``: a records bake then fetches, decodes and encodes at most that
    many records at a time (``encode`` is called per batch; the shard's stats are the sum of
    the batches', so a codec's stats must be numbers, lists of numbers or dicts of them).
    Optionally ``streams = True``: ``decode`` also takes an open, seekable binary file, and a
    referenced file of ``STREAM_BYTES`` or more is then handed over open (hashed in blocks
    first) instead of fetched whole, so a codec that needs a part of a huge file reads that.
    """

    modality: str
    media: bool
    params_type: Any
    worker_modules: tuple[str, ...]

    def layouts(self, spec: FieldSpec, generation: str, shard_rows: int) -> list[FieldLayout]:
        """The stored arrays of this field (the first is named after the field)."""
        ...

    def transforms(self, spec: FieldSpec) -> dict[str, dict[str, Any] | None]:
        """Read-time transform of each stored array."""
        ...

    def sample_bytes(self, spec: FieldSpec) -> int:
        """Bytes of one row of the largest stored array."""
        ...

    def identity(self, spec: FieldSpec) -> dict[str, Any]:
        """What the stored bytes depend on beyond the parameters (part of the cache key)."""
        ...

    def decode(self, value: Any, spec: FieldSpec, context: Context) -> Any:
        """Host-side decoding of one value (bytes for media fields); raises ``FieldError``."""
        ...

    def encode(
        self, decoded: Sequence[Any], spec: FieldSpec, capacity: int, context: Context
    ) -> Encoded:
        """The shard's arrays from the decoded values of its baked rows, in row order."""
        ...

    def merge_stats(self, spec: FieldSpec, stats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The manifest's stats of this field from every shard's."""
        ...
