"""Images: decode with Pillow (drafted), resize a whole shard in one jit kernel, store uint8."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from datakiln.cache.fingerprint import content_hash
from datakiln.etl.fields.base import Context, FieldError
from datakiln.etl.fields.image import (
    CODEC,
    channel_moments,
    merge_pixel_stats,
    moments_of_images,
)
from datakiln.etl.modalities.base import ShardOutput, Unit, decode_all, fetch_all, rejection
from datakiln.etl.spec import BakeSpec, FieldSpec, ImageParams
from datakiln.etl.task import ShardMarker, ShardPlan
from datakiln.readers.listing import IMAGE_EXTENSIONS, InputFile
from datakiln.readers.rejections import Rejection
from datakiln.writers.zarr_region import FieldLayout

_NO_CONTEXT = Context()

META_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("content_hash", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("mode", pa.string()),
        ("format", pa.string()),
        ("label", pa.int32()),
    ]
)


class ImageModality:
    """Image bakes: one unit per file, a shard resized in one jit kernel, uint8 pixels."""

    name = "image"
    extensions = IMAGE_EXTENSIONS
    worker_modules: tuple[str, ...] = ("datakiln.etl.kernels.image", "datakiln.readers.image")
    # Its shard tasks hold the GIL for much of each image (Pillow's Python side, batch packing):
    # on several CPUs, ``scheduler='auto'`` runs them in one worker process per CPU.
    local_scheduler = "processes"

    def plan_units(self, spec: BakeSpec, inputs: Sequence[InputFile]) -> list[Unit]:
        return [Unit(input=i) for i in inputs]

    def sample_bytes(self, spec: BakeSpec) -> int:
        image = spec.image
        return image.height * image.width * image.channels

    def fields(
        self, spec: BakeSpec, generation: str, shard_rows: int, labelled: bool
    ) -> list[FieldLayout]:
        image = spec.image
        fields = [
            FieldLayout(
                "images",
                f"{generation}/images",
                "uint8",
                (image.height, image.width, image.channels),
                shard_rows,
                codec=image.stored_codec,
                quality=image.quality,
            )
        ]
        if labelled:
            fields.append(
                FieldLayout(
                    "labels", f"{generation}/labels", "int32", (), shard_rows, sharded=False
                )
            )
        return fields

    def transforms(self, spec: BakeSpec) -> dict[str, dict[str, Any] | None]:
        # uint8 on disk; the reader maps it to the range the spec promised
        scale, offset = (1 / 255, 0.0) if spec.image.normalize else (2 / 255, -1.0)
        return {
            "images": {"kind": "affine", "scale": scale, "offset": offset, "dtype": "float32"},
            "labels": None,
        }

    def bake_shard(
        self,
        shard: ShardPlan,
        spec_params: Mapping[str, Any],
        source_options: Mapping[str, Any],
        timings: dict[str, float],
    ) -> ShardOutput:
        # The decode and the kernel are the image field codec's, as in a records bake; this
        # bake adds the folder's labels and keeps its own metadata columns.
        image = dataclasses.replace(ImageParams(**spec_params), labels=None)  # labels: below
        field = FieldSpec(name="images", modality="image", params=image)
        rejections: list[Rejection] = []
        t0 = time.perf_counter()
        fetched = fetch_all(shard, source_options)
        t1 = time.perf_counter()
        timings["fetch"] = t1 - t0

        good = []
        for k, data in enumerate(fetched):
            if isinstance(data, BaseException):
                rejections.append(rejection(shard.inputs[k].uri, "fetch", data, shard.shard_id))
            else:
                good.append((k, data))

        def decode(item: tuple[int, bytes]) -> Any:
            try:
                return CODEC.decode(item[1], field, _NO_CONTEXT)
            except FieldError as err:
                return err

        decoded = decode_all(decode, good)
        kept = []
        for (k, data), result in zip(good, decoded, strict=True):
            if isinstance(result, FieldError):
                rejections.append(
                    rejection(
                        shard.inputs[k].uri, result.stage, result, shard.shard_id, result.error_type
                    )
                )
            else:
                kept.append((k, data, result))
        t2 = time.perf_counter()
        timings["decode"] = t2 - t1

        n = len(kept)
        encoded = CODEC.encode([d for _, _, d in kept], field, shard.capacity, _NO_CONTEXT)
        timings["kernel"] = time.perf_counter() - t2

        arrays: dict[str, np.ndarray | list[str]] = {"images": encoded.arrays["images"]}
        labels = None
        if shard.labels is not None:
            labels = np.zeros(shard.capacity, dtype=np.int32)
            labels[:n] = [shard.labels[k] for k, _, _ in kept]
            arrays["labels"] = labels
        meta = pa.table(
            {
                "uri": [shard.inputs[k].uri for k, _, _ in kept],
                "content_hash": [content_hash(data) for _, data, _ in kept],
                "width": encoded.meta["images_width"],
                "height": encoded.meta["images_height"],
                "mode": [d.original_mode for _, _, d in kept],
                "format": encoded.meta["images_format"],
                "label": labels[:n].tolist() if labels is not None else [None] * n,
            },
            schema=META_SCHEMA,
        )
        stats = {
            **encoded.stats,
            "label_counts": np.bincount(labels[:n]).tolist() if labels is not None and n else [],
        }
        return ShardOutput(
            rows=n,
            arrays=arrays,
            meta=meta,
            rejections=rejections,
            bytes_in=sum(len(data) for _, data in good),
            stats=stats,
            # static kernel signatures used; each costs at most two compiles per process
            extra={"kernel_shapes": sorted(encoded.kernel_shapes)},
        )

    @staticmethod
    def shard_stats(
        arrays: Mapping[str, np.ndarray | list[str]],
        n: int,
        moments: npt.NDArray[np.int64] | None = None,
    ) -> dict[str, Any]:
        """A shard's pixel moments and label counts over its first ``n`` rows.

        Computed again after filters or dedup dropped rows. ``moments``: the resize kernel's
        per-image sums of the first ``n`` rows, when those are the rows stored.
        """
        pixels, labels = np.asarray(arrays["images"]), arrays.get("labels")
        if pixels.dtype != np.uint8:  # a transform replaced them: keep moments of uint8 only
            pixels = np.zeros((0, 1, 1, pixels.shape[-1] if pixels.ndim == 4 else 1), np.uint8)
            moments = None
        if moments is not None:
            channel_sum, channel_sumsq = moments_of_images(moments[:n])
        else:
            channel_sum, channel_sumsq = channel_moments(pixels[:n])
        return {
            "channel_sum": channel_sum,
            "channel_sumsq": channel_sumsq,
            "pixels_per_channel": n * pixels.shape[1] * pixels.shape[2],
            "label_counts": np.bincount(labels[:n]).tolist() if labels is not None and n else [],
        }

    def merge_stats(self, spec: BakeSpec, markers: Sequence[ShardMarker]) -> dict[str, Any]:
        return merge_pixel_stats([m.stats for m in markers], spec.image.channels)


MODALITY = ImageModality()
