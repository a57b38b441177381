"""Canvas buckets: the few padded shapes that the image resize kernel is compiled for.

Decoded images come in every size; a jit kernel compiles once per input shape. Each image is
padded into the smallest canvas of a short ladder, so a bake compiles once per canvas used,
not once per image. Canvases are squares whose side is a power of two from ``MIN_SIDE``,
except for elongated images (one side more than ``ELONGATED_RATIO`` times the other), which
get a canvas with power-of-two sides fitted to each axis, so a 1200x40 strip does not pay for a
2048x2048 square. The batch size shrinks for large canvases so that one batch holds at most
``max_batch_pixels`` canvas pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ELONGATED_RATIO", "MAX_BATCH_PIXELS", "MIN_SIDE", "CanvasBucket", "choose_bucket"]

#: Smallest canvas side; smaller images are padded up to it.
MIN_SIDE = 64
#: A canvas whose power-of-two sides differ by more than this factor stays non-square.
ELONGATED_RATIO = 4
#: Canvas pixels in one batch (64 canvases of 256x256): bounds the kernel's working memory
#: (about 12 bytes per pixel and channel in float32 temporaries).
MAX_BATCH_PIXELS = 64 * 256 * 256


@dataclass(frozen=True, slots=True)
class CanvasBucket:
    """A padded input shape of the resize kernel.

    Attributes:
        height: Canvas height in pixels.
        width: Canvas width in pixels.
        batch_size: Canvases per kernel call (the batch is padded up to it).
    """

    height: int
    width: int
    batch_size: int


def _ladder(size: int) -> int:
    """The smallest power of two >= size and >= MIN_SIDE."""
    side = MIN_SIDE
    while side < size:
        side *= 2
    return side


def choose_bucket(
    height: int, width: int, *, batch_size: int, max_batch_pixels: int = MAX_BATCH_PIXELS
) -> CanvasBucket:
    """The canvas that an image of ``height`` x ``width`` pixels is padded into.

    Deterministic and a pure function of its arguments, so equal inputs always share a
    compiled kernel.

    Args:
        height: Image height in pixels (> 0).
        width: Image width in pixels (> 0).
        batch_size: The batch size asked for (> 0); large canvases get fewer per batch, a
            power of two, at least 1.
        max_batch_pixels: Upper bound on canvas pixels per batch (a batch of one canvas may
            exceed it: an image always fits).
    """
    if height <= 0 or width <= 0 or batch_size <= 0:
        raise ValueError(
            f"choose_bucket needs positive sizes, got height={height}, width={width}, "
            f"batch_size={batch_size}"
        )
    ch, cw = _ladder(height), _ladder(width)
    if max(ch, cw) <= ELONGATED_RATIO * min(ch, cw):
        ch = cw = max(ch, cw)
    fits = max(1, max_batch_pixels // (ch * cw))
    batch = 1
    while batch * 2 <= min(batch_size, fits):
        batch *= 2
    if batch_size <= fits:
        batch = batch_size
    return CanvasBucket(height=ch, width=cw, batch_size=batch)
