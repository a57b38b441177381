"""Filters: rows a bake leaves out on purpose, each rejected with stage ``filter`` and a name.

A ``[[filters]]`` entry is either the user's JAX function (``function = "pkg.mod:keep"``: the
batch as the transforms left it in, a bool per row out, run under ``jax.jit`` like a
transform), or checks of host-side metadata that need no decoding of their own:

- images: ``min_side`` (pixels, of the original image) and ``max_aspect`` (long side over
  short side);
- text: ``min_chars`` and ``max_chars`` (characters of the decoded sample);
- audio: ``min_duration`` and ``max_duration`` (seconds of the original clip).

A rejected row's ``error_type`` names the filter (``min_side``, ``pkg.mod:keep``), so
``inputs = baked + rejected`` holds and the rejected table says which filter dropped what.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from datakiln.errors import SpecError, UserCodeError
from datakiln.etl.transforms import (
    TRANSFORM_BATCH,
    batches,
    call_step,
    jitted_step,
    stored_structs,
    trace_step,
    view_arrays,
)
from datakiln.etl.user_code import UserFunction
from datakiln.writers.zarr_region import FieldLayout

__all__ = ["FilterSpec", "check_filters", "host_keep", "jax_keep"]

# Host-side checks: name -> (modality, metadata column, comparison).
HOST_CHECKS = {
    "min_side": ("image", "min side", ">="),
    "max_aspect": ("image", "aspect", "<="),
    "min_chars": ("text", "chars", ">="),
    "max_chars": ("text", "chars", "<="),
    "min_duration": ("audio", "duration_s", ">="),
    "max_duration": ("audio", "duration_s", "<="),
}


@dataclass(frozen=True, kw_only=True)
class FilterSpec:
    """One ``[[filters]]`` entry: a user function, or host-side checks.

    A function takes ``version`` and ``params`` as a transform does; checks are one or more of
    ``min_side = 32``, ``max_chars = 2000`` and the like.
    """

    function: UserFunction | None = None
    checks: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = dict(self.checks or {})
        for name, value in checks.items():
            if name not in HOST_CHECKS:
                raise SpecError(
                    f"unknown filter {name!r}; host-side filters are {', '.join(HOST_CHECKS)}, "
                    "or name a function"
                )
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise SpecError(f"filter {name} must be a positive number; got {value!r}")
        object.__setattr__(self, "checks", checks)
        if (self.function is None) == (not checks):
            raise SpecError(
                "a [[filters]] entry names either a function or host-side checks "
                f"({', '.join(HOST_CHECKS)}), not both or neither"
            )

    @classmethod
    def from_value(cls, value: Any) -> FilterSpec:
        if isinstance(value, cls):
            return value
        if isinstance(value, str) or (callable(value) and not isinstance(value, Mapping)):
            return cls(function=UserFunction(function=value))
        if not isinstance(value, Mapping):
            raise SpecError("a filter is a table (function = 'pkg.mod:fn', or min_side = ...)")
        values = dict(value)
        if "function" in values:
            unknown = sorted(set(values) - {"function", "version", "params"})
            if unknown:
                raise SpecError(
                    f"unknown field {unknown[0]!r} in a [[filters]] function entry; allowed: "
                    "function, version, params"
                )
            return cls(function=UserFunction(**values))
        return cls(checks=values)

    @property
    def name(self) -> str:
        return self.function.function if self.function else ",".join(self.checks)

    def to_dict(self) -> dict[str, Any]:
        return self.function.to_dict() if self.function else dict(self.checks)

    def key_dict(self) -> dict[str, Any]:
        return self.function.key_dict() if self.function else dict(self.checks)


def check_filters(filters: Sequence[FilterSpec], modality: str) -> None:
    """Host-side checks read one modality's metadata: refuse the others up front."""
    for f in filters:
        for name in f.checks:
            wanted = HOST_CHECKS[name][0]
            if modality != wanted:
                raise SpecError(
                    f"filter {name} reads the metadata of {wanted} bakes, not of a {modality} "
                    "bake; use a [[filters]] function on the fields instead"
                )


def plan_filters(
    filters: Sequence[FilterSpec],
    fields: Sequence[FieldLayout],
    views: Mapping[str, Mapping[str, Any]],
) -> None:
    """Trace every function filter on the stored batch: it must return one bool per row."""
    structs = stored_structs(fields, TRANSFORM_BATCH, views)
    for f in filters:
        if f.function is None:
            continue
        fn = functools.partial(f.function.load(), **f.function.params)
        out = trace_step("filter", f.name, fn, structs)
        shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
        if shape != (TRANSFORM_BATCH,) or np.dtype(dtype) != np.bool_:
            raise UserCodeError(
                f"filter {f.name} must return one bool per row, shape ({TRANSFORM_BATCH},) for "
                f"{TRANSFORM_BATCH} rows; got {dtype}{list(shape) if shape else shape}"
            )


def _column(meta: Any, what: str) -> np.ndarray:
    if what == "min side":
        return np.asarray(
            np.minimum(meta.column("width").to_numpy(), meta.column("height").to_numpy())
        )
    if what == "aspect":
        w = meta.column("width").to_numpy().astype(np.float64)
        h = meta.column("height").to_numpy().astype(np.float64)
        return np.asarray(np.maximum(w, h) / np.maximum(np.minimum(w, h), 1))
    if what == "chars":
        import pyarrow.compute as pc

        return np.asarray(pc.utf8_length(meta.column("text")).to_numpy(zero_copy_only=False))
    return np.asarray(meta.column(what).to_numpy(zero_copy_only=False))


def host_keep(
    check: str, limit: float, meta: Any
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[Any]]:
    """Which rows pass ``check`` (bool per row of ``meta``), and the values checked."""
    _, what, op = HOST_CHECKS[check]
    values = _column(meta, what)
    keep = values >= limit if op == ">=" else values <= limit
    return keep, values


def jax_keep(
    step: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray | list[str]],
    rows: int,
    shard_id: int,
    views: Mapping[str, Mapping[str, Any]],
) -> npt.NDArray[np.bool_]:
    """The user filter's verdict on each of the first ``rows`` rows."""
    ref = step["function"]
    fn = jitted_step("filter", step, shard_id)
    keep = np.ones(rows, bool)
    for start, count, batch in batches(view_arrays(arrays, views), rows):
        got = np.asarray(call_step("filter", ref, fn, batch, shard_id, start))
        if got.shape != (TRANSFORM_BATCH,):
            raise UserCodeError(f"filter {ref} returned shape {got.shape}, not one bool per row")
        keep[start : start + count] = got[:count].astype(bool)
    return keep
