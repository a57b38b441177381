"""One bake shard of images: fetch, decode, resize in one jit kernel, write, mark complete.

``bake_image_shard`` is the Dask task. It takes and returns plain JSON data, opens the store
itself, and turns every failure of one input into a rejection record, so a bad file never
kills the shard. Its writes cover whole Zarr shard objects, so a retried task rewrites the same
bytes and two tasks never touch one object.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa

from datakiln.cache.fingerprint import content_hash
from datakiln.cache.layout import meta_part, store_fs
from datakiln.etl.kernels.image import ImageResizer
from datakiln.etl.plan import ShardPlan
from datakiln.etl.spec import ImageParams
from datakiln.readers.image import DecodedImage, ImageDecodeError, decode_image
from datakiln.writers.marker import write_marker
from datakiln.writers.parquet import meta_table, table_bytes
from datakiln.writers.zarr_region import FieldLayout, object_keys, write_rows

logger = logging.getLogger(__name__)

# Decode threads per shard task: Pillow releases the GIL while decoding.
DECODE_THREADS = 2

IMAGE_META_SCHEMA = pa.schema(
    [("row", pa.int64()), ("uri", pa.string()), ("content_hash", pa.string()),
     ("width", pa.int32()), ("height", pa.int32()), ("mode", pa.string()),
     ("format", pa.string()), ("label", pa.int32())]
)  # fmt: skip


def _rejection(uri: str, stage: str, err: BaseException, shard_id: int) -> dict[str, Any]:
    return {"uri": uri, "stage": stage, "error_type": type(err).__name__,
            "message": str(err) or type(err).__name__, "shard": shard_id}  # fmt: skip


def _fetch(shard: ShardPlan, storage_options: Mapping[str, Any]) -> list[bytes | BaseException]:
    """Bytes of every input, or the exception that fetching it raised (kept per input)."""
    if not shard.inputs:
        return []
    fs, _ = fsspec.core.url_to_fs(shard.inputs[0].uri, **dict(storage_options))
    paths = [fs._strip_protocol(i.uri) for i in shard.inputs]
    got = fs.cat(paths, on_error="return")
    if not isinstance(got, dict):  # one path: fsspec returns the bytes themselves
        got = {paths[0]: got}
    return [got.get(p, FileNotFoundError(p)) for p in paths]


def _decode(data: bytes, image: ImageParams) -> DecodedImage | ImageDecodeError:
    try:
        return decode_image(
            data, representation=image.representation, height=image.height, width=image.width,
            fit=image.fit, max_pixels=image.max_pixels,
        )  # fmt: skip
    except ImageDecodeError as err:
        return err


def _use_compilation_cache(path: str) -> None:
    """Point this process's JAX at a persistent compilation cache shared by every worker.

    A worker then compiles each kernel shape once ever, not once per process start.
    """
    import jax

    if jax.config.jax_compilation_cache_dir != path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def bake_image_shard(task: Mapping[str, Any]) -> dict[str, Any]:
    """Bake one shard described by plain data; return its completion marker.

    ``task`` holds ``url``, ``storage_options`` (output), ``source_options``,
    ``generation_key``, ``generation`` (folder), ``image`` (ImageParams dict), ``fields``
    (``FieldLayout.to_task()`` of images and optional labels) and ``shard`` (ShardPlan dict).
    """
    if task.get("jax_cache_dir"):
        _use_compilation_cache(task["jax_cache_dir"])
    shard = ShardPlan.from_dict(task["shard"])
    image = ImageParams(**task["image"])
    url, out_options = task["url"], task.get("storage_options") or {}
    fields = {f["name"]: FieldLayout.from_task(f) for f in task["fields"]}
    generation = task["generation"]
    timings = dict.fromkeys(("fetch", "decode", "kernel", "write"), 0.0)
    rejections: list[dict[str, Any]] = []

    t0 = time.perf_counter()
    fetched = _fetch(shard, task.get("source_options") or {})
    t1 = time.perf_counter()
    timings["fetch"] = t1 - t0

    good: list[tuple[int, bytes]] = []
    for k, data in enumerate(fetched):
        if isinstance(data, BaseException):
            rejections.append(_rejection(shard.inputs[k].uri, "fetch", data, shard.shard_id))
        else:
            good.append((k, data))
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        decoded = list(pool.map(lambda kd: _decode(kd[1], image), good))
    kept: list[tuple[int, bytes, DecodedImage]] = []
    for (k, data), result in zip(good, decoded, strict=True):
        if isinstance(result, ImageDecodeError):
            rejections.append(_rejection(shard.inputs[k].uri, result.stage, result, shard.shard_id))
        else:
            kept.append((k, data, result))
    t2 = time.perf_counter()
    timings["decode"] = t2 - t1

    images_field = fields["images"]
    pixels = np.zeros((shard.capacity, *images_field.sample_shape), dtype=np.uint8)
    resizer = ImageResizer(height=image.height, width=image.width)
    if kept:
        resizer.resize([d for _, _, d in kept], out=pixels[: len(kept)])
    t3 = time.perf_counter()
    timings["kernel"] = t3 - t2

    n = len(kept)
    baked = pixels[:n].astype(np.float64) / 255.0
    channel_sum = baked.sum(axis=(0, 1, 2)).tolist()
    channel_sumsq = np.square(baked).sum(axis=(0, 1, 2)).tolist()
    del baked

    write_rows(url, out_options, images_field.path, shard.row_start, pixels)
    labels = None
    if "labels" in fields and shard.labels is not None:
        labels = np.zeros(shard.capacity, dtype=np.int32)
        labels[:n] = [shard.labels[k] for k, _, _ in kept]
        write_rows(url, out_options, fields["labels"].path, shard.row_start, labels)

    fs, root = store_fs(url, out_options)
    meta = meta_table(
        {
            "row": [shard.row_start + j for j in range(n)],
            "uri": [shard.inputs[k].uri for k, _, _ in kept],
            "content_hash": [content_hash(data) for _, data, _ in kept],
            "width": [d.original_size[0] for _, _, d in kept],
            "height": [d.original_size[1] for _, _, d in kept],
            "mode": [d.original_mode for _, _, d in kept],
            "format": [d.format for _, _, d in kept],
            "label": labels[:n].tolist() if labels is not None else [None] * n,
        },
        IMAGE_META_SCHEMA,
    )
    meta_bytes = table_bytes(meta)
    part = meta_part(generation, shard.shard_id)
    fs.pipe_file(f"{root}/{part}", meta_bytes)

    checksums = {part: content_hash(meta_bytes)}
    bytes_out = len(meta_bytes)
    for field in fields.values():
        for key in object_keys(field, shard.row_start, shard.capacity):
            try:
                data = fs.cat_file(f"{root}/{key}")
            except FileNotFoundError:
                checksums[key] = None  # all fill: zarr writes no object
                continue
            checksums[key] = content_hash(data)
            bytes_out += len(data)
    timings["write"] = time.perf_counter() - t3

    marker = {
        "shard_id": shard.shard_id,
        "generation_key": task["generation_key"],
        "fingerprint": shard.fingerprint,
        "shard": shard.to_dict(),
        "row_start": shard.row_start,
        "capacity": shard.capacity,
        "rows": n,
        "rejections": rejections,
        "bytes_in": sum(len(data) for _, data in good),
        "bytes_out": bytes_out,
        "channel_sum": channel_sum,
        "channel_sumsq": channel_sumsq,
        "pixels_per_channel": n * image.height * image.width,
        "label_counts": (np.bincount(labels[:n]).tolist() if labels is not None and n else []),
        "checksums": checksums,
        "timings": timings,
        # static kernel signatures used; each costs at most two compiles per process
        "kernel_shapes": sorted(list(shape) for shape in resizer.kernel_shapes),
    }
    write_marker(fs, root, generation, shard.shard_id, marker)
    logger.debug("shard %d: %d baked, %d rejected", shard.shard_id, n, len(rejections))
    return marker
