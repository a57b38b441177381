"""A small, deterministic corpus of real image files for demos and end-to-end tests.

``write_image_corpus`` writes images with Pillow in the formats and modes a real folder of
images holds (JPEG, PNG, GIF, BMP, WebP, TIFF; RGB, L, P with transparency, RGBA, LA, CMYK,
I;16), a few with EXIF orientation tags, a few large or very elongated, plus broken files
that a bake must reject. The same seed gives byte-identical files.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

__all__ = ["CorpusInfo", "write_image_corpus"]

logger = logging.getLogger(__name__)

# (format, extension, modes it is written in, repeated to weight the draw). Each is one the
# format stores.
_FORMATS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("JPEG", "jpg", ("RGB", "RGB", "RGB", "RGB", "L", "CMYK")),
    ("PNG", "png", ("RGB", "RGB", "L", "P", "RGBA", "LA", "I;16")),
    ("GIF", "gif", ("P",)),
    ("BMP", "bmp", ("RGB", "L", "P")),
    ("WEBP", "webp", ("RGB", "RGBA")),
    ("TIFF", "tiff", ("RGB", "L", "CMYK", "I;16", "RGBA")),
)
# Relative frequency of each format: mostly JPEG and PNG, as in real folders.
_FORMAT_WEIGHTS = np.array([0.45, 0.25, 0.08, 0.07, 0.08, 0.07])
# Special images every corpus of at least this many files gets (format, mode, width, height).
_SPECIALS: tuple[tuple[str, str, int, int], ...] = (
    ("JPEG", "RGB", 2000, 1500),  # large: the JPEG draft path
    ("PNG", "RGB", 1200, 40),  # very elongated, no draft: a canvas larger than usual
    ("PNG", "L", 30, 900),  # very tall
    ("GIF", "P", 96, 64),  # animated: first frame only
)
# EXIF orientations given to a few JPEGs (1 would be a no-op).
_ORIENTATIONS = (2, 3, 4, 5, 6, 7, 8)


@dataclass(frozen=True)
class CorpusInfo:
    """What ``write_image_corpus`` wrote.

    Attributes:
        root: The corpus folder.
        good: Paths of decodable images, sorted.
        broken: Paths of files a bake must reject, sorted.
        classes: The class folder names, in the order given.
        labels: For each path in ``good`` and ``broken``, the index of its class folder.
    """

    root: Path
    good: tuple[Path, ...]
    broken: tuple[Path, ...]
    classes: tuple[str, ...]
    labels: dict[Path, int]

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every file written, good and broken, sorted."""
        return tuple(sorted(self.good + self.broken))


def write_image_corpus(
    root: str | Path,
    n: int = 200,
    *,
    seed: int = 0,
    broken: int = 3,
    classes: Sequence[str] = ("cats", "dogs", "birds"),
) -> CorpusInfo:
    """Write ``n`` good images and ``broken`` broken files under ``root/<class>/``.

    Sizes are mostly 16-400 px. The first good images are special (a 2000x1500 JPEG, a
    1200x40 PNG, a 30x900 PNG, an animated GIF), the next ones cover every (format, mode)
    pair listed in ``_FORMATS`` once (so n >= 24 holds them all), the rest are drawn at
    random, mostly JPEG and PNG. About one JPEG in eight carries an EXIF orientation. Broken
    files cycle through: a text file named ``.jpg``, a truncated JPEG, an empty ``.png``.
    Deterministic: the same arguments give byte-identical files.

    Args:
        root: Folder to write into (created if missing; existing files of the same names are
            overwritten).
        n: Number of good images.
        seed: Seed of the content, sizes, modes and formats.
        broken: Number of broken files.
        classes: Class folder names; files are spread over them round-robin.

    Returns:
        The paths written, split into good and broken.
    """
    if n < 0 or broken < 0 or not classes:
        raise ValueError(
            f"write_image_corpus needs n >= 0, broken >= 0 and at least one class, got n={n}, "
            f"broken={broken}, classes={list(classes)}"
        )
    root = Path(root)
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
    labels: dict[Path, int] = {}
    good: list[Path] = []
    pairs = sorted({(fmt, mode) for fmt, _, modes in _FORMATS for mode in modes})
    for i in range(n):
        if i < len(_SPECIALS):
            fmt, mode, width, height = _SPECIALS[i]
        elif i < len(_SPECIALS) + len(pairs):
            fmt, mode = pairs[i - len(_SPECIALS)]
            width, height = (int(v) for v in rng.integers(16, 401, size=2))
        else:
            f = int(rng.choice(len(_FORMATS), p=_FORMAT_WEIGHTS))
            fmt = _FORMATS[f][0]
            modes = _FORMATS[f][2]
            mode = modes[int(rng.integers(len(modes)))]
            width, height = (int(v) for v in rng.integers(16, 401, size=2))
        ext = next(e for name, e, _ in _FORMATS if name == fmt)
        label = i % len(classes)
        path = root / classes[label] / f"img_{i:05d}.{ext}"
        orientation = None
        if fmt == "JPEG" and i >= len(_SPECIALS) and rng.random() < 0.125:
            orientation = _ORIENTATIONS[int(rng.integers(len(_ORIENTATIONS)))]
        animated = (fmt, mode, width, height) == _SPECIALS[3] and i == 3
        path.write_bytes(_encode(rng, fmt, mode, width, height, orientation, animated))
        labels[path] = label
        good.append(path)

    bad: list[Path] = []
    for k in range(broken):
        label = (n + k) % len(classes)
        kind = k % 3
        if kind == 0:
            path = root / classes[label] / f"broken_{k:03d}_text.jpg"
            path.write_bytes(b"this is a text file with a .jpg name, not an image\n")
        elif kind == 1:
            path = root / classes[label] / f"broken_{k:03d}_truncated.jpg"
            data = _encode(rng, "JPEG", "RGB", 120, 90, None, False)
            path.write_bytes(data[: len(data) // 2])
        else:
            path = root / classes[label] / f"broken_{k:03d}_empty.png"
            path.write_bytes(b"")
        labels[path] = label
        bad.append(path)
    logger.debug("wrote %d images and %d broken files under %s", len(good), len(bad), root)
    return CorpusInfo(
        root=root,
        good=tuple(sorted(good)),
        broken=tuple(sorted(bad)),
        classes=tuple(classes),
        labels=labels,
    )


def _pattern(rng: np.random.Generator, width: int, height: int) -> NDArray[np.uint8]:
    """A smooth RGB picture (gradients, a disc) plus mild noise, uint8 (height, width, 3).

    Drawn at most 128 px a side and enlarged with Pillow, so large images stay cheap.
    """
    sw, sh = min(width, 128), min(height, 128)
    y = np.linspace(0.0, 1.0, sh, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, sw, dtype=np.float32)[None, :]
    a, b, c = rng.uniform(0.2, 1.0, 3)
    cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.4)
    disc = ((x - cx) ** 2 + (y - cy) ** 2 < r * r).astype(np.float32)
    red = 255 * (a * x + (1 - a) * y)
    green = 255 * np.abs(np.sin(3 * b * (x + y)))
    blue = 255 * np.clip(c * disc + 0.3 * y, 0, 1)
    small = np.stack(np.broadcast_arrays(red, green, blue), axis=-1).astype(np.uint8)
    img = Image.fromarray(small, "RGB")
    if (sw, sh) != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    noise = rng.integers(-6, 7, (height, width, 3), np.int16)
    noisy: NDArray[np.int16] = np.asarray(img, dtype=np.int16) + noise
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _to_mode(rgb: np.ndarray, mode: str, rng: np.random.Generator) -> Image.Image:
    """Turn an RGB picture into a Pillow image of ``mode`` with meaningful content."""
    im = Image.fromarray(rgb, "RGB")
    if mode == "RGB":
        return im
    if mode in ("L", "CMYK"):
        return im.convert(mode)
    if mode == "P":
        p = im.quantize(colors=int(rng.integers(8, 65)), method=Image.Quantize.FASTOCTREE)
        p.info["transparency"] = 0  # palette index 0 is transparent
        return p
    h, w = rgb.shape[:2]
    yy = np.arange(h, dtype=np.float32)[:, None] / max(h, 1)
    xx = np.arange(w, dtype=np.float32)[None, :] / max(w, 1)
    alpha = (255 * (0.5 + 0.5 * np.cos(6.0 * xx + 4.0 * yy))).astype(np.uint8)
    if mode == "RGBA":
        return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    if mode == "LA":
        gray = np.asarray(im.convert("L"))
        return Image.fromarray(np.dstack([gray, alpha]), "LA")
    if mode == "I;16":
        # Full 16-bit range, so that a clipping conversion would show.
        gray = np.asarray(im.convert("L")).astype(np.uint16) * 257
        return Image.fromarray(gray)  # uint16 -> mode I;16
    raise ValueError(f"no generator for mode {mode!r}")


def _encode(
    rng: np.random.Generator,
    fmt: str,
    mode: str,
    width: int,
    height: int,
    orientation: int | None,
    animated: bool,
) -> bytes:
    rgb = _pattern(rng, width, height)
    im = _to_mode(rgb, mode, rng)
    buf = io.BytesIO()
    kwargs: dict[str, object] = {}
    if fmt == "JPEG":
        kwargs["quality"] = 90
        if orientation is not None:
            exif = Image.Exif()
            exif[0x0112] = orientation
            kwargs["exif"] = exif.tobytes()
    elif fmt == "WEBP":
        kwargs["quality"] = 90
    elif fmt == "TIFF":
        kwargs["compression"] = "tiff_deflate" if mode != "CMYK" else "raw"
    if animated:
        frames = [im] + [_to_mode(_pattern(rng, width, height), mode, rng) for _ in range(2)]
        frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=80, loop=0)
    else:
        im.save(buf, fmt, **kwargs)
    return buf.getvalue()
