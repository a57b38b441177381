"""Decode one image file into uint8 pixels plus the geometry of the resize that follows.

``decode_image`` is the host half of the image bake: it opens the bytes with Pillow, rejects
decompression bombs from the header before decoding, decodes JPEGs at the smallest DCT scale
that still gives the output resolution (``Image.draft``), applies the EXIF orientation and
converts any mode to the requested representation. It does not resize: it returns the pixels
with the fractional source ``box`` and the output ``region`` that the JAX kernel
(``datakiln.etl.kernels.image``) resamples in batches, exactly as
``Image.resize(size, Image.BILINEAR, box=box)`` would.

Every problem with one input raises ``ImageDecodeError`` with a ``stage``, so a reader can turn
it into a rejection record and go on with the shard.
"""

from __future__ import annotations

import io
import logging
import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from datakiln.errors import ImageDecodeError, SpecError

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FITS",
    "REPRESENTATIONS",
    "DecodedImage",
    "ImageDecodeError",
    "decode_image",
    "draft_request",
]

#: Representations and the channel count of each.
REPRESENTATIONS: dict[str, int] = {"rgb": 3, "grayscale": 1, "rgba": 4}
#: Fit policies: how the source's aspect ratio meets the output's.
FITS: tuple[str, ...] = ("stretch", "center-crop", "pad")
#: Default decompression-bomb limit, in pixels declared by the header.
DEFAULT_MAX_PIXELS = 100_000_000

# Pillow mode each representation converts to.
_PIL_MODE = {"rgb": "RGB", "grayscale": "L", "rgba": "RGBA"}
# EXIF orientation tag and the transpose that undoes each value (as ImageOps.exif_transpose).
_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Modes holding more than 8 bits per sample; scaled from their 16-bit range, not clipped.
_WIDE_INT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
# What Pillow's decoders raise on damaged data: truncation (OSError), bad chunk structure
# (SyntaxError, struct.error, zlib.error), short reads (EOFError), odd headers (ValueError,
# IndexError, TypeError). Anything else is a bug and propagates.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    EOFError,
    ValueError,
    IndexError,
    TypeError,
    struct.error,
    zlib.error,
)


@dataclass(frozen=True)
class DecodedImage:
    """Decoded pixels and the resize that turns them into one output sample.

    Attributes:
        pixels: uint8 array (h, w, C), C = 3 (rgb), 1 (grayscale) or 4 (rgba), C-contiguous,
            after EXIF orientation and at the drafted scale (smaller than the original JPEG).
        box: (x0, y0, x1, y1) floats, the source region to resample, in ``pixels``
            coordinates; fractional where ``draft()`` scaled by a factor that does not divide
            the size, or where a center-crop falls between pixels.
        region: (top, left, height, width) ints: where ``box`` lands in the output. The whole
            output for ``stretch`` and ``center-crop``; a centred sub-rectangle for ``pad``,
            outside which the output is 0.
        original_size: (width, height) of the full-resolution image after EXIF orientation.
        original_mode: Pillow mode of the file (e.g. ``"P"``, ``"I;16"``, ``"CMYK"``).
        format: Pillow format name (e.g. ``"JPEG"``, ``"PNG"``).
    """

    pixels: np.ndarray
    box: tuple[float, float, float, float]
    region: tuple[int, int, int, int]
    original_size: tuple[int, int]
    original_mode: str
    format: str


def decode_image(
    data: bytes,
    *,
    representation: str,
    height: int,
    width: int,
    fit: str = "stretch",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedImage:
    """Decode one encoded image for a resize to ``height`` x ``width``.

    Animated GIF/WebP and multi-page TIFF give their first frame. Alpha is dropped (not
    composited) for ``rgb`` and ``grayscale``; ``grayscale`` is Pillow's ITU-R 601-2 luma (for
    colour JPEGs it is the decoder's own luma channel, via ``draft("L")``). 16-bit and 32-bit
    integer samples are scaled from 0..65535 to 0..255 with rounding; float (``F``) samples are
    taken on the 0..255 scale and clipped, as Pillow's ``convert("L")`` does.

    Args:
        data: The encoded file.
        representation: ``"rgb"``, ``"grayscale"`` or ``"rgba"``.
        height: Output height in pixels (> 0).
        width: Output width in pixels (> 0).
        fit: ``"stretch"`` (ignore the aspect ratio), ``"center-crop"`` (the largest centred
            box of the output's aspect ratio) or ``"pad"`` (keep the aspect ratio, centre it,
            zeros around).
        max_pixels: Reject images whose header declares more pixels than this, before any
            decoding. This limit governs: above Pillow's ``Image.MAX_IMAGE_PIXELS`` the file
            is opened without Pillow's own check (the global is read, never set).

    Returns:
        The decoded image; see ``DecodedImage``.

    Raises:
        ImageDecodeError: The input is empty, not an image, truncated or corrupt, too large,
            or in a mode that cannot be converted. ``stage`` says which.
        SpecError: ``representation``, ``fit``, ``height``, ``width`` or ``max_pixels`` is
            not allowed (a caller bug, not a bad input).

    Thread safety: safe to call from several threads (Pillow releases the GIL while decoding).
    """
    _check_arguments(representation, height, width, fit, max_pixels)
    if not data:
        raise ImageDecodeError("empty input (0 bytes): not an image", stage="open")
    try:
        im = _open(data, max_pixels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError(
            f"rejected as a possible decompression bomb by Pillow: {err}", stage="limit"
        ) from err
    except UnidentifiedImageError as err:
        raise ImageDecodeError(
            f"not a recognised image format ({len(data)} bytes, starts with {data[:8]!r})",
            stage="open",
        ) from err
    except _DECODE_ERRORS as err:
        raise ImageDecodeError(
            f"cannot read the image header: {type(err).__name__}: {err}", stage="open"
        ) from err
    with im:
        return _decode_opened(im, representation, height, width, fit, max_pixels)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """``Image.open``, except that a caller's limit above Pillow's global one replaces it."""
    cap = Image.MAX_IMAGE_PIXELS
    if cap is None or max_pixels <= cap:
        return Image.open(io.BytesIO(data))
    # Pillow's plugin loop as ``Image.open`` runs it, less its bomb check (a process-wide
    # setting, which other code may rely on); ``_decode_opened`` checks ``max_pixels`` next.
    prefix, tried = data[:16], set()
    for load in (lambda: None, Image.preinit, Image.init):
        load()
        for name in [f for f in Image.ID if f not in tried]:
            tried.add(name)
            factory, accept = Image.OPEN[name]
            accepted = accept is None or accept(prefix)
            if not accepted or isinstance(accepted, str):  # a str is Pillow's "maybe" warning
                continue
            try:
                return factory(io.BytesIO(data), "")  # the filename Image.open gives a stream
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue
    raise UnidentifiedImageError("cannot identify image file")


def draft_request(
    original_size: tuple[int, int], *, height: int, width: int, fit: str
) -> tuple[int, int]:
    """The (width, height) to pass to ``Image.draft`` for a resize to height x width.

    ``original_size`` is (width, height) after EXIF orientation, and so is the answer (swap it
    for a file whose orientation transposes). ``draft`` picks the largest DCT scale 1/s with
    ``size // s >= request``, so the drafted image still covers the output resolution of the
    part that is resized: the whole image for stretch and pad, the crop for center-crop.
    """
    ow, oh = original_size
    if fit == "stretch":
        return width, height
    if fit == "pad":
        _, _, rh, rw = _pad_region(ow, oh, height, width)
        return rw, rh
    cx0, cy0, cx1, cy1 = _crop_box(ow, oh, height, width)
    return math.ceil(width * ow / (cx1 - cx0)), math.ceil(height * oh / (cy1 - cy0))


def _check_arguments(
    representation: str, height: int, width: int, fit: str, max_pixels: int
) -> None:
    if representation not in REPRESENTATIONS:
        raise SpecError(
            f"representation={representation!r} is not allowed; use one of "
            f"{sorted(REPRESENTATIONS)}"
        )
    if fit not in FITS:
        raise SpecError(f"fit={fit!r} is not allowed; use one of {list(FITS)}")
    for name, value in (("height", height), ("width", width), ("max_pixels", max_pixels)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise SpecError(f"{name}={value!r} is not allowed; it must be a positive int")


def _decode_opened(
    im: Image.Image, representation: str, height: int, width: int, fit: str, max_pixels: int
) -> DecodedImage:
    raw_w, raw_h = im.size
    fmt = im.format or "unknown"
    original_mode = im.mode
    if raw_w <= 0 or raw_h <= 0:
        raise ImageDecodeError(f"{fmt} header declares an empty size {im.size}", stage="open")
    pixels_declared = raw_w * raw_h
    limit = max_pixels
    if pixels_declared > limit:
        raise ImageDecodeError(
            f"{fmt} header declares {raw_w}x{raw_h} = {pixels_declared} pixels, more than the "
            f"limit of {limit} (a possible decompression bomb); raise max_pixels to accept it",
            stage="limit",
        )

    try:
        orientation = int(im.getexif().get(_ORIENTATION_TAG, 1))
    except _DECODE_ERRORS as err:
        # A damaged EXIF block must not cost the image: decode it unrotated.
        logger.debug("ignoring unreadable EXIF data: %s", err)
        orientation = 1
    transpose = _TRANSPOSE.get(orientation)
    swaps_axes = orientation in (5, 6, 7, 8)
    ow, oh = (raw_h, raw_w) if swaps_axes else (raw_w, raw_h)

    request = draft_request((ow, oh), height=height, width=width, fit=fit)
    if swaps_axes:
        request = (request[1], request[0])
    draft_mode = "L" if representation == "grayscale" else "RGB"
    try:
        drafted = im.draft(draft_mode, request)
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError(
            f"rejected as a possible decompression bomb by Pillow: {err}", stage="limit"
        ) from err
    except _DECODE_ERRORS as err:
        raise ImageDecodeError(
            f"cannot decode the {fmt} data (truncated or corrupt?): {type(err).__name__}: {err}",
            stage="decode",
        ) from err
    dw, dh = im.size
    raw_box = drafted[1] if drafted is not None else (0.0, 0.0, float(dw), float(dh))

    try:
        pixels = _convert(im, representation, transpose)
    except _DECODE_ERRORS as err:
        raise ImageDecodeError(
            f"cannot convert {fmt} mode {im.mode!r} to {representation}: "
            f"{type(err).__name__}: {err}",
            stage="convert",
        ) from err

    full = _transpose_box(raw_box, (dw, dh), orientation)
    if fit == "center-crop":
        cx0, cy0, cx1, cy1 = _crop_box(ow, oh, height, width)
        fx = (full[2] - full[0]) / ow
        fy = (full[3] - full[1]) / oh
        box = (full[0] + cx0 * fx, full[1] + cy0 * fy, full[0] + cx1 * fx, full[1] + cy1 * fy)
        region = (0, 0, height, width)
    elif fit == "pad":
        box = full
        region = _pad_region(ow, oh, height, width)
    else:
        box = full
        region = (0, 0, height, width)
    return DecodedImage(
        pixels=pixels,
        box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
        region=region,
        original_size=(ow, oh),
        original_mode=original_mode,
        format=fmt,
    )


def _crop_box(ow: int, oh: int, height: int, width: int) -> tuple[float, float, float, float]:
    """The largest centred box of aspect width:height inside an ow x oh image."""
    if ow * height > oh * width:  # wider than the output: crop the sides
        cw = oh * width / height
        x0 = (ow - cw) / 2
        return (x0, 0.0, x0 + cw, float(oh))
    ch = ow * height / width
    y0 = (oh - ch) / 2
    return (0.0, y0, float(ow), y0 + ch)


def _pad_region(ow: int, oh: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of an ow x oh image scaled to fit height x width, centred."""
    scale = min(width / ow, height / oh)
    rw = min(width, max(1, round(ow * scale)))
    rh = min(height, max(1, round(oh * scale)))
    return ((height - rh) // 2, (width - rw) // 2, rh, rw)


def _transpose_box(
    box: tuple[float, float, float, float], size: tuple[int, int], orientation: int
) -> tuple[float, float, float, float]:
    """Map a box in raw (stored) coordinates through the EXIF orientation's transpose."""
    x0, y0, x1, y1 = box
    w, h = size
    if orientation in (5, 6, 7, 8):  # the axes swap: first transpose, then flip
        x0, y0, x1, y1 = y0, x0, y1, x1
        w, h = h, w
    flip_x = orientation in (2, 3, 6, 7)
    flip_y = orientation in (3, 4, 7, 8)
    if flip_x:
        x0, x1 = w - x1, w - x0
    if flip_y:
        y0, y1 = h - y1, h - y0
    return (x0, y0, x1, y1)


def _convert(im: Image.Image, representation: str, transpose: Image.Transpose | None) -> np.ndarray:
    """Pixels of ``im`` in ``representation`` as a C-contiguous uint8 (h, w, C) array."""
    target = _PIL_MODE[representation]
    mode = im.mode
    if mode in _WIDE_INT_MODES:
        wide = np.asarray(im).astype(np.int64)
        # round(v / 257) maps 0..65535 onto 0..255 exactly; Pillow's convert would clip.
        gray = ((np.clip(wide, 0, 65535) * 2 + 257) // 514).astype(np.uint8)
        im = Image.fromarray(gray, mode="L")
    elif mode == "F":
        values = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0)
        im = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    elif mode in ("P", "PA") and (mode == "PA" or "transparency" in im.info):
        # Palette transparency is only honoured through RGBA; going there first also avoids
        # Pillow's warning about converting transparent palettes to RGB.
        im = im.convert("RGBA")
    if im.mode != target:
        try:
            im = im.convert(target)
        except ValueError:
            # Pillow lacks some direct conversions (e.g. CMYK -> L): go through RGB(A).
            im = im.convert("RGBA" if "A" in im.mode else "RGB").convert(target)
    if transpose is not None:
        im = im.transpose(transpose)
    pixels = np.asarray(im)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.dtype != np.uint8:
        raise ValueError(f"conversion gave {pixels.dtype} pixels, expected uint8")
    return np.ascontiguousarray(pixels)
