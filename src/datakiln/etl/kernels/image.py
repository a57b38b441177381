"""Batched antialiased image resize, equal to Pillow's ``Image.resize(..., BILINEAR, box=...)``.

``resize_canvases`` takes a batch of images padded into one canvas shape, with the true sizes,
source boxes and output regions as data, and resamples them all at once: Pillow's triangle
filter (support scaled by the downscale factor, its window rounding and edge renormalisation,
its 22-bit fixed-point coefficients, computed on the host in float64 as Pillow does) applied as
two jit-compiled gather-and-sum passes in int32, rounded to uint8 in between, with zero weight
on the canvas padding. RGBA is premultiplied and divided back with Pillow's integer rounding.
The result is bit-identical to Pillow's, not just close.

``jax.image.scale_and_translate`` is not used: it normalises weights over the whole canvas, so
padding bleeds into the last rows and columns. Dense weight matrices were tried too: float32
products cannot break the exact ties that Pillow's fixed point resolves (a 1.25x downscale has
weights in fifths), and they cost work proportional to the canvas width.

``ImageResizer`` is the host-side driver: it sorts decoded images into canvas buckets
(``_buckets.py``), transposes the images Pillow resizes vertical pass first, fills reusable
padded batches, and calls the kernel once per batch, so a bake compiles once per bucket used
(two jit functions each), not once per image.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
import PIL

from datakiln.etl.kernels._buckets import MAX_BATCH_PIXELS, CanvasBucket, choose_bucket

if TYPE_CHECKING:
    from datakiln.readers.image import DecodedImage

__all__ = [
    "ImageResizer",
    "axis_coefficients",
    "compile_count",
    "resize_canvases",
    "resize_images",
    "vertical_first",
]


# Pillow's fixed-point precision for 8-bit resampling (Resample.c: 32 - 8 - 2 bits).
_PRECISION_BITS = 22


def axis_coefficients(
    in0: npt.NDArray[np.float32],
    in1: npt.NDArray[np.float32],
    in_size: npt.NDArray[np.integer[Any]],
    out_start: npt.NDArray[np.integer[Any]],
    out_len: npt.NDArray[np.integer[Any]],
    *,
    out_size: int,
    taps: int,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """Pillow's fixed-point resampling windows along one axis, for a batch (host, numpy).

    Output index ``o`` is position ``o - out_start`` of a resize of ``[in0, in1)`` to
    ``out_len`` samples; outside ``[out_start, out_start + out_len)`` its weights are zero.
    Input positions at or beyond ``in_size`` (the padding) get zero weight.

    Computed in float64 in the order of Pillow's ``precompute_coeffs`` (box edges as float32,
    as Pillow's C API takes them; the normalising sum accumulated left to right) and quantized
    as its ``normalize_coeffs_8bpc`` does, so the coefficients equal Pillow's. Host code on
    purpose: numpy's float64 is Pillow's double, these arrays are small (B x out x taps), and
    a jitted float64 version cost ~0.4 s of compilation per batch shape.

    Args:
        in0: float32 (B,) box start edges.
        in1: float32 (B,) box end edges.
        in_size: int (B,) image extent along the axis; 0 marks an unused slot.
        out_start: int (B,) where the output region starts along the axis.
        out_len: int (B,) the output region's length along the axis.
        out_size: Output extent.
        taps: Window length kept; must be at least Pillow's ``ksize`` of every row.

    Returns:
        coefficients: int32 (B, out_size, taps): weight * 2**22 of input ``start + k``.
        start: int32 (B, out_size): the first input index of each output's window.
    """
    in0 = np.asarray(in0, np.float32)
    in1 = np.asarray(in1, np.float32)
    local = np.arange(out_size, dtype=np.float64)[None, :] - np.asarray(out_start)[:, None]
    scale = (in1 - in0).astype(np.float64) / np.maximum(out_len, 1)  # float32 difference
    filterscale = np.maximum(scale, 1.0)
    support = filterscale  # the triangle filter's support is 1, widened by the scale
    center = in0.astype(np.float64)[:, None] + (local + 0.5) * scale[:, None]  # (B, O)
    # Pillow's window: int() truncation of center -/+ support + 0.5, clamped.
    xmin = np.maximum(np.trunc(center - support[:, None] + 0.5), 0.0)
    xmax = np.minimum(np.trunc(center + support[:, None] + 0.5), np.asarray(in_size)[:, None])
    j = xmin[..., None] + np.arange(taps, dtype=np.float64)  # (B, O, taps)
    arg = ((j - center[..., None]) + 0.5) * (1.0 / filterscale)[:, None, None]
    weights = np.where(j < xmax[..., None], np.maximum(1.0 - np.abs(arg), 0.0), 0.0)
    total = np.cumsum(weights, axis=-1)[..., -1:]  # sequential, as Pillow's loop
    nonzero = total != 0.0
    weights = np.where(nonzero, weights / np.where(nonzero, total, 1.0), 0.0)
    fixed = np.trunc(0.5 + weights * (1 << _PRECISION_BITS))
    in_region = (local >= 0) & (local < np.asarray(out_len)[:, None])
    fixed = np.where(in_region[..., None], fixed, 0.0)
    return fixed.astype(np.int32), xmin.astype(np.int32)


def _resample_first_axis(x: jax.Array, coefficients: jax.Array, start: jax.Array) -> jax.Array:
    """One exact pass of Pillow's 8-bit resampling along axis 1 of (B, N, M, C).

    Gathers each output's window of ``taps`` whole (M, C) slabs and sums pixel * coefficient
    in int32, as Pillow does: ``clip8((2**21 + sum) >> 22)``. The sum is below
    255 * (2**22 + taps) < 2**31, so it is exact whatever the window length. The resampled
    axis is the outer one so that each gathered element is a contiguous slab: gathering
    along the innermost axis instead (one strided element at a time) ran 1.5-2.5x slower on
    XLA's CPU backend. Returns int32 (B, O, M, C) in 0..255.
    """
    taps = coefficients.shape[-1]
    offsets = jnp.arange(taps, dtype=jnp.int32)[None, :]

    def one(image: jax.Array, coef: jax.Array, first: jax.Array) -> jax.Array:
        index = jnp.clip(first[:, None] + offsets, 0, image.shape[0] - 1)  # (O, taps)
        picked = image[index].astype(jnp.int32)  # (O, taps, M, C)
        total = jnp.sum(picked * coef[:, :, None, None], axis=1)
        return jnp.clip((total + (1 << (_PRECISION_BITS - 1))) >> _PRECISION_BITS, 0, 255)

    return jax.vmap(one)(x, coefficients, start)


def _premultiply(x: jax.Array) -> jax.Array:
    """int32 (..., 4) RGBA -> Pillow's premultiplied RGBa, rounded as its MULDIV255."""
    alpha = x[..., 3:4]
    t = x[..., :3] * alpha + 128
    return jnp.concatenate([((t >> 8) + t) >> 8, alpha], axis=-1)


def _unpremultiply(x: jax.Array) -> jax.Array:
    """int32 (..., 4) RGBa -> RGBA as Pillow: 255 * v // alpha, clipped; alpha 0, 255 kept."""
    alpha = x[..., 3:4]
    keep = (alpha == 0) | (alpha == 255)
    rgb = x[..., :3]
    divided = jnp.minimum((255 * rgb) // jnp.where(keep, 1, alpha), 255)
    return jnp.concatenate([jnp.where(keep, rgb, divided), alpha], axis=-1)


class _TraceCounter:
    """Counts traces of the kernel's jit functions, thread-safely.

    JAX runs a jitted function's Python body only to trace it, once per new signature and
    just before compiling (or loading from a persistent cache) that signature, so the count
    is the compiles this process has made, without reading JAX's private cache sizes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    def add(self) -> None:
        with self._lock:
            self._count += 1

    @property
    def count(self) -> int:
        return self._count


_TRACES = _TraceCounter()


# The kernel is two jit functions, not one. Compiled together, XLA (jaxlib 0.10, CPU) fuses
# the first pass into the per-pixel gathers of the second and runs 5-20x slower; apart, the
# small intermediate is materialised once and both passes vectorise (measured on 16 canvases
# of 128x128: under 2k images/s fused, 7k+ apart).
@jax.jit
def _horizontal_pass(canvases: jax.Array, coefficients: jax.Array, start: jax.Array) -> jax.Array:
    """uint8 (B, Hc, Wc, C) -> uint8 (B, width, Hc, C): Pillow's horizontal pass."""
    _TRACES.add()  # runs when traced only, not on the compiled calls
    x = jnp.transpose(canvases, (0, 2, 1, 3))  # columns outermost
    if x.shape[-1] == 4:
        x = _premultiply(x.astype(jnp.int32))
    return _resample_first_axis(x, coefficients, start).astype(jnp.uint8)


@jax.jit
def _vertical_pass(
    columns: jax.Array, coefficients: jax.Array, start: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """uint8 (B, width, Hc, C) -> uint8 (B, height, width, C): Pillow's vertical pass.

    Also returns int32 (B, height, C, 2): per output row and channel, the sum and the sum of
    squares of the pixels, from which a bake takes its pixel statistics. Summed here they
    cost next to nothing; a histogram of the stored pixels on the host cost more than the
    resize itself at 256 px. A row of ``MAX_MOMENT_WIDTH`` pixels of 255**2 stays below 2**31.
    """
    _TRACES.add()  # runs when traced only, not on the compiled calls
    out = _resample_first_axis(jnp.transpose(columns, (0, 2, 1, 3)), coefficients, start)
    if out.shape[-1] == 4:
        out = _unpremultiply(out)
    moments = jnp.stack([jnp.sum(out, axis=2), jnp.sum(out * out, axis=2)], axis=-1)
    return out.astype(jnp.uint8), moments


#: Widest output whose per-row sums of squares fit int32 (``_vertical_pass``).
MAX_MOMENT_WIDTH = (2**31 - 1) // 255**2


def resize_canvases(
    canvases: jax.Array | np.ndarray,
    sizes: np.ndarray,
    boxes: np.ndarray,
    regions: np.ndarray,
    *,
    height: int,
    width: int,
    taps_y: int | None = None,
    taps_x: int | None = None,
) -> jax.Array:
    """Resize a padded batch of images to ``height`` x ``width``, horizontal pass first.

    The coefficients are computed on the host (``axis_coefficients``, numpy float64 as
    Pillow's doubles); the two passes are jit-compiled, each once per (canvas shape, output
    size, taps). Integer arithmetic throughout, with Pillow's own coefficients, so the result
    equals Pillow's ``ImagingResample`` bit for bit. Pillow runs the vertical pass
    first when the height shrinks by more than twice as many pixels as the width; the caller
    gets that order by passing such images transposed (``ImageResizer`` does).

    Args:
        canvases: uint8 (B, Hc, Wc, C): image ``b`` in ``canvases[b, :h, :w]``; the rest is
            ignored (any content). C = 4 is RGBA, resized premultiplied as Pillow does.
        sizes: int32 (B, 2): the true (h, w) of each image; (0, 0) marks an unused slot.
        boxes: float32 (B, 4): the source box (x0, y0, x1, y1) of each image, in pixels.
        regions: int32 (B, 4): (top, left, height, width) of the output rectangle each box
            is resized into; output pixels outside it are 0.
        height: Output height (static).
        width: Output width (static).
        taps_y: Longest vertical window of any image (static): at least Pillow's ``ksize``,
            ``2 * ceil(max(scale, 1)) + 1``. None means the canvas height, always enough. A
            too-small value gives wrong results, not an error: ``ImageResizer`` checks it.
        taps_x: The same, horizontally.

    Returns:
        uint8 (B, height, width, C): ``Image.resize((rw, rh), Image.BILINEAR, box=box)``
        pasted at the region on zeros, for images Pillow resizes horizontal pass first.
    """
    cx, sx, cy, sy = _coefficients(
        canvases.shape, sizes, boxes, regions, height, width, taps_y, taps_x
    )
    resized: tuple[jax.Array, jax.Array] = _vertical_pass(
        _horizontal_pass(canvases, cx, sx), cy, sy
    )
    return resized[0]


def _coefficients(
    shape: tuple[int, ...],
    sizes: np.ndarray,
    boxes: np.ndarray,
    regions: np.ndarray,
    height: int,
    width: int,
    taps_y: int | None,
    taps_x: int | None,
) -> tuple[
    npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.int32]
]:
    """The two passes' windows for canvases of ``shape``: ``(cx, sx, cy, sy)``."""
    _, hc, wc, _ = shape
    sizes, boxes, regions = np.asarray(sizes), np.asarray(boxes, np.float32), np.asarray(regions)
    cx, sx = axis_coefficients(
        boxes[:, 0],
        boxes[:, 2],
        sizes[:, 1],
        regions[:, 1],
        regions[:, 3],
        out_size=width,
        taps=min(taps_x or wc, wc),
    )
    cy, sy = axis_coefficients(
        boxes[:, 1],
        boxes[:, 3],
        sizes[:, 0],
        regions[:, 0],
        regions[:, 2],
        out_size=height,
        taps=min(taps_y or hc, hc),
    )
    return cx, sx, cy, sy


def _pillow_orders_passes() -> bool:
    """Whether the installed Pillow chooses its pass order (13.0 and later).

    Earlier releases always resize horizontally first. The two orders round differently
    (by one level on a fifth of the pixels of some images), so matching Pillow exactly means
    matching the installed one; the device check found this on a machine with Pillow 12.
    """
    major = int(PIL.__version__.split(".", 1)[0])
    return major >= 13


_ORDERS_PASSES = _pillow_orders_passes()


def vertical_first(image_height: int, image_width: int, out_height: int, out_width: int) -> bool:
    """Whether Pillow's resize runs the vertical pass first (``ImagingResampleInner``).

    Pillow 13 does when the height shrinks, and by more than twice as many pixels as the
    width; earlier releases never do.
    """
    shrink_y = image_height - out_height
    return _ORDERS_PASSES and shrink_y > 0 and shrink_y > 2 * (image_width - out_width)


def compile_count() -> int:
    """How many kernel compilations this process has made (traces of the two passes).

    Each new ``resize_canvases`` signature costs up to two (one per pass), fewer when
    signatures share a pass.
    """
    return _TRACES.count


class ImageResizer:
    """Resizes decoded images in bucketed, padded batches; owns its reusable buffers.

    Args:
        height: Output height in pixels.
        width: Output width in pixels.
        batch_size: Images per kernel call for ordinary canvases (large canvases use fewer;
            see ``choose_bucket``).
        max_batch_pixels: Bound on canvas pixels per kernel call.

    Attributes:
        kernel_shapes: The static signatures (batch, channels, canvas height, canvas width,
            out height, out width, taps_y, taps_x; 0 = dense) this resizer has run the kernel
            with; each costs at most one compile per process (JAX caches compiled kernels
            process-wide).
        calls: Kernel calls made.

    Not thread-safe: use one resizer per thread.
    """

    def __init__(
        self,
        *,
        height: int,
        width: int,
        batch_size: int = 64,
        max_batch_pixels: int = MAX_BATCH_PIXELS,
    ) -> None:
        if height <= 0 or width <= 0 or batch_size <= 0:
            raise ValueError(
                f"ImageResizer needs positive height, width and batch_size, got "
                f"height={height}, width={width}, batch_size={batch_size}"
            )
        self.height: int = height
        self.width: int = width
        self.batch_size: int = batch_size
        self.max_batch_pixels: int = max_batch_pixels
        self.kernel_shapes: set[tuple[int, ...]] = set()
        self.calls: int = 0
        self._canvases: dict[tuple[CanvasBucket, int, int], np.ndarray] = {}
        self._turns: dict[tuple[CanvasBucket, int], int] = {}

    @property
    def compiles(self) -> int:
        """Distinct kernel shapes this resizer used (an upper bound on its compiles)."""
        return len(self.kernel_shapes)

    def resize(
        self,
        images: Sequence[DecodedImage],
        *,
        out: npt.NDArray[np.uint8] | None = None,
        moments: npt.NDArray[np.int64] | None = None,
    ) -> npt.NDArray[np.uint8]:
        """Resize every image; returns uint8 (N, height, width, C) in input order.

        Args:
            images: Decoded images, all with the same channel count C.
            out: Optional uint8 (N, height, width, C) array to write into (reused across
                calls to save allocations).
            moments: Optional int64 (N, C, 2) array that receives, per image and channel,
                the sum and the sum of squares of its output pixels (0..255), computed by
                the kernel itself.
        """
        n = len(images)
        channels = {im.pixels.shape[2] for im in images}
        if len(channels) > 1:
            raise ValueError(
                f"images have different channel counts {sorted(channels)}; decode them all "
                "with the same representation"
            )
        c = channels.pop() if channels else 3
        shape = (n, self.height, self.width, c)
        if out is None:
            out = np.empty(shape, dtype=np.uint8)
        elif out.shape != shape or out.dtype != np.uint8:
            raise ValueError(f"out must be uint8 {shape}, got {out.dtype} {out.shape}")
        if moments is not None and (moments.shape != (n, c, 2) or moments.dtype != np.int64):
            raise ValueError(
                f"moments must be int64 {(n, c, 2)}, got {moments.dtype} {moments.shape}"
            )
        # Key: (bucket, transposed). Images that Pillow resizes vertical pass first go in
        # transposed, so the kernel's horizontal-first passes run in Pillow's order.
        groups: dict[tuple[CanvasBucket, bool], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(self._plan(image), []).append(i)
        # JAX dispatches a call and returns; the next batch is packed on the host while the
        # previous one computes, and its result is collected one call later.
        pending: list[tuple[list[int], bool, tuple[jax.Array, jax.Array]]] = []
        for (bucket, transposed), indices in groups.items():
            for start in range(0, len(indices), bucket.batch_size):
                chunk = indices[start : start + bucket.batch_size]
                result = self._run(bucket, c, transposed, [images[i] for i in chunk])
                pending.append((chunk, transposed, result))
                if len(pending) > 1:
                    self._collect(*pending.pop(0), out, moments)
        for item in pending:
            self._collect(*item, out, moments)
        if moments is not None and max(self.height, self.width) > MAX_MOMENT_WIDTH:
            wide = out.reshape(n, -1, c).astype(np.int64)  # the kernel's row sums could overflow
            moments[..., 0] = wide.sum(axis=1)
            moments[..., 1] = np.square(wide).sum(axis=1)
        return out

    @staticmethod
    def _collect(
        chunk: list[int],
        transposed: bool,
        result: tuple[jax.Array, jax.Array],
        out: np.ndarray,
        moments: np.ndarray | None,
    ) -> None:
        """Wait for one kernel call and place its images (``np.asarray`` blocks)."""
        pixels, row_moments = result
        done = np.asarray(pixels)[: len(chunk)]
        out[chunk] = done.transpose(0, 2, 1, 3) if transposed else done
        if moments is not None:  # rows or columns alike: an image's totals
            moments[chunk] = np.asarray(row_moments)[: len(chunk)].sum(axis=1, dtype=np.int64)

    def _plan(self, image: DecodedImage) -> tuple[CanvasBucket, bool]:
        h, w = image.pixels.shape[:2]
        _, _, rh, rw = image.region
        transposed = vertical_first(h, w, rh, rw)
        if transposed:
            h, w = w, h
        bucket = choose_bucket(
            h, w, batch_size=self.batch_size, max_batch_pixels=self.max_batch_pixels
        )
        return bucket, transposed

    def _run(
        self, bucket: CanvasBucket, c: int, transposed: bool, images: list[DecodedImage]
    ) -> tuple[jax.Array, jax.Array]:
        """Pack ``images`` into a canvas and dispatch the kernel on it (not waiting)."""
        # Two canvases per shape, used in turn: one may still be read by the call in flight.
        turn = self._turns.get((bucket, c), 0)
        self._turns[(bucket, c)] = 1 - turn
        key = (bucket, c, turn)
        canvas = self._canvases.get(key)
        if canvas is None:
            # Never cleared: padding gets zero weight, so stale pixels there are harmless.
            canvas = np.zeros((bucket.batch_size, bucket.height, bucket.width, c), np.uint8)
            self._canvases[key] = canvas
        b = bucket.batch_size
        boxes = np.zeros((b, 4), np.float32)
        regions = np.zeros((b, 4), np.int32)
        sizes = np.zeros((b, 2), np.int32)
        for k, image in enumerate(images):
            pixels = image.pixels.transpose(1, 0, 2) if transposed else image.pixels
            h, w = pixels.shape[:2]
            canvas[k, :h, :w] = pixels
            sizes[k] = (h, w)
            boxes[k] = image.box
            regions[k] = image.region
        if transposed:
            boxes = boxes[:, [1, 0, 3, 2]]
            regions = regions[:, [1, 0, 3, 2]]
        out_h, out_w = (self.width, self.height) if transposed else (self.height, self.width)
        taps_y, taps_x = _batch_taps(
            bucket, boxes[: len(images)], regions[: len(images)], out_h, out_w
        )
        self.kernel_shapes.add(
            (b, c, bucket.height, bucket.width, out_h, out_w, taps_y or 0, taps_x or 0)
        )
        self.calls += 1
        cx, sx, cy, sy = _coefficients(
            canvas.shape, sizes, boxes, regions, out_h, out_w, taps_y, taps_x
        )
        result: tuple[jax.Array, jax.Array] = _vertical_pass(
            _horizontal_pass(canvas, cx, sx), cy, sy
        )
        return result


def _batch_taps(
    bucket: CanvasBucket, boxes: np.ndarray, regions: np.ndarray, out_h: int, out_w: int
) -> tuple[int | None, int | None]:
    """Static window lengths (taps_y, taps_x) for a batch; None means dense (the canvas side).

    One bound per bucket covers stretch, crop and pad of every image that fits the canvas, so
    batches share a compiled kernel; a batch that needs longer windows (pad of a very
    elongated image, whose short side becomes a pixel or two) falls back to dense.
    """
    bound = 2 * math.ceil(max(bucket.height / out_h, bucket.width / out_w)) + 1
    # Pillow's ksize, 2 * ceil(max(scale, 1)) + 1, with the box length as float32.
    scale_y = (boxes[:, 3] - boxes[:, 1]).astype(np.float64) / np.maximum(regions[:, 2], 1)
    scale_x = (boxes[:, 2] - boxes[:, 0]).astype(np.float64) / np.maximum(regions[:, 3], 1)
    need_y = 2 * int(np.ceil(max(scale_y.max(initial=1.0), 1.0))) + 1
    need_x = 2 * int(np.ceil(max(scale_x.max(initial=1.0), 1.0))) + 1
    taps_y = bound if need_y <= bound < bucket.height else None
    taps_x = bound if need_x <= bound < bucket.width else None
    return taps_y, taps_x


def resize_images(
    images: Sequence[DecodedImage], *, height: int, width: int, batch_size: int = 64
) -> np.ndarray:
    """Resize decoded images to uint8 (N, height, width, C), in input order.

    A one-shot ``ImageResizer``; keep a resizer instead to reuse its buffers across calls.
    """
    return ImageResizer(height=height, width=width, batch_size=batch_size).resize(images)
