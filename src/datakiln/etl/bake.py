"""The bake job: plan, run one Dask task per shard, commit the manifest.

``bake(spec)`` is the Python API behind ``datakiln bake``. Shards whose completion marker
matches the plan are skipped, so re-running an interrupted bake finishes it, and baking the
same spec over unchanged inputs again is a no-op.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import errno
import importlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from dask.base import compute
from dask.delayed import delayed as dask_delayed

from datakiln.cache.layout import (
    FORMAT_VERSION,
    MANIFEST,
    REPORT,
    meta_part,
    rejected_table_path,
    shard_marker,
    store_fs,
)
from datakiln.cache.manifest import (
    Manifest,
    ManifestShard,
    commit_manifest,
    read_manifest,
    write_json_atomic,
)
from datakiln.cache.retries import count_retries, retries
from datakiln.errors import (
    BakeError,
    CacheFormatError,
    CacheNotFoundError,
    DatakilnError,
    OutputError,
    SpecError,
    TooManyRejectedError,
)
from datakiln.etl.lease import StoreLease
from datakiln.etl.local_pool import local_cpus, start_method, worker_pool
from datakiln.etl.modalities import get_modality
from datakiln.etl.plan import (
    BakePlan,
    PreviousBake,
    cache_key,
    generation_key,
    list_files,
    plan_files,
)
from datakiln.etl.plan_records import plan_records
from datakiln.etl.shard import bake_shard
from datakiln.etl.spec import BakeSpec
from datakiln.etl.task import DedupStep, ShardMarker, ShardPlan, ShardTask, TaskSteps
from datakiln.readers.listing import InputFile, access_hint
from datakiln.readers.rejections import STAGE_DEDUP, STAGE_FILTER
from datakiln.writers.marker import read_marker
from datakiln.writers.parquet import rejected_table, table_bytes
from datakiln.writers.zarr_region import FieldLayout, prepare_arrays

logger = logging.getLogger(__name__)

STAGES = ("fetch", "decode", "kernel", "write")


@dataclass(frozen=True, kw_only=True)
class BakeReport:
    """What a bake did; ``inputs == baked + rejected`` always holds.

    ``blank`` counts the rejected inputs that held nothing (``Rejection.blank``: blank
    lines, empty files, null or whitespace-only values) apart from the broken ones; they are
    part of ``rejected``, so ``rejected - blank`` inputs were broken.
    """

    url: str
    cache_key: str
    inputs: int
    baked: int
    rejected: int
    rejected_by_reason: Mapping[str, int] = field(default_factory=dict)
    blank: int = 0
    shards: int = 0
    shards_skipped: int = 0
    up_to_date: bool = False
    wall_s: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    kernel_shapes: int = 0
    stage_s: Mapping[str, float] = field(default_factory=dict)
    retries: int = 0  # object-store requests retried (throttling, 5xx, resets, timeouts)
    # rows the spec's filters left out, and copies dedup rejected (both part of ``rejected``)
    filtered: int = 0
    duplicates: int = 0

    def summary_line(self) -> str:
        """``inputs N = baked B + rejected R``, the line every bake ends with."""
        line = f"inputs {self.inputs} = baked {self.baked} + rejected {self.rejected}"
        if self.blank:
            line += f" ({self.blank} blank, {self.rejected - self.blank} broken)"
        if self.filtered or self.duplicates:
            line += f" ({self.filtered} filtered, {self.duplicates} duplicates)"
        return line

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: what ``report.json`` holds and ``datakiln bake --json`` prints."""
        return {
            "url": self.url,
            "cache_key": self.cache_key,
            "inputs": self.inputs,
            "baked": self.baked,
            "rejected": self.rejected,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "blank": self.blank,
            "shards": self.shards,
            "shards_skipped": self.shards_skipped,
            "up_to_date": self.up_to_date,
            "wall_s": self.wall_s,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "kernel_shapes": self.kernel_shapes,
            "stage_s": dict(self.stage_s),
            "retries": self.retries,
            "filtered": self.filtered,
            "duplicates": self.duplicates,
        }


ProgressFn = Callable[[Mapping[str, Any]], None]


class _Tally:
    """Turns finished shard markers into progress events for the caller's ``progress``."""

    def __init__(self, plan: BakePlan, tasks: list[ShardTask], progress: ProgressFn | None):
        self.progress = progress
        self.event = {
            "inputs_total": sum(t.shard.capacity for t in tasks),
            "inputs_done": 0,
            "baked": 0,
            "rejected": 0,
            "shards_total": len(tasks),
            "shards_done": 0,
        }

    def __call__(self, marker: ShardMarker) -> None:
        e = self.event
        e["inputs_done"] += marker.capacity
        e["baked"] += marker.rows
        e["rejected"] += len(marker.rejections)
        e["shards_done"] += 1
        if self.progress is not None:
            self.progress(dict(e))


def _fields(plan: BakePlan) -> list[FieldLayout]:
    modality = get_modality(plan.spec.modality)
    return modality.fields(
        plan.spec, plan.generation, plan.zarr_shard_rows, plan.class_names is not None
    )


def _user_steps(plan: BakePlan, fields: list[FieldLayout]) -> tuple[list[FieldLayout], TaskSteps]:
    """The stored fields after the spec's transforms, and the steps every shard task runs.

    Traces the user's functions (``jax.eval_shape``): one that cannot run on the stored
    batch, or returns the wrong batch length, fails here, before any shard starts.
    """
    spec = plan.spec
    if not (spec.transforms or spec.filters or spec.dedup):
        return fields, TaskSteps()
    from datakiln.etl.filters import plan_filters
    from datakiln.etl.steps import task_steps
    from datakiln.etl.transforms import input_views, plan_layouts

    views = input_views(get_modality(spec.modality).transforms(spec), fields)
    layouts, outputs = plan_layouts(spec.transforms, fields, plan.generation, views)
    plan_filters(spec.filters, layouts, views)
    return layouts, task_steps(spec, outputs, views)


def _field_schema(plan: BakePlan, fields: list[FieldLayout]) -> dict[str, Any]:
    transforms = get_modality(plan.spec.modality).transforms(plan.spec)
    base = {f.name: (f.dtype, f.sample_shape) for f in _fields(plan)}
    schema = {}
    for f in fields:
        entry = schema[f.name] = f.to_dict(plan.rows)
        # a user transform's output is read as it returned it, unless it kept the stored
        # field's dtype and shape (then the field still means what it meant)
        same = base.get(f.name) == (f.dtype, f.sample_shape)
        entry["transform"] = transforms.get(f.name) if same else None
    return schema


def _read_previous(spec: BakeSpec) -> tuple[dict[str, Any] | None, PreviousBake | None]:
    """The committed manifest, and what an incremental plan needs when it is of our generation."""
    manifest = _read_committed(spec)
    return manifest, _previous_bake(spec, manifest)


def _read_committed(spec: BakeSpec) -> dict[str, Any] | None:
    """The committed manifest at the output, or None (none, or one a bake replaces)."""
    try:
        return read_manifest(spec.output, spec.output_storage_options)
    except CacheNotFoundError:
        return None
    except CacheFormatError as err:  # an unreadable old manifest is replaced, not fatal
        logger.warning("ignoring the committed manifest at %s: %s", spec.output, err)
        return None


def _previous_bake(spec: BakeSpec, manifest: dict[str, Any] | None) -> PreviousBake | None:
    """What an incremental plan needs from the committed version (its shards' markers).

    ``None`` when there is none, or it is not of our generation.
    """
    if manifest is None or manifest.get("generation_key") != generation_key(spec):
        return None
    fs, root = store_fs(spec.output, spec.output_storage_options)
    gen = manifest["generation"]
    shards = []
    for entry in manifest["shards"]:
        marker = read_marker(fs, root, gen, entry["id"])
        if marker is None:
            raise CacheFormatError(
                f"{spec.output}: the marker of committed shard {entry['id']} is missing; run "
                "`datakiln verify` and bake into a fresh output"
            )
        shards.append(ShardPlan.from_dict(marker["shard"]))
    previous = PreviousBake(
        version=manifest["version"],
        cache_key=manifest["cache_key"],
        shards=tuple(shards),
        class_names=tuple(manifest["class_names"]) if manifest.get("class_names") else None,
        rows=manifest["rows"],
        next_shard_id=manifest["next_shard_id"],
        label_classes={k: tuple(v) for k, v in (manifest.get("label_classes") or {}).items()},
    )
    return previous


def _plan(
    spec: BakeSpec, previous: PreviousBake | None, inputs: tuple[InputFile, ...] | None = None
) -> BakePlan:
    """The next version's plan: records bakes plan records, the others files.

    ``inputs``: the files, already listed.
    """
    if spec.modality == "records":
        return plan_records(spec, previous)
    return plan_files(spec, previous, inputs=inputs)


def listed_cache_key(spec: BakeSpec) -> str:
    """The cache key ``bake(spec)`` would commit, over the inputs as listed now.

    File modalities list and hash only: planning shards (for text, detecting each file's
    encoding) would not change the key.
    """
    if spec.modality == "records":
        return plan_records(spec, None).cache_key
    return cache_key(spec, list_files(spec))


def _prepare_store(plan: BakePlan, fields: list[FieldLayout]) -> dict[int, ShardMarker]:
    """Make the arrays ready; return the markers of every live shard that is already done."""
    spec = plan.spec
    fs, root = store_fs(spec.output, spec.output_storage_options)
    attributes = {
        "datakiln": {"generation_key": plan.generation_key, "format_version": FORMAT_VERSION}
    }
    try:
        prepare_arrays(spec.output, spec.output_storage_options, fields, plan.rows, attributes)
    except OSError as err:
        raise OutputError(f"cannot write the output {spec.output!r}: {err}") from err
    done: dict[int, ShardMarker] = {}
    for shard in plan.shards:
        marker = read_marker(fs, root, plan.generation, shard.shard_id)
        if (
            marker is not None
            and marker.get("generation_key") == plan.generation_key
            and marker.get("fingerprint") == shard.fingerprint
        ):
            done[shard.shard_id] = ShardMarker.from_dict(marker)
    return done


def _run_distributed(
    client: Any, tasks: list[ShardTask], on_done: Callable[[ShardMarker], None]
) -> list[ShardMarker]:
    """Submit every shard task to a ``distributed`` client; report each as it finishes.

    A task whose worker dies is rescheduled by the scheduler; shard tasks are idempotent (they
    rewrite the same objects), so a retry neither loses nor duplicates rows.
    """
    from distributed import as_completed

    link = getattr(client, "dashboard_link", None)
    if link:
        logger.info("Dask dashboard: %s", link)
    if tasks and tasks[0].steps:
        _ship_user_code(client, tasks[0].steps)
    futures = [
        client.submit(
            bake_shard,
            task.to_dict(),
            key=f"datakiln-shard-{task.shard.shard_id}-{task.generation_key[:8]}",
            pure=False,
            retries=2,
        )
        for task in tasks
    ]
    results = []
    # distributed leaves as_completed, Client and LocalCluster unannotated
    for future in as_completed(futures):  # type: ignore[no-untyped-call]
        marker = ShardMarker.from_dict(future.result())
        results.append(marker)
        on_done(marker)
    return results


def _ship_user_code(client: Any, steps: TaskSteps) -> None:
    """Make the cluster's workers run the user's code the bake was planned with.

    Workers that cannot import a module get it shipped (``Client.upload_file``: the module's
    ``.py`` file, or its top-level package as a ``.zip``). A worker still without it, or with
    other code, fails the bake here, in one line, before any shard starts.
    """
    import tempfile

    from datakiln.etl.user_code import module_archive, worker_identities

    wanted = {
        s["function"]: {"source": s["source"], "module": s["module"]}
        for s in [*steps.get("transforms", ()), *steps.get("filters", ())]
        if "function" in s
    }
    if not wanted:
        return
    refs = sorted(wanted)

    def problems() -> dict[str, str]:
        found = client.run(worker_identities, refs)
        bad = {}
        for worker, identities in found.items():
            for ref in refs:
                got = identities.get(ref)
                if isinstance(got, str):
                    bad[ref] = f"worker {worker} cannot import it ({got})"
                elif got != wanted[ref]:
                    bad[ref] = f"worker {worker} has other code for it"
        return bad

    bad = problems()
    if bad:
        with tempfile.TemporaryDirectory() as folder:
            shipped = set()
            for ref in bad:
                path = module_archive(ref.partition(":")[0], folder)
                if path is not None and path not in shipped:
                    client.upload_file(path)
                    shipped.add(path)
        bad = problems()
    if bad:
        ref, why = next(iter(bad.items()))
        raise BakeError(
            f"user code {ref}: {why}; install its module on every worker (or make it a .py "
            "file or package that can be shipped); no shard was started"
        )


def _bake_shard_json(task: str) -> dict[str, Any]:
    return bake_shard(json.loads(task))


# Dask's local schedulers, passed as functions: named by a string, Dask first imports
# ``distributed`` to look for a default client (0.2 s of every local bake).
_LOCAL_GETS: dict[str, Callable[[], Callable[..., Any]]] = {
    "threads": lambda: importlib.import_module("dask.threaded").get,
    "processes": lambda: importlib.import_module("dask.multiprocessing").get,
    "synchronous": lambda: importlib.import_module("dask.local").get_sync,
}


def _local_scheduler(spec: BakeSpec, shards: int, *, can_fork: bool = True) -> str:
    """The local Dask scheduler a bake of ``shards`` shards runs on (``spec.scheduler``).

    ``auto`` means the modality's choice when there are several CPUs and shards: worker
    processes for images (threads of one process share its GIL), threads for text and audio
    (their kernels run outside it), when this process can fork them (``can_fork``). Else
    threads, which alone reach a ``memory://`` store.
    """
    in_process = [u for u in (*spec.sources, spec.output) if u.startswith("memory://")]
    if spec.scheduler == "processes" and in_process:
        raise SpecError(
            f"{in_process[0]!r} exists in this process only, so worker processes cannot reach "
            "it; bake it with scheduler 'threads'"
        )
    if spec.scheduler != "auto":
        return spec.scheduler
    if local_cpus() > 1 and shards > 1 and not in_process:
        choice = get_modality(spec.modality).local_scheduler
        # Workers from a fork server cost each bake about a second to start (imports, first
        # conversions): more than threads lose on most bakes, so ``auto`` only forks.
        return "threads" if choice == "processes" and not can_fork else choice
    return "threads"


def _uses_cluster(spec: BakeSpec) -> bool:
    return "://" in spec.scheduler or (
        spec.workers is not None and spec.scheduler in ("auto", "threads")
    )


def _worker_pool(
    spec: BakeSpec, shards: int, parked: tuple[threading.Thread, ...]
) -> contextlib.AbstractContextManager[Any]:
    """The process pool for a ``processes`` bake, else nothing."""
    if _uses_cluster(spec) or not shards:
        return contextlib.nullcontext()
    # Only ``auto`` asks whether this process can fork now (an explicit choice is kept).
    can_fork = spec.scheduler != "auto" or start_method(parked) == "fork"
    if _local_scheduler(spec, shards, can_fork=can_fork) != "processes":
        return contextlib.nullcontext()
    modality = get_modality(spec.modality)
    modules = ("datakiln.etl.shard", *modality.worker_modules)
    return worker_pool(min(local_cpus(), shards), modules, parked=parked)


def _worker_log_level() -> int | bool:
    """What a local cluster's workers log: errors only unless ``distributed`` logs more here.

    At shutdown a worker's last heartbeat can meet the closing scheduler, and it logs that as
    a warning with a traceback: noise for a bake that succeeded. ``-v`` shows everything.
    """
    if logging.getLogger("distributed").getEffectiveLevel() < logging.WARNING:
        return False  # leave the workers' logging as configured
    return logging.ERROR


def _run_tasks(
    plan: BakePlan,
    tasks: list[ShardTask],
    on_done: Callable[[ShardMarker], None],
    pool: Any = None,
) -> list[ShardMarker]:
    """Run the shard tasks on the scheduler the spec names (``pool``: its process pool)."""
    spec = plan.spec
    if not tasks:
        return []
    if "://" in spec.scheduler:
        from distributed import Client

        try:
            client = Client(spec.scheduler, timeout="20s")  # type: ignore[no-untyped-call]
        except OSError as err:
            raise BakeError(
                f"cannot reach the Dask scheduler at {spec.scheduler}: {err}; check the address "
                "and that `dask scheduler` is running"
            ) from err
        with client:
            return _run_distributed(client, tasks, on_done)
    if _uses_cluster(spec):
        from distributed import Client, LocalCluster

        with (
            LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=spec.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=_worker_log_level(),
            ) as cluster,
            Client(cluster) as client,  # type: ignore[no-untyped-call]
        ):
            return _run_distributed(client, tasks, on_done)

    from dask.callbacks import Callback

    def posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if isinstance(result, dict) and "shard_id" in result:
            on_done(ShardMarker.from_dict(result))

    # Tasks travel as JSON text: Dask walks dict and list arguments looking for collections,
    # which cost ~0.1 ms an input; a string it leaves alone.
    delayed = [dask_delayed(_bake_shard_json, pure=False)(json.dumps(t.to_dict())) for t in tasks]
    # ``auto`` runs on processes exactly when it started a pool for them.
    scheduler = "processes" if pool is not None else _local_scheduler(spec, 0)
    options: dict[str, Any] = {}
    if scheduler == "processes":
        # One task at a time per worker: shards cost about the same, and Dask's default
        # batches of six leave one worker finishing alone at the end.
        options = {"pool": pool, "chunksize": 1}
    # dask leaves Callback and compute unannotated
    with Callback(posttask=posttask):  # type: ignore[no-untyped-call]
        try:
            results = compute(*delayed, scheduler=_LOCAL_GETS[scheduler](), **options)  # type: ignore[no-untyped-call]
            return [ShardMarker.from_dict(m) for m in results]
        except BrokenProcessPool as err:
            raise BakeError(
                f"a bake worker process died ({err}); was it killed or out of memory? Finished "
                "shards are kept: run the same command again to resume"
            ) from err


@dataclass(frozen=True, kw_only=True)
class PlanSummary:
    """What ``bake`` would do now, without doing it (``datakiln plan`` / ``--dry-run``).

    Attributes:
        url: The cache the spec writes.
        up_to_date: The committed cache already holds what the spec asks for.
        inputs: Inputs the sources list now.
        shards: Shards of the plan.
        shards_done: Shards whose completion marker matches, which a bake skips.
        new_inputs: Inputs not in the committed version.
        changed_inputs: Inputs of the committed version that changed since.
        removed_inputs: Inputs of the committed version the sources no longer list.
        key_changes: Why the cache key differs from the committed one, one reason each.
    """

    url: str
    up_to_date: bool
    inputs: int
    shards: int
    shards_done: int
    new_inputs: int
    changed_inputs: int
    removed_inputs: int
    key_changes: tuple[str, ...]

    def lines(self) -> list[str]:
        """What ``datakiln plan`` prints."""
        if self.up_to_date:
            return [f"cache at {self.url} is up to date: {self.inputs} inputs, nothing to do"]
        out = [
            f"{self.inputs} inputs: {self.new_inputs} new, {self.changed_inputs} changed, "
            f"{self.removed_inputs} removed since the committed version",
            f"{self.shards} shards: {self.shards_done} already done, "
            f"{self.shards - self.shards_done} to bake",
        ]
        out += [f"cache key differs: {reason}" for reason in self.key_changes]
        return out


def _key_changes(current: Mapping[str, Any] | None, plan: BakePlan) -> tuple[str, ...]:
    if current is None:
        return ("no committed cache yet",)
    reasons = []
    if current.get("format_version") != FORMAT_VERSION:
        reasons.append(f"format version {current.get('format_version')} -> {FORMAT_VERSION}")
    old = current.get("spec", {})
    steps = plan.spec.steps_key()
    if steps or current.get("user_steps"):
        from datakiln.etl.steps import describe_changes

        reasons += describe_changes(current.get("user_steps") or {}, steps)
    for name, value in plan.spec.key_dict().items():
        if name in steps:  # compared above, by code identity
            continue
        before = old.get(name)
        if isinstance(value, dict) and isinstance(before, dict):
            reasons += [
                f"{name}.{k}: {before.get(k)!r} -> {v!r}"
                for k, v in value.items()
                if before.get(k) != v
            ]
        elif before != value:
            reasons.append(f"{name}: {before!r} -> {value!r}")
    if not reasons and current.get("generation_key") != plan.generation_key:
        # the same parameters, another identity: a tokenizer rule, the encoding detector, ...
        entries = getattr(get_modality(plan.spec.modality), "manifest_entries", None)
        identity = entries(plan.spec) if entries is not None else {}
        reasons += [
            f"{name}: {current.get(name)!r} -> {value!r}"
            for name, value in identity.items()
            if current.get(name) != value
        ]
    c = plan.changes
    if plan.previous is not None and (c.new or c.changed or c.removed):
        reasons.append(f"inputs: {c.new} new, {c.changed} changed, {c.removed} removed")
        reasons += list(c.examples)
    elif plan.previous is None and not reasons:
        reasons.append("inputs differ from the committed listing")
    return tuple(reasons)


def plan_only(spec: BakeSpec) -> PlanSummary:
    """Say what ``bake(spec)`` would do; reads the store, writes nothing."""
    current, previous = _read_previous(spec)
    plan = _plan(spec, previous)
    fs, root = store_fs(spec.output, spec.output_storage_options)
    done = 0
    for shard in plan.shards:
        marker = read_marker(fs, root, plan.generation, shard.shard_id)
        if marker is not None and marker.get("fingerprint") == shard.fingerprint:
            done += 1
    up_to_date = current is not None and current["cache_key"] == plan.cache_key
    return PlanSummary(
        url=spec.output,
        up_to_date=up_to_date,
        inputs=len(plan.inputs),
        shards=len(plan.shards),
        shards_done=done,
        new_inputs=plan.changes.new,
        changed_inputs=plan.changes.changed,
        removed_inputs=plan.changes.removed,
        key_changes=() if up_to_date else _key_changes(current, plan),
    )


# A full disk, a quota, a file-size limit: the store cannot take more bytes.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@contextlib.contextmanager
def _no_space_is_one_line(url: str) -> Iterator[None]:
    """Out of space anywhere in the bake: one line naming the store; nothing was committed."""
    try:
        yield
    except OSError as err:
        cause = err if err.errno in _NO_SPACE else err.__cause__
        if not isinstance(cause, OSError) or cause.errno not in _NO_SPACE:
            raise
        raise OutputError(
            f"out of space writing {url} ({cause.strerror or cause}); nothing was committed and "
            "finished shards are kept: free space, then run the same command again to resume"
        ) from err


@contextlib.contextmanager
def _released(lease: StoreLease) -> Iterator[None]:
    try:
        yield
    finally:
        lease.release()


def bake(
    spec: BakeSpec,
    *,
    progress: ProgressFn | None = None,
    lease_wait_s: float = 0.0,
    jax_cache_dir: str | None = None,
    force_unlock: bool = False,
) -> BakeReport:
    """Bake ``spec`` into its output cache and return what happened.

    A bake of unchanged inputs and spec does nothing (``up_to_date``); one that was killed
    resumes, skipping the shards whose markers are complete.

    Args:
        spec: What to read, how to preprocess it and where to write it.
        progress: Called as shards finish with a mapping of ``inputs_done``,
            ``inputs_total``, ``shards_done``, ``shards_total`` and ``rejected``.
        lease_wait_s: How long to wait for another bake of the same store to finish.
        jax_cache_dir: A persistent JAX compilation cache for every worker to share.
        force_unlock: Take the store's lease over even if another bake holds it (with a
            warning naming the holder).

    Returns:
        The counts, bytes and stage times; also written to ``report.json`` beside the cache.

    Raises:
        SourceError: A source names nothing readable.
        OutputError: The output cannot be written.
        LeaseHeldError: Another bake is writing the same store (after ``lease_wait_s``).
        TooManyRejectedError: More inputs were rejected than ``spec.max_rejected``; the shards
            stay on disk (a re-run with a higher limit commits at once) but no manifest is
            written.
        BakeError: A shard task failed for a reason other than one bad input.
    """
    started = time.perf_counter()
    count_retries()
    retries_before = retries()
    fs, root = store_fs(spec.output, spec.output_storage_options)
    try:
        fs.makedirs(root, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the output {spec.output!r}: {err}") from err
    lease = StoreLease(
        spec.output, spec.output_storage_options, wait_s=lease_wait_s, force=force_unlock
    )
    try:
        lease.acquire()
    except DatakilnError:
        raise
    except Exception as err:  # the first write to the store: credentials, permissions
        raise OutputError(access_hint(spec.output, err, "write")) from err
    with _released(lease), _no_space_is_one_line(spec.output):
        current = _read_committed(spec)
        inputs = None
        if current is not None and spec.modality != "records":
            # An unchanged listing needs nothing more: not the markers of every committed
            # shard, nor a plan (a million inputs: 11 of 25 s, and half the memory).
            inputs = list_files(spec)
            if current["cache_key"] == cache_key(spec, inputs):
                return _up_to_date(spec, current, started)
        plan = _plan(spec, _previous_bake(spec, current), inputs)
        if current is not None and current["cache_key"] == plan.cache_key:
            return _up_to_date(spec, current, started)
        fields, steps = _user_steps(plan, _fields(plan))
        with contextlib.ExitStack() as stack:
            # Workers start before anything here starts threads, with the lease's heartbeat
            # parked, so they can be forked; they warm up while the store is prepared.
            with lease.paused():
                pool = stack.enter_context(_worker_pool(spec, len(plan.shards), lease.threads))
            return _bake_planned(
                plan,
                fields,
                current,
                started,
                progress,
                jax_cache_dir,
                pool,
                retries_before,
                steps=steps,
            )


def _up_to_date(spec: BakeSpec, current: Mapping[str, Any], started: float) -> BakeReport:
    """The report of a bake whose committed version already holds the listed inputs."""
    counts = current["counts"]
    logger.info("cache at %s is up to date (key %s)", spec.output, current["cache_key"][:12])
    return BakeReport(
        url=spec.output,
        cache_key=current["cache_key"],
        inputs=counts["inputs"],
        baked=counts["baked"],
        rejected=counts["rejected"],
        rejected_by_reason=current.get("rejected_by_reason", {}),
        blank=counts.get("blank", 0),  # absent from older manifests
        filtered=counts.get("filtered", 0),
        duplicates=counts.get("duplicates", 0),
        shards=len(current["shards"]),
        shards_skipped=len(current["shards"]),
        up_to_date=True,
        wall_s=time.perf_counter() - started,
    )


def _bake_planned(
    plan: BakePlan,
    fields: list[FieldLayout],
    current: Mapping[str, Any] | None,
    started: float,
    progress: ProgressFn | None,
    jax_cache_dir: str | None,
    pool: Any,
    retries_before: int = 0,
    *,
    steps: TaskSteps | None = None,
) -> BakeReport:
    """Prepare the store, bake the shards not done yet, commit."""
    spec = plan.spec
    done = _prepare_store(plan, fields)
    params = _task_params(plan)

    def task_of(shard: ShardPlan, shard_steps: TaskSteps | None = None) -> ShardTask:
        return ShardTask(
            url=spec.output,
            storage_options=spec.output_storage_options,
            source_options=spec.source_options,
            generation_key=plan.generation_key,
            generation=plan.generation,
            modality=spec.modality,
            params=params,
            fields=tuple(fields),
            shard=shard,
            jax_cache_dir=jax_cache_dir,
            steps=shard_steps if shard_steps is not None else (steps or TaskSteps()),
        )

    tasks = [task_of(shard) for shard in plan.shards if shard.shard_id not in done]
    logger.info(
        "baking %d inputs into %s: %d shards, %d to bake (%d new, %d changed, %d removed inputs)",
        len(plan.inputs),
        spec.output,
        len(plan.shards),
        len(tasks),
        plan.changes.new,
        plan.changes.changed,
        plan.changes.removed,
    )
    try:
        new = _run_tasks(plan, tasks, _Tally(plan, tasks, progress), pool)
        if spec.dedup:
            new = _dedup_again(plan, {**done, **{m.shard_id: m for m in new}}, new, task_of, pool)
    except DatakilnError:
        raise
    except OSError as err:
        if err.errno in _NO_SPACE:
            raise
        raise BakeError(
            f"a shard task failed: {type(err).__name__}: {err}; finished shards are kept, "
            "run the same command again to resume"
        ) from err
    except Exception as err:
        raise BakeError(
            f"a shard task failed: {type(err).__name__}: {err}; finished shards are kept, "
            "run the same command again to resume"
        ) from err
    markers = {**done, **{m.shard_id: m for m in new}}
    store_version = current["version"] if current is not None else 0
    return _commit(
        plan,
        fields,
        markers,
        started,
        skipped=len(done),
        store_version=store_version,
        new_markers=new,
        retries_before=retries_before,
    )


def _dedup_again(
    plan: BakePlan,
    markers: Mapping[int, ShardMarker],
    new: list[ShardMarker],
    task_of: Callable[..., ShardTask],
    pool: Any,
) -> list[ShardMarker]:
    """Bake again, without their copies, the shards holding copies of earlier rows.

    Copies are found by ``etl.dedup`` over this version's shards in order; returns the new
    markers with those of the shards baked again replaced.
    """
    from datakiln.etl.dedup import find_duplicates

    spec = plan.spec
    if spec.dedup is None:  # called for dedup bakes only
        return new
    ordered = [markers[s.shard_id] for s in plan.shards]
    fixed = {s.shard_id for s in plan.shards if s.shard_id not in plan.pending}
    drops = find_duplicates(ordered, spec.dedup, spec.dedup_distance, spec.modality, fixed)
    again = []
    for shard in plan.shards:
        if shard.shard_id in fixed:
            continue
        wanted = drops.get(shard.shard_id, {})
        applied = (markers[shard.shard_id].extra.get("dedup") or {}).get("dropped") or {}
        if set(wanted) != set(applied):
            steps = task_of(shard).steps
            dedup: DedupStep = {**steps["dedup"], "drops": wanted}
            again.append(task_of(shard, {**steps, "dedup": dedup}))
    if not again:
        return new
    logger.info("dedup: baking %d shards again without their copies", len(again))
    redone = {m.shard_id: m for m in _run_tasks(plan, again, lambda m: None, pool)}
    kept = [m for m in new if m.shard_id not in redone]
    return kept + list(redone.values())


def _task_params(plan: BakePlan) -> dict[str, Any]:
    params: dict[str, Any] = plan.spec.params.to_dict()
    if plan.label_classes:  # records: the class names each label field maps to ids
        params["classes"] = {k: list(v) for k, v in plan.label_classes.items()}
    return params


def _class_counts(plan: BakePlan, markers: list[ShardMarker]) -> list[int] | None:
    if plan.class_names is None:
        return None
    per_shard = [np.asarray(m.stats.get("label_counts", []), np.int64) for m in markers]
    # integer ids without names: as many counts as the largest id seen
    width = max([len(plan.class_names), *(len(c) for c in per_shard)])
    counts = np.zeros(width, dtype=np.int64)
    for shard_counts in per_shard:
        counts[: len(shard_counts)] += shard_counts
    return counts.tolist()


def _commit(
    plan: BakePlan,
    fields: list[FieldLayout],
    markers: Mapping[int, ShardMarker],
    started: float,
    *,
    skipped: int,
    store_version: int,
    new_markers: list[ShardMarker],
    retries_before: int = 0,
) -> BakeReport:
    spec = plan.spec
    ordered = [markers[s.shard_id] for s in plan.shards]
    rejections = [r for m in ordered for r in m.rejections]
    baked = sum(m.rows for m in ordered)
    modality = get_modality(spec.modality)
    lost = [
        m.shard_id
        for m in ordered
        if getattr(modality, "one_sample_per_input", True)
        and m.rows + len(m.rejections) != m.inputs
    ]
    if lost:
        raise BakeError(
            f"shards {lost} lost track of inputs: baked + rejected != inputs; nothing committed"
        )
    inputs = baked + len(rejections)
    filtered = sum(r.stage == STAGE_FILTER for r in rejections)
    duplicates = sum(r.stage == STAGE_DEDUP for r in rejections)
    by_reason = collections.Counter(r.reason for r in rejections)
    blank = sum(r.blank for r in rejections)
    version = store_version + 1
    rejected_path = rejected_table_path(plan.generation, version)
    fs, root = store_fs(spec.output, spec.output_storage_options)
    fs.pipe_file(
        f"{root}/{rejected_path}", table_bytes(rejected_table([r.to_dict() for r in rejections]))
    )

    stats = modality.merge_stats(spec, ordered)
    stage_s = {s: float(sum(m.timings[s] for m in ordered)) for s in STAGES}
    if any("steps" in m.timings for m in ordered):  # the user's transforms, filters, dedup
        stage_s["steps"] = float(sum(m.timings.get("steps", 0.0) for m in ordered))
    bytes_in = int(sum(m.bytes_in for m in ordered))
    bytes_out = int(sum(m.bytes_out for m in ordered))
    shapes = {tuple(shape) for m in new_markers for shape in m.kernel_shapes}

    entries = getattr(modality, "manifest_entries", None)
    class_counts = _class_counts(plan, ordered)
    manifest = Manifest(
        cache_key=plan.cache_key,
        generation_key=plan.generation_key,
        generation=plan.generation,
        version=version,
        next_shard_id=plan.next_shard_id,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        modality=spec.modality,
        spec=spec.to_dict(),
        rows=plan.rows,
        counts={
            "inputs": inputs,
            "baked": baked,
            "rejected": len(rejections),
            "blank": blank,
            **({"filtered": filtered, "duplicates": duplicates} if spec.steps_key() else {}),
        },
        rejected_by_reason=dict(by_reason),
        fields=_field_schema(plan, fields),
        class_names=plan.class_names,
        class_counts=tuple(class_counts) if class_counts is not None else None,
        label_classes=plan.label_classes or None,
        stats=stats,
        shards=tuple(
            ManifestShard(
                id=m.shard_id,
                row_start=m.row_start,
                capacity=m.capacity,
                rows=m.rows,
                marker=shard_marker(plan.generation, m.shard_id),
                meta=meta_part(plan.generation, m.shard_id),
            )
            for m in ordered
        ),
        rejected=rejected_path,
        # tokenizer identity, per-sample constants, record fields, ...
        entries={
            **(entries(spec) if entries is not None else {}),
            # the user steps' code identity, which ``plan`` compares to name what changed
            **({"user_steps": spec.steps_key()} if spec.steps_key() else {}),
        },
    )
    report = BakeReport(
        url=spec.output,
        cache_key=plan.cache_key,
        inputs=inputs,
        baked=baked,
        rejected=len(rejections),
        rejected_by_reason=dict(by_reason),
        blank=blank,
        shards=len(ordered),
        shards_skipped=skipped,
        wall_s=time.perf_counter() - started,
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        kernel_shapes=len(shapes),
        stage_s=stage_s,
        filtered=filtered,
        duplicates=duplicates,
    )
    if spec.max_rejected is not None and len(rejections) > spec.max_rejected:
        raise TooManyRejectedError(
            f"{len(rejections)} inputs rejected, more than max_rejected={spec.max_rejected}; "
            f"no manifest committed ({report.summary_line()}). The reasons are in "
            f"{spec.output}/{rejected_path}; fix the inputs or raise the limit."
        )
    commit_manifest(spec.output, manifest.to_dict(), spec.output_storage_options)
    # This process's retries, and those of worker processes (each counted in its markers).
    elsewhere = [m.extra.get("retries", {}) for m in new_markers]
    retried = retries() - retries_before
    retried += sum(r.get("count", 0) for r in elsewhere if r.get("pid") != os.getpid())
    report = dataclasses.replace(report, wall_s=time.perf_counter() - started, retries=retried)
    write_json_atomic(fs, f"{root}/{REPORT}", report.to_dict())
    logger.info("committed %s at %s: %s", MANIFEST, spec.output, report.summary_line())
    return report
