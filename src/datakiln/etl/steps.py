"""The user's steps of a shard, after its modality's kernels: transforms, filters, dedup.

``apply_steps`` works on the modality's ``ShardOutput`` in place, so the shard runner stays one
runner: transforms add or replace arrays, filters and dedup drops remove rows (packing the kept
ones at the start, as the modalities do) and add their rejections. ``task_steps`` builds the
plain data a ``ShardTask`` carries: each function's code identity, so a worker can check that it
runs the code the bake was planned with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from datakiln.etl.dedup import row_keys
from datakiln.etl.filters import host_keep, jax_keep
from datakiln.etl.task import ShardTask, TaskSteps
from datakiln.etl.transforms import TRANSFORM_BATCH, run_transforms
from datakiln.readers.rejections import STAGE_DEDUP, STAGE_FILTER, Rejection

if TYPE_CHECKING:
    from datakiln.etl.modalities.base import ShardOutput
    from datakiln.etl.spec import BakeSpec

__all__ = ["apply_steps", "describe_changes", "task_steps"]

DUPLICATE = {"exact": "Duplicate", "near": "NearDuplicate"}


def task_steps(
    spec: BakeSpec, outputs: Sequence[Sequence[str]], views: Mapping[str, dict[str, Any]]
) -> TaskSteps:
    """What a shard task needs of the spec's user steps (``{}`` when there are none)."""
    steps = TaskSteps(views=dict(views)) if views else TaskSteps()
    if spec.transforms:
        steps["transforms"] = [
            {**t.key_dict(), "outputs": list(names)}
            for t, names in zip(spec.transforms, outputs, strict=True)
        ]
    if spec.filters:
        steps["filters"] = [f.key_dict() for f in spec.filters]
    if spec.dedup:
        steps["dedup"] = {"mode": spec.dedup, "distance": spec.dedup_distance}
    return steps


def _row_names(meta: pa.Table) -> list[str]:
    """What names a row in messages and the rejected table: its file, or record."""
    if "uri" in meta.column_names:
        return cast(list[str], meta.column("uri").to_pylist())  # a string column
    sources = meta.column("source").to_pylist()
    records = meta.column("record").to_pylist()
    return [f"{s}#{r}" if r is not None else s for s, r in zip(sources, records, strict=True)]


def _rejection(
    meta: pa.Table, k: int, stage: str, kind: str, message: str, shard: int
) -> Rejection:
    names = meta.column_names
    uri = meta.column("uri" if "uri" in names else "source")[k].as_py()
    position = meta.column("position")[k].as_py() if "position" in names else None
    record = meta.column("record")[k].as_py() if "record" in names else None
    return Rejection(
        uri=uri,
        stage=stage,
        error_type=kind,
        message=message,
        position=position,
        shard=shard,
        record=record,
    )


def _compact(out: ShardOutput, keep: npt.NDArray[np.bool_]) -> None:
    """Keep the rows ``keep`` marks, packed at the start; the freed tail becomes fill."""
    if keep.all():
        return
    m = int(keep.sum())
    rows = np.flatnonzero(keep)
    for name, a in out.arrays.items():
        if isinstance(a, list):  # strings: fill is the empty string
            out.arrays[name] = [a[k] for k in rows] + [""] * (len(a) - m)
            continue
        packed = np.zeros_like(a) if a.dtype.kind not in "OTU" else np.full_like(a, "")
        packed[:m] = a[rows]
        out.arrays[name] = packed
    out.meta = out.meta.filter(pa.array(keep))
    out.rows = m


def apply_steps(task: ShardTask, out: ShardOutput, modality: Any) -> None:
    """Run the task's transforms, filters and dedup on ``out`` (in place)."""
    steps = task.steps
    if not steps:
        return
    shard_id = task.shard.shard_id
    layouts = {f.name: f for f in task.fields}
    names = _row_names(out.meta)
    rows_before = out.rows
    views = steps.get("views") or {}
    if steps.get("transforms"):
        run_transforms(steps["transforms"], out.arrays, out.rows, layouts, shard_id, names, views)

    keep = np.ones(out.rows, bool)
    for step in steps.get("filters") or ():
        # (name, rows passed, the values checked and the limit: host checks only)
        checks: list[tuple[str, npt.NDArray[np.bool_], npt.NDArray[Any] | None, Any]] = []
        if "function" in step:
            verdict = jax_keep(step, out.arrays, out.rows, shard_id, views)
            checks.append((step["function"], verdict, None, None))
        else:
            for check, limit in step.items():
                checks.append((check, *host_keep(check, limit, out.meta), limit))
        for name, passed, values, limit in checks:
            for k in np.flatnonzero(keep & ~passed):
                message = (
                    f"filter {name} returned false"
                    if values is None
                    else f"{name} = {limit}: this input has {float(values[k]):g}"
                )
                out.rejections.append(
                    _rejection(out.meta, int(k), STAGE_FILTER, name, message, shard_id)
                )
            keep &= passed
    out.extra["filtered"] = int((~keep).sum())
    _compact(out, keep)

    dedup = steps.get("dedup")
    if dedup:
        names = _row_names(out.meta)
        keys = row_keys(dedup["mode"], task.modality, out.arrays, out.meta, out.rows)
        drops: Mapping[str, str] = dedup.get("drops") or {}
        out.extra["dedup"] = {"keys": keys, "uris": names, "dropped": dict(drops)}
        keep = np.ones(out.rows, bool)
        for position, why in drops.items():
            row = int(position)
            keep[row] = False
            kind = DUPLICATE[dedup["mode"]]
            out.rejections.append(_rejection(out.meta, row, STAGE_DEDUP, kind, why, shard_id))
        out.extra["duplicates"] = len(drops)
        _compact(out, keep)

    # one compiled shape per function and process: the batch is always TRANSFORM_BATCH rows
    shapes = out.extra.setdefault("kernel_shapes", [])
    shapes += [["transform", t["function"], TRANSFORM_BATCH] for t in steps.get("transforms", ())]
    functions = [f["function"] for f in steps.get("filters", ()) if "function" in f]
    shapes += [["filter", ref, TRANSFORM_BATCH] for ref in functions]
    if dedup and dedup["mode"] == "near" and task.modality == "image":
        shapes.append(["phash", TRANSFORM_BATCH, *layouts["images"].sample_shape])

    restat = getattr(modality, "shard_stats", None)
    if out.rows != rows_before and restat is not None:
        out.stats = restat(out.arrays, out.rows)


def _describe(kind: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    name = after.get("function", "")
    if before.get("source") != after.get("source"):
        return [f"{kind} {name}: code changed"]
    out = []
    if before.get("module") != after.get("module"):
        out.append(f"{kind} {name}: its module's code changed")
    if before.get("version") != after.get("version"):
        out.append(f"{kind} {name}: version {before.get('version')!r} -> {after.get('version')!r}")
    if before.get("params") != after.get("params"):
        out.append(f"{kind} {name}: params {before.get('params')!r} -> {after.get('params')!r}")
    return out


def describe_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Name what changed in the user steps' key (``BakeSpec.steps_key``), for ``plan``.

    For example ``transform mypkg.prep:embed: code changed``.
    """
    reasons: list[str] = []
    for section, kind in (("transforms", "transform"), ("filters", "filter")):
        old, new = list(before.get(section) or ()), list(after.get(section) or ())
        old_named = {s["function"]: s for s in old if "function" in s}
        new_named = {s["function"]: s for s in new if "function" in s}
        for name, step in new_named.items():
            if name not in old_named:
                reasons.append(f"{kind} {name}: added")
            else:
                reasons += _describe(kind, old_named[name], step)
        reasons += [f"{kind} {name}: removed" for name in old_named if name not in new_named]
        old_checks = [s for s in old if "function" not in s]
        new_checks = [s for s in new if "function" not in s]
        if old_checks != new_checks:
            reasons.append(f"{section} checks: {old_checks} -> {new_checks}")
        if not reasons and [s.get("function") for s in old] != [s.get("function") for s in new]:
            reasons.append(f"{section}: order changed")
    if before.get("dedup") != after.get("dedup"):
        reasons.append(f"dedup: {before.get('dedup')} -> {after.get('dedup')}")
    return reasons
