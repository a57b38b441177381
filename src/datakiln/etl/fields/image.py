"""Image fields: Pillow decode (drafted) on the host, one jit resize per shard, uint8 stored."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from datakiln.etl.fields import register_codec
from datakiln.etl.fields.base import Context, Encoded, FieldError
from datakiln.etl.spec import FieldSpec, ImageParams
from datakiln.writers.zarr_region import FieldLayout


class ImageCodec:
    """The codec of ``image`` fields: pixels resized as an image bake's, stored uint8."""

    modality = "image"
    media = True
    params_type = ImageParams
    worker_modules: tuple[str, ...] = ("datakiln.etl.kernels.image", "datakiln.readers.image")

    def layouts(self, spec: FieldSpec, generation: str, shard_rows: int) -> list[FieldLayout]:
        p: ImageParams = spec.params
        shape = (p.height, p.width, p.channels)
        path = f"{generation}/{spec.name}"
        return [
            FieldLayout(
                spec.name, path, "uint8", shape, shard_rows, codec=p.stored_codec, quality=p.quality
            )
        ]

    def transforms(self, spec: FieldSpec) -> dict[str, dict[str, Any] | None]:
        scale, offset = (1 / 255, 0.0) if spec.params.normalize else (2 / 255, -1.0)
        return {spec.name: {"kind": "affine", "scale": scale, "offset": offset, "dtype": "float32"}}

    def sample_bytes(self, spec: FieldSpec) -> int:
        p: ImageParams = spec.params
        return p.height * p.width * p.channels

    def identity(self, spec: FieldSpec) -> dict[str, Any]:
        return {}

    def decode(self, value: Any, spec: FieldSpec, context: Context) -> Any:
        from datakiln.readers.image import ImageDecodeError, decode_image

        p: ImageParams = spec.params
        try:
            return decode_image(
                value,
                representation=p.representation,
                height=p.height,
                width=p.width,
                fit=p.fit,
                max_pixels=p.max_pixels,
            )
        except ImageDecodeError as err:
            raise FieldError(err.stage, type(err).__name__, str(err)) from err

    def encode(
        self, decoded: Sequence[Any], spec: FieldSpec, capacity: int, context: Context
    ) -> Encoded:
        from datakiln.etl.kernels.image import ImageResizer

        p: ImageParams = spec.params
        pixels = np.zeros((capacity, p.height, p.width, p.channels), np.uint8)
        present = [k for k, d in enumerate(decoded) if d is not None]
        resizer = ImageResizer(height=p.height, width=p.width)
        moments = np.zeros((len(present), p.channels, 2), np.int64)
        if len(present) == len(decoded):  # every row has an image: resize in place
            resizer.resize(list(decoded), out=pixels[: len(present)], moments=moments)
        elif present:  # an optional field: rows without one stay zero
            out = np.zeros((len(present), *pixels.shape[1:]), np.uint8)
            resizer.resize([decoded[k] for k in present], out=out, moments=moments)
            pixels[present] = out
        sums = moments_of_images(moments)
        name = spec.name
        return Encoded(
            arrays={name: pixels},
            meta={
                f"{name}_width": [d.original_size[0] if d else None for d in decoded],
                f"{name}_height": [d.original_size[1] if d else None for d in decoded],
                f"{name}_format": [d.format if d else None for d in decoded],
            },
            stats={
                "channel_sum": sums[0],
                "channel_sumsq": sums[1],
                "pixels_per_channel": len(present) * p.height * p.width,
            },
            kernel_shapes=[list(s) for s in resizer.kernel_shapes],
        )

    def merge_stats(self, spec: FieldSpec, stats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return merge_pixel_stats(stats, spec.params.channels)


def merge_pixel_stats(stats: Sequence[Mapping[str, Any]], channels: int) -> dict[str, Any]:
    """Per-channel mean and std of pixels in [0, 1] from every shard's moments."""
    pixels = sum(s["pixels_per_channel"] for s in stats)
    total = np.sum([s["channel_sum"] for s in stats], axis=0) if stats else np.zeros(channels)
    sumsq = np.sum([s["channel_sumsq"] for s in stats], axis=0) if stats else np.zeros(channels)
    mean = total / max(pixels, 1)
    std = np.sqrt(np.maximum(sumsq / max(pixels, 1) - mean**2, 0.0))
    return {"mean": mean.tolist(), "std": std.tolist(), "range": [0.0, 1.0]}


def moments_of_images(moments: np.ndarray) -> tuple[list[float], list[float]]:
    """``channel_moments`` from the resize kernel's per-image int64 ``(N, C, 2)`` sums."""
    total = moments.sum(axis=0)  # exact integers
    return (total[:, 0] / 255.0).tolist(), (total[:, 1] / 255.0**2).tolist()


def channel_moments(pixels: np.ndarray) -> tuple[list[float], list[float]]:
    """Per channel, the sum and the sum of squares of ``pixels / 255`` (uint8 ``(..., C)``).

    From a 256-bin histogram per channel: exact, and ~10x faster than summing a float64 copy
    (which cost ~15% of a 256-image shard task).
    """
    flat = pixels.reshape(-1, pixels.shape[-1])
    counts = np.stack([np.bincount(flat[:, c], minlength=256) for c in range(flat.shape[1])])
    levels = np.arange(256, dtype=np.float64) / 255.0
    return (counts @ levels).tolist(), (counts @ np.square(levels)).tolist()


CODEC = register_codec(ImageCodec())
