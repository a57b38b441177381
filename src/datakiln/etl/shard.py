"""The shard task: one modality's shard function, then the shared writes and the marker.

``bake_shard`` is the Dask task. It takes and returns plain JSON data, opens the store itself,
and the modality turns every failure of one input into a rejection record, so a bad file never
kills the shard. Its writes cover whole Zarr shard objects, so a retried task rewrites the same
bytes and two tasks never touch one object.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from datakiln.cache.fingerprint import CHECKSUM_ALGORITHM, content_hash
from datakiln.cache.layout import meta_part, store_fs
from datakiln.cache.retries import count_retries, retries
from datakiln.etl.modalities import get_modality
from datakiln.etl.task import ShardMarker, ShardTask
from datakiln.writers.marker import write_marker
from datakiln.writers.parquet import table_bytes
from datakiln.writers.zarr_region import write_field

logger = logging.getLogger(__name__)

# Threads a shard task writes its fields with.
WRITE_THREADS = 4


def _use_compilation_cache(path: str) -> None:
    """Point this process's JAX at a persistent compilation cache shared by every worker.

    A worker then compiles each kernel shape once ever, not once per process start.
    """
    import jax

    if jax.config.values.get("jax_compilation_cache_dir") != path:
        _set_jax_option("jax_compilation_cache_dir", path)
        _set_jax_option("jax_persistent_cache_min_compile_time_secs", 0.0)


def _set_jax_option(name: str, value: object) -> None:
    import jax

    # jax leaves Config.update unannotated
    jax.config.update(name, value)  # type: ignore[no-untyped-call]


def bake_shard(data: Mapping[str, Any]) -> dict[str, Any]:
    """Bake the shard of a ``ShardTask`` given as plain data; return its ``ShardMarker``'s data.

    Plain data in and out, so that worker processes and ``distributed`` workers exchange JSON
    types only.
    """
    task = ShardTask.from_dict(data)
    if task.jax_cache_dir:
        _use_compilation_cache(task.jax_cache_dir)
    count_retries()
    retries_before = retries()
    shard = task.shard
    url, out_options = task.url, task.storage_options
    fields = {f.name: f for f in task.fields}
    timings = dict.fromkeys(("fetch", "decode", "kernel", "write"), 0.0)
    modality = get_modality(task.modality)
    out = modality.bake_shard(shard, task.params, task.source_options, timings)
    if task.steps:
        from datakiln.etl.steps import apply_steps

        started = time.perf_counter()
        apply_steps(task, out, modality)
        timings["steps"] = time.perf_counter() - started

    started = time.perf_counter()
    checksums: dict[str, str | None] = {}
    # Fields go to separate objects: write them side by side (copies, hashes and file writes
    # release the GIL), which shortens the tail of tasks with a large field (audio).
    with ThreadPoolExecutor(min(len(fields), WRITE_THREADS)) as pool:
        written = pool.map(
            lambda f: write_field(url, out_options, f, shard.row_start, out.arrays[f.name]),
            fields.values(),
        )
        for sums in written:
            checksums.update(sums)
    fs, root = store_fs(url, out_options)
    meta = out.meta.add_column(
        0, "row", pa.array([shard.row_start + j for j in range(out.rows)], pa.int64())
    )
    meta_bytes = table_bytes(meta)
    part = meta_part(task.generation, shard.shard_id)
    fs.pipe_file(f"{root}/{part}", meta_bytes)
    checksums[part] = content_hash(meta_bytes)
    bytes_out = len(meta_bytes) + sum(
        fs.size(f"{root}/{key}") for key, value in checksums.items() if value and key != part
    )
    timings["write"] = time.perf_counter() - started

    marker = ShardMarker(
        shard_id=shard.shard_id,
        generation_key=task.generation_key,
        fingerprint=shard.fingerprint,
        shard=shard.to_dict(),
        row_start=shard.row_start,
        capacity=shard.capacity,
        inputs=len(shard.inputs),
        rows=out.rows,
        rejections=tuple(out.rejections),
        bytes_in=out.bytes_in,
        bytes_out=bytes_out,
        stats=out.stats,
        checksum_algorithm=CHECKSUM_ALGORITHM,
        checksums=checksums,
        timings=timings,
        # requests retried meanwhile by this process (exact when it runs one task at a time)
        extra={**out.extra, "retries": {"pid": os.getpid(), "count": retries() - retries_before}},
    )
    data_out = marker.to_dict()
    write_marker(fs, root, task.generation, shard.shard_id, data_out)
    logger.debug("shard %d: %d baked, %d rejected", shard.shard_id, out.rows, len(out.rejections))
    return data_out
