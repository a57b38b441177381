"""User transforms: the user's JAX function over a shard's stored fields, run under ``jax.jit``.

A transform takes the shard's stored fields (a dict of arrays: images as stored, uint8
``(B, H, W, C)``; tokens int32, audio and mel float32, as read; validity masks and lengths
where a bake keeps them; see ``input_views``) and returns a dict of new or replaced fields.
It is traced once per process on a fixed batch of ``TRANSFORM_BATCH`` rows (the shard's rows
are cut into such batches and the last one padded with zeros), so a bake compiles each
transform once, whatever its shard sizes. The output
fields' dtype and row shape come from ``jax.eval_shape`` when the bake is planned, so a
transform that cannot be traced or returns the wrong batch length fails before any shard.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from datakiln.errors import SpecError, UserCodeError
from datakiln.etl.user_code import UserFunction, code_identity
from datakiln.writers.zarr_region import STRING_DTYPE, FieldLayout

__all__ = ["TRANSFORM_BATCH", "TransformSpec", "plan_layouts", "run_transforms"]

#: Rows per call of a transform: one compiled shape per process, and a padded tail that stays
#: small next to a shard of hundreds of rows.
TRANSFORM_BATCH = 64
#: Dtypes a transform may return: those Zarr and numpy store as they are.
STORABLE_DTYPES = (
    "bool",
    "int8",
    "int16",
    "int32",
    "uint8",
    "uint16",
    "uint32",
    "float16",
    "float32",
)


@dataclass(frozen=True, kw_only=True)
class TransformSpec(UserFunction):
    """One ``[[transforms]]`` entry: ``function = "pkg.mod:fn"``, ``version``, ``params``.

    ``version`` and ``params`` (keyword arguments) are optional and part of the cache key.
    ``BakeSpec(transforms=[...])`` also
    takes the function itself, if it is defined at the top level of a module.
    """

    @classmethod
    def from_value(cls, value: Any) -> TransformSpec:
        if isinstance(value, cls):
            return value
        if isinstance(value, str) or (callable(value) and not isinstance(value, Mapping)):
            return cls(function=value)
        if not isinstance(value, Mapping):
            raise SpecError(f"a transform is a table with function = 'pkg.mod:fn'; got {value!r}")
        unknown = sorted(set(value) - {"function", "version", "params"})
        if unknown:
            raise SpecError(
                f"unknown field {unknown[0]!r} in [[transforms]]; allowed: function, version, "
                "params"
            )
        if "function" not in value:
            raise SpecError("[[transforms]] needs function = 'package.module:function'")
        return cls(**value)


def input_views(
    read: Mapping[str, Mapping[str, Any] | None], fields: Iterable[FieldLayout]
) -> dict[str, dict[str, Any]]:
    """How a step sees the modality's fields: as read, except images, which stay uint8.

    Tokens stored in the smallest unsigned type are cast to int32, and int16 or float16
    audio and mel are mapped to float32, with the read-time transforms the manifest records
    (``read``: field name -> transform).
    """
    views: dict[str, dict[str, Any]] = {}
    for f in fields:
        t = read.get(f.name)
        if t is None or (t["kind"] == "affine" and f.dtype == "uint8"):
            continue
        if t["kind"] == "cast":
            views[f.name] = {"stored": f.dtype, "dtype": t["dtype"]}
        elif t["kind"] == "affine":
            views[f.name] = {
                "stored": f.dtype,
                "dtype": t.get("dtype", "float32"),
                "scale": t["scale"],
                "offset": t["offset"],
            }
    return views


def view_arrays(
    arrays: Mapping[str, Any], views: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """``arrays`` as steps see them (``input_views``).

    A field a transform replaced is left as it returned it.
    """
    out = dict(arrays)
    for name, v in views.items():
        a = arrays.get(name)
        if not isinstance(a, np.ndarray) or a.dtype != np.dtype(v["stored"]):
            continue
        x = a.astype(v["dtype"])
        if "scale" in v:
            x *= np.asarray(v["scale"], x.dtype)
            x += np.asarray(v["offset"], x.dtype)
        out[name] = x
    return out


def stored_structs(
    fields: Iterable[FieldLayout], batch: int, views: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The batch a step sees at plan time: every numeric field, ``batch`` rows."""
    import jax

    return {
        # jax leaves ShapeDtypeStruct.__init__ unannotated
        f.name: jax.ShapeDtypeStruct(  # type: ignore[no-untyped-call]
            (batch, *f.sample_shape),
            np.dtype(views[f.name]["dtype"] if f.name in views else f.dtype),
        )
        for f in fields
        if f.dtype != STRING_DTYPE
    }


def _shapes(structs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in structs.items())


def check_outputs(kind: str, ref: str, out: Any, batch: int) -> None:
    """Fail with a message when a step's traced output cannot be stored row by row."""
    if not isinstance(out, Mapping) or not out:
        raise UserCodeError(
            f"{kind} {ref} must return a non-empty dict of field name -> array; got "
            f"{type(out).__name__}"
        )
    for name, value in out.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise UserCodeError(f"{kind} {ref} returned a field named {name!r}; use identifiers")
        shape = getattr(value, "shape", None)
        if shape is None or len(shape) == 0 or shape[0] != batch:
            raise UserCodeError(
                f"{kind} {ref} returned {name!r} of shape {shape}: its first axis must be the "
                f"batch ({batch} rows in, so {batch} rows out, one per input row)"
            )
        if np.dtype(value.dtype).name not in STORABLE_DTYPES:
            raise UserCodeError(
                f"{kind} {ref} returned {name!r} as {value.dtype}, which is not stored; cast it "
                f"to one of {', '.join(STORABLE_DTYPES)}"
            )


def trace_step(kind: str, ref: str, fn: Callable[..., Any], structs: Mapping[str, Any]) -> Any:
    import jax

    try:
        return jax.eval_shape(fn, dict(structs))
    except Exception as err:
        raise UserCodeError(
            f"{kind} {ref} cannot be traced on the stored batch ({_shapes(structs)}): "
            f"{type(err).__name__}: {err}"
        ) from err


def plan_layouts(
    transforms: Sequence[TransformSpec],
    fields: Sequence[FieldLayout],
    generation: str,
    views: Mapping[str, Mapping[str, Any]],
) -> tuple[list[FieldLayout], list[list[str]]]:
    """The stored fields after the transforms, and the names each transform writes.

    A transform's outputs replace or join the modality's fields.

    Traces each transform with ``jax.eval_shape`` (nothing runs), so a bad output fails here,
    before any shard starts.
    """
    layouts = {f.name: f for f in fields}
    written: list[list[str]] = []
    if not transforms:
        return list(layouts.values()), written
    shard_rows = fields[0].shard_rows
    structs = stored_structs(fields, TRANSFORM_BATCH, views)
    for t in transforms:
        fn = functools.partial(t.load(), **t.params)
        out = trace_step("transform", t.function, fn, structs)
        check_outputs("transform", t.function, out, TRANSFORM_BATCH)
        for name, value in out.items():
            row = tuple(int(d) for d in value.shape[1:])
            if name in layouts and layouts[name].dtype == STRING_DTYPE:
                raise UserCodeError(f"transform {t.function} cannot replace string field {name!r}")
            layouts[name] = FieldLayout(
                name,
                f"{generation}/{name}",
                np.dtype(value.dtype).name,
                row,
                shard_rows,
                sharded=bool(row),
            )
            structs[name] = value
        written.append(sorted(out))
    return list(layouts.values()), written


@functools.lru_cache(maxsize=64)
def _jitted(ref: str, params_json: str, source: str, module: str) -> Callable[..., Any]:
    """The jitted function, once per process and code version (``source``/``module`` key it)."""
    import json

    import jax

    params = json.loads(params_json)
    return jax.jit(functools.partial(UserFunction(function=ref).load(), **params))


def jitted_step(kind: str, step: Mapping[str, Any], shard_id: int) -> Callable[..., Any]:
    """The jitted user function of a task's step.

    Checks first that this process has the code the bake was planned with.
    """
    import json

    ref = step["function"]
    try:
        here = code_identity(ref)
    except SpecError as err:
        raise UserCodeError(f"{kind} {ref} on shard {shard_id}: {err}") from None
    if (here["source"], here["module"]) != (step["source"], step["module"]):
        raise UserCodeError(
            f"{kind} {ref}: the code where shard {shard_id} runs differs from the code the bake "
            "was planned with; install the same version of its module everywhere and run the "
            "same command again"
        )
    params = json.dumps(step.get("params") or {}, sort_keys=True)
    return _jitted(ref, params, here["source"], here["module"])


def batches(
    arrays: Mapping[str, np.ndarray | list[str]], rows: int
) -> Iterable[tuple[int, int, dict[str, np.ndarray]]]:
    """``(start, count, batch)`` over the first ``rows`` rows, ``TRANSFORM_BATCH`` at a time.

    The last batch is padded with zeros to the full size.
    """
    numeric = {
        k: a for k, a in arrays.items() if isinstance(a, np.ndarray) and a.dtype.kind not in "OTUS"
    }
    for start in range(0, rows, TRANSFORM_BATCH):
        count = min(TRANSFORM_BATCH, rows - start)
        batch = {}
        for name, a in numeric.items():
            part = a[start : start + count]
            if count < TRANSFORM_BATCH or len(part) < TRANSFORM_BATCH:
                padded = np.zeros((TRANSFORM_BATCH, *a.shape[1:]), a.dtype)
                padded[:count] = part
                part = padded
            batch[name] = part
        yield start, count, batch


def call_step(
    kind: str, ref: str, fn: Callable[..., Any], batch: Mapping[str, Any], shard_id: int, start: int
) -> Any:
    try:
        return fn(dict(batch))
    except Exception as err:
        raise UserCodeError(
            f"{kind} {ref} raised on shard {shard_id} (rows from {start}): "
            f"{type(err).__name__}: {err}; nothing was committed: fix it and run the same "
            "command again to resume"
        ) from None


def run_transforms(
    steps: Sequence[Mapping[str, Any]],
    arrays: dict[str, np.ndarray | list[str]],
    rows: int,
    layouts: Mapping[str, FieldLayout],
    shard_id: int,
    uris: Sequence[str],
    views: Mapping[str, Mapping[str, Any]],
) -> None:
    """Apply each transform in order to ``arrays``, writing its outputs into ``arrays``.

    ``arrays`` hold ``capacity`` rows, the first ``rows`` real; NaN in an output stops the
    bake with the row named.
    """
    for step in steps:
        ref = step["function"]
        fn = jitted_step("transform", step, shard_id)
        outputs: dict[str, np.ndarray] = {}
        capacity = max(len(a) for a in arrays.values())
        for start, count, batch in batches(view_arrays(arrays, views), rows):
            result = call_step("transform", ref, fn, batch, shard_id, start)
            for name, value in result.items():
                value = np.asarray(value)
                if name not in outputs:
                    layout = layouts[name]
                    outputs[name] = np.zeros((capacity, *layout.sample_shape), layout.dtype)
                got = value[:count]
                if got.dtype.kind == "f" and np.isnan(got).any():
                    bad = start + int(np.flatnonzero(np.isnan(got).reshape(count, -1).any(1))[0])
                    raise UserCodeError(
                        f"transform {ref} returned NaN in field {name!r} on shard {shard_id} "
                        f"for {uris[bad] if bad < len(uris) else f'row {bad}'}; nothing was "
                        "committed: guard the computation (e.g. jnp.where or a small epsilon) "
                        "and run the same command again"
                    )
                outputs[name][start : start + count] = got
        for name in step.get("outputs") or ():  # a shard with no rows still writes them
            if name not in outputs:
                layout = layouts[name]
                outputs[name] = np.zeros((capacity, *layout.sample_shape), layout.dtype)
        arrays.update(outputs)
