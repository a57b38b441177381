"""Passthrough fields: numbers (``scalar``) and small metadata (``json``), stored as they are."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from datakiln.errors import SpecError
from datakiln.etl.fields import register_codec
from datakiln.etl.fields.base import Context, Encoded, FieldError
from datakiln.etl.spec import FieldSpec
from datakiln.readers.rejections import STAGE_PARSE
from datakiln.writers.zarr_region import STRING_DTYPE, FieldLayout

SCALAR_DTYPES = ("float32", "float64", "int32", "int64")


@dataclass(frozen=True, kw_only=True)
class ScalarParams:
    """The parameters of a ``scalar`` field of a records bake: one number per row.

    Attributes:
        dtype: How the number is stored: ``"float32"`` (default), ``"float64"``, ``"int32"``
            or ``"int64"``.
    """

    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in SCALAR_DTYPES:
            raise SpecError(f"scalar.dtype must be one of {', '.join(SCALAR_DTYPES)}")

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype}


class ScalarCodec:
    """The codec of ``scalar`` fields: one finite number per record, in ``dtype``."""

    modality = "scalar"
    media = False
    params_type = ScalarParams
    worker_modules: tuple[str, ...] = ()

    def layouts(self, spec: FieldSpec, generation: str, shard_rows: int) -> list[FieldLayout]:
        path = f"{generation}/{spec.name}"
        return [FieldLayout(spec.name, path, spec.params.dtype, (), shard_rows, sharded=False)]

    def transforms(self, spec: FieldSpec) -> dict[str, dict[str, Any] | None]:
        return {spec.name: None}

    def sample_bytes(self, spec: FieldSpec) -> int:
        return int(np.dtype(spec.params.dtype).itemsize)

    def identity(self, spec: FieldSpec) -> dict[str, Any]:
        return {}

    def decode(self, value: Any, spec: FieldSpec, context: Context) -> Any:
        if isinstance(value, bytes | bytearray):
            value = bytes(value).decode("utf-8", errors="replace").strip()
        try:
            number = float(value) if spec.params.dtype.startswith("float") else int(value)
        except (TypeError, ValueError) as err:
            raise FieldError(STAGE_PARSE, "NotANumber", f"{value!r} is not a number") from err
        if isinstance(number, float) and not math.isfinite(number):
            raise FieldError(STAGE_PARSE, "NotANumber", f"{value!r} is not finite")
        return number

    def encode(
        self, decoded: Sequence[Any], spec: FieldSpec, capacity: int, context: Context
    ) -> Encoded:
        values = np.zeros(capacity, spec.params.dtype)
        values[: len(decoded)] = [d if d is not None else 0 for d in decoded]
        return Encoded(arrays={spec.name: values})

    def merge_stats(self, spec: FieldSpec, stats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {}


class JsonCodec:
    """Any JSON value, stored as its compact JSON text (a string field)."""

    modality = "json"
    media = False
    params_type = None
    worker_modules: tuple[str, ...] = ()

    def layouts(self, spec: FieldSpec, generation: str, shard_rows: int) -> list[FieldLayout]:
        path = f"{generation}/{spec.name}"
        return [FieldLayout(spec.name, path, STRING_DTYPE, (), shard_rows)]

    def transforms(self, spec: FieldSpec) -> dict[str, dict[str, Any] | None]:
        return {spec.name: None}

    def sample_bytes(self, spec: FieldSpec) -> int:
        return 64

    def identity(self, spec: FieldSpec) -> dict[str, Any]:
        return {}

    def decode(self, value: Any, spec: FieldSpec, context: Context) -> Any:
        if isinstance(value, bytes | bytearray):
            try:
                value = json.loads(bytes(value))
            except ValueError as err:
                raise FieldError(STAGE_PARSE, "JSONDecodeError", str(err)) from err
        try:
            return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise FieldError(STAGE_PARSE, "NotJSON", str(err)) from err

    def encode(
        self, decoded: Sequence[Any], spec: FieldSpec, capacity: int, context: Context
    ) -> Encoded:
        texts = [d if d is not None else "" for d in decoded]
        return Encoded(arrays={spec.name: texts + [""] * (capacity - len(texts))})

    def merge_stats(self, spec: FieldSpec, stats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {}


SCALAR = register_codec(ScalarCodec())
JSON = register_codec(JsonCodec())
