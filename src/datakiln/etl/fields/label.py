"""Label fields: class names or integer ids, stored as int32.

Class names are mapped to ids through the bake's class list: the ``classes`` parameter when
given, else every name the tables hold, sorted (an incremental bake appends new names after the
old ones, so stored ids never change). Archives' ``.cls`` members hold integer ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from datakiln.errors import SpecError
from datakiln.etl.fields import register_codec
from datakiln.etl.fields.base import Context, Encoded, FieldError
from datakiln.etl.spec import FieldSpec
from datakiln.readers.rejections import STAGE_PARSE, STAGE_VALIDATE
from datakiln.writers.zarr_region import FieldLayout


@dataclass(frozen=True, kw_only=True)
class LabelParams:
    """``classes``: the class names in id order (optional; learnt from tables otherwise)."""

    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.classes is not None:
            if isinstance(self.classes, str) or not all(isinstance(c, str) for c in self.classes):
                raise SpecError("label.classes must be a list of class names")
            if len(set(self.classes)) != len(self.classes):
                raise SpecError("label.classes must not repeat a name")
            object.__setattr__(self, "classes", tuple(self.classes))

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes) if self.classes is not None else None}


def label_text(value: Any) -> str | int | None:
    """A raw label as a class name or an integer id."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value is None:
        return None
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    return text or None


class LabelCodec:
    """The codec of ``label`` fields: class names or ids, stored as int32 ids (see above)."""

    modality = "label"
    media = False
    params_type = LabelParams
    worker_modules: tuple[str, ...] = ()

    def layouts(self, spec: FieldSpec, generation: str, shard_rows: int) -> list[FieldLayout]:
        path = f"{generation}/{spec.name}"
        return [FieldLayout(spec.name, path, "int32", (), shard_rows, sharded=False)]

    def transforms(self, spec: FieldSpec) -> dict[str, dict[str, Any] | None]:
        return {spec.name: None}

    def sample_bytes(self, spec: FieldSpec) -> int:
        return 4

    def identity(self, spec: FieldSpec) -> dict[str, Any]:
        return {}

    def decode(self, value: Any, spec: FieldSpec, context: Context) -> Any:
        label = label_text(value)
        if label is None:
            raise FieldError(STAGE_VALIDATE, "EmptySample", "empty label")
        classes = context.classes
        if isinstance(label, int):
            if label < 0 or (classes and label >= len(classes)):
                raise FieldError(STAGE_VALIDATE, "BadLabel", f"label id {label} out of range")
            return label
        if not classes or label not in classes:
            raise FieldError(
                STAGE_PARSE,
                "UnknownClass",
                f"class {label!r} is not one of the {len(classes or ())} known classes",
            )
        return list(classes).index(label)

    def encode(
        self, decoded: Sequence[Any], spec: FieldSpec, capacity: int, context: Context
    ) -> Encoded:
        labels = np.zeros(capacity, np.int32)
        labels[: len(decoded)] = [d if d is not None else 0 for d in decoded]
        present = [d for d in decoded if d is not None]
        counts = np.bincount(present).tolist() if present else []
        return Encoded(arrays={spec.name: labels}, stats={"label_counts": counts})

    def merge_stats(self, spec: FieldSpec, stats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        width = max((len(s["label_counts"]) for s in stats), default=0)
        counts = np.zeros(width, np.int64)
        for s in stats:
            counts[: len(s["label_counts"])] += np.asarray(s["label_counts"], np.int64)
        return {"label_counts": counts.tolist()}


CODEC = register_codec(LabelCodec())
