"""The bake job: plan, run one Dask task per shard, commit the manifest.

``bake(spec)`` is the Python API behind ``datakiln bake``. Shards whose completion marker
matches the plan are skipped, so re-running an interrupted bake finishes it, and baking the
same spec over unchanged inputs again is a no-op.
"""

from __future__ import annotations

import collections
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np

from datakiln.cache.layout import FORMAT_VERSION, MANIFEST, REJECTED, meta_part, shard_marker
from datakiln.cache.layout import store_fs
from datakiln.cache.manifest import FORMAT_NAME, commit_manifest, read_manifest
from datakiln.errors import BakeError, CacheNotFoundError, OutputError, TooManyRejectedError
from datakiln.etl.plan import BakePlan, plan_bake
from datakiln.etl.shard import bake_image_shard
from datakiln.etl.spec import BakeSpec
from datakiln.writers.marker import read_marker
from datakiln.writers.parquet import rejected_table, table_bytes
from datakiln.writers.zarr_region import FieldLayout, create_arrays

logger = logging.getLogger(__name__)

STAGES = ("fetch", "decode", "kernel", "write")


@dataclass(frozen=True, kw_only=True)
class BakeReport:
    """What a bake did; ``inputs == baked + rejected`` always holds."""

    url: str
    cache_key: str
    inputs: int
    baked: int
    rejected: int
    rejected_by_reason: Mapping[str, int] = field(default_factory=dict)
    shards: int = 0
    shards_skipped: int = 0
    up_to_date: bool = False
    wall_s: float = 0.0
    bytes_in: int = 0
    stage_s: Mapping[str, float] = field(default_factory=dict)

    def summary_line(self) -> str:
        return f"inputs {self.inputs} = baked {self.baked} + rejected {self.rejected}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url, "cache_key": self.cache_key, "inputs": self.inputs,
            "baked": self.baked, "rejected": self.rejected,
            "rejected_by_reason": dict(self.rejected_by_reason), "shards": self.shards,
            "shards_skipped": self.shards_skipped, "up_to_date": self.up_to_date,
            "wall_s": self.wall_s, "bytes_in": self.bytes_in, "stage_s": dict(self.stage_s),
        }  # fmt: skip


ProgressFn = Callable[[Mapping[str, Any]], None]


def _fields(plan: BakePlan) -> list[FieldLayout]:
    image = plan.spec.image
    fields = [
        FieldLayout("images", "uint8", (image.height, image.width, image.channels),
                    plan.zarr_shard_rows)  # fmt: skip
    ]
    if plan.class_names is not None:
        fields.append(FieldLayout("labels", "int32", (), plan.zarr_shard_rows, sharded=False))
    return fields


def _field_schema(plan: BakePlan, fields: list[FieldLayout]) -> dict[str, Any]:
    image = plan.spec.image
    schema = {f.name: f.to_dict(plan.rows) for f in fields}
    # uint8 on disk; the reader applies this affine map to give the range the spec promised.
    scale, offset = (1 / 255, 0.0) if image.normalize else (2 / 255, -1.0)
    schema["images"]["transform"] = {"kind": "affine", "scale": scale, "offset": offset,
                                     "dtype": "float32"}  # fmt: skip
    if "labels" in schema:
        schema["labels"]["transform"] = None
    return schema


def _prepare_store(plan: BakePlan, fields: list[FieldLayout]) -> dict[int, dict[str, Any]]:
    """Make the arrays ready; return the markers of shards that are already done."""
    spec = plan.spec
    fs, root = store_fs(spec.output, spec.output_storage_options)
    try:
        fs.makedirs(root, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the output {spec.output!r}: {err}") from err
    done: dict[int, dict[str, Any]] = {}
    for shard in plan.shards:
        marker = read_marker(fs, root, shard.shard_id)
        if (
            marker is not None
            and marker.get("cache_key") == plan.cache_key
            and marker.get("fingerprint") == shard.fingerprint
        ):
            done[shard.shard_id] = marker
    if not done:
        attributes = {"datakiln": {"cache_key": plan.cache_key, "format_version": FORMAT_VERSION}}
        try:
            create_arrays(spec.output, spec.output_storage_options, fields, plan.rows, attributes)
        except OSError as err:
            raise OutputError(f"cannot write the output {spec.output!r}: {err}") from err
    return done


def _run_tasks(
    plan: BakePlan, tasks: list[dict[str, Any]], progress: ProgressFn | None
) -> list[dict[str, Any]]:
    spec = plan.spec
    if not tasks:
        return []
    if "://" in spec.scheduler:
        from distributed import Client, as_completed

        with Client(spec.scheduler) as client:
            futures = [client.submit(bake_image_shard, t, pure=False) for t in tasks]
            results = []
            for future in as_completed(futures):
                marker = future.result()
                results.append(marker)
                if progress is not None:
                    progress(marker)
            return results

    from dask.callbacks import Callback

    def posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if progress is not None and isinstance(result, dict) and "shard_id" in result:
            progress(result)

    delayed = [dask.delayed(bake_image_shard, pure=False)(t) for t in tasks]
    with Callback(posttask=posttask):
        return list(
            dask.compute(*delayed, scheduler=spec.scheduler, num_workers=spec.workers)
        )


def bake(spec: BakeSpec, *, progress: ProgressFn | None = None) -> BakeReport:
    """Bake ``spec`` into its output cache and return what happened.

    Raises:
        SourceError: a source names nothing readable.
        OutputError: the output cannot be written.
        TooManyRejectedError: more inputs were rejected than ``spec.max_rejected``; the shards
            stay on disk (a re-run with a higher limit commits at once) but no manifest is
            written.
        BakeError: a shard task failed for a reason other than one bad input.
    """
    started = time.perf_counter()
    plan = plan_bake(spec)
    try:
        current = read_manifest(spec.output, spec.output_storage_options)
    except CacheNotFoundError:
        current = None
    except Exception:  # an unreadable old manifest is replaced, not fatal
        logger.warning("the manifest at %s is unreadable; it will be replaced", spec.output)
        current = None
    if current is not None and current["cache_key"] == plan.cache_key:
        counts = current["counts"]
        logger.info("cache at %s is up to date (key %s)", spec.output, plan.cache_key[:12])
        return BakeReport(
            url=spec.output, cache_key=plan.cache_key, inputs=counts["inputs"],
            baked=counts["baked"], rejected=counts["rejected"],
            rejected_by_reason=current.get("rejected_by_reason", {}),
            shards=len(plan.shards), shards_skipped=len(plan.shards), up_to_date=True,
            wall_s=time.perf_counter() - started,
        )  # fmt: skip

    fields = _fields(plan)
    done = _prepare_store(plan, fields)
    base_task = {
        "url": spec.output,
        "storage_options": dict(spec.output_storage_options),
        "source_options": dict(spec.storage_options),
        "cache_key": plan.cache_key,
        "image": spec.image.to_dict(),
        "fields": [[f.name, f.dtype, list(f.sample_shape), f.shard_rows, f.sharded]
                   for f in fields],  # fmt: skip
    }
    tasks = [
        {**base_task, "shard": shard.to_dict()}
        for shard in plan.shards
        if shard.shard_id not in done
    ]
    logger.info(
        "baking %d inputs in %d shards (%d already done) into %s",
        len(plan.inputs), len(plan.shards), len(done), spec.output,
    )
    try:
        new = _run_tasks(plan, tasks, progress)
    except (OSError, BakeError):
        raise
    except Exception as err:
        raise BakeError(f"a shard task failed: {type(err).__name__}: {err}") from err
    markers = {**done, **{m["shard_id"]: m for m in new}}
    return _commit(plan, fields, markers, started, skipped=len(done))


def _commit(
    plan: BakePlan,
    fields: list[FieldLayout],
    markers: Mapping[int, Mapping[str, Any]],
    started: float,
    *,
    skipped: int,
) -> BakeReport:
    spec = plan.spec
    ordered = [markers[s.shard_id] for s in plan.shards]
    rejections = [r for m in ordered for r in m["rejections"]]
    baked = sum(m["rows"] for m in ordered)
    if len(plan.inputs) != baked + len(rejections):
        raise BakeError(
            f"inputs {len(plan.inputs)} != baked {baked} + rejected {len(rejections)}: "
            "a shard lost track of an input"
        )
    by_reason = collections.Counter(f"{r['stage']}: {r['error_type']}" for r in rejections)
    fs, root = store_fs(spec.output, spec.output_storage_options)
    fs.pipe_file(f"{root}/{REJECTED}", table_bytes(rejected_table(rejections)))

    pixels = sum(m["pixels_per_channel"] for m in ordered)
    channel_sum = np.sum([m["channel_sum"] for m in ordered], axis=0)
    channel_sumsq = np.sum([m["channel_sumsq"] for m in ordered], axis=0)
    mean = channel_sum / max(pixels, 1)
    std = np.sqrt(np.maximum(channel_sumsq / max(pixels, 1) - mean**2, 0.0))
    stage_s = {s: float(sum(m["timings"][s] for m in ordered)) for s in STAGES}
    bytes_in = int(sum(m["bytes_in"] for m in ordered))

    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "cache_key": plan.cache_key,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "modality": spec.modality,
        "spec": spec.to_dict(),
        "rows": plan.rows,
        "counts": {"inputs": len(plan.inputs), "baked": baked, "rejected": len(rejections)},
        "rejected_by_reason": dict(by_reason),
        "fields": _field_schema(plan, fields),
        "class_names": list(plan.class_names) if plan.class_names is not None else None,
        "stats": {"mean": mean.tolist(), "std": std.tolist(), "range": [0.0, 1.0]},
        "shards": [
            {"id": m["shard_id"], "row_start": m["row_start"], "capacity": m["capacity"],
             "rows": m["rows"], "marker": shard_marker(m["shard_id"]),
             "meta": meta_part(m["shard_id"])}
            for m in ordered
        ],  # fmt: skip
        "rejected": REJECTED,
    }
    report = BakeReport(
        url=spec.output, cache_key=plan.cache_key, inputs=len(plan.inputs), baked=baked,
        rejected=len(rejections), rejected_by_reason=dict(by_reason), shards=len(ordered),
        shards_skipped=skipped, wall_s=time.perf_counter() - started, bytes_in=bytes_in,
        stage_s=stage_s,
    )  # fmt: skip
    if spec.max_rejected is not None and len(rejections) > spec.max_rejected:
        raise TooManyRejectedError(
            f"{len(rejections)} inputs rejected, more than max_rejected={spec.max_rejected}; "
            f"no manifest committed ({report.summary_line()}). The reasons are in "
            f"{spec.output}/{REJECTED}; fix the inputs or raise the limit."
        )
    commit_manifest(spec.output, manifest, spec.output_storage_options)
    logger.info("committed %s at %s: %s", MANIFEST, spec.output, report.summary_line())
    return report
