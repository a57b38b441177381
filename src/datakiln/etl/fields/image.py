"""Image fields: Pillow decode (drafted) on the host, one jit resize per shard, uint8 stored."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

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
        if present:
            out = np.zeros((len(present), *pixels.shape[1:]), np.uint8)
            resizer.resize([decoded[k] for k in present], out=out)
            pixels[present] = out
        sums = _channel_moments(pixels[present] if present else pixels[:0])
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
        from datakiln.etl.modalities.image import merge_pixel_stats

        return merge_pixel_stats(stats, spec.params.channels)


def _channel_moments(pixels: npt.NDArray[np.uint8]) -> tuple[list[float], list[float]]:
    from datakiln.etl.modalities.image import _channel_moments as moments

    if not len(pixels):
        return [0.0] * pixels.shape[-1], [0.0] * pixels.shape[-1]
    return moments(pixels)


CODEC = register_codec(ImageCodec())
