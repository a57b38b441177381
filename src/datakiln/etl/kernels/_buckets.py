"""Canvas buckets: the few padded shapes that the image resize kernel is compiled for.

Decoded images come in every size; a jit kernel compiles once per input shape. Each image is
padded into the smallest canvas of a short ladder, so a bake compiles once per canvas used,
not once per image. Canvas sides step by about 1.5x (64, 96, 128, 192, 256, 384, ...): the
kernel's cost grows with the canvas area, and JPEGs drafted for a 64 px output land between
64 and ~160 px. Canvases are square, except for elongated images (one side more than
``ELONGATED_RATIO`` times the other), which get a side fitted to each axis, so a 1200x40 strip
does not pay for a 1536x1536 square. The batch size shrinks for large canvases so that one
batch holds at most ``max_batch_pixels`` canvas pixels: the kernel is fastest when a batch's
float32 copy stays near the CPU's cache size (measured: 16 canvases of 128x128 ran 2-3x faster
per image than 64).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ELONGATED_RATIO", "MAX_BATCH_PIXELS", "MIN_SIDE", "CanvasBucket", "choose_bucket"]

#: Smallest canvas side; smaller images are padded up to it.
MIN_SIDE = 64
#: A canvas whose power-of-two sides differ by more than this factor stays non-square.
ELONGATED_RATIO = 8
#: Canvas pixels in one batch (16 canvases of 128x128): bounds the kernel's working set
#: (about 12 bytes per pixel and channel in float32 temporaries).
MAX_BATCH_PIXELS = 16 * 128 * 128


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
    """The smallest side of 64 * 2**k or 96 * 2**k that is >= size."""
    side = MIN_SIDE
    while True:
        if side >= size:
            return side
        if side * 3 // 2 >= size:
            return side * 3 // 2
        side *= 2


def choose_bucket(
    height: int, width: int, *, batch_size: int, max_batch_pixels: int = MAX_BATCH_PIXELS
) -> CanvasBucket:
    """The canvas that an image of ``height`` x ``width`` pixels is padded into.

    Deterministic and a pure function of its arguments, so equal inputs always share a
    compiled kernel.

    Args:
        height: Image height in pixels (> 0).
        width: Image width in pixels (> 0).
        batch_size: The batch size asked for (> 0); large canvases get fewer per batch (at
            least 1).
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
    batch = max(1, min(batch_size, max_batch_pixels // (ch * cw)))
    return CanvasBucket(height=ch, width=cw, batch_size=batch)
