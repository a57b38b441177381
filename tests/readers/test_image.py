"""Tests of datakiln.readers.image: modes, formats, EXIF, draft geometry and rejections."""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from datakiln.errors import DatakilnError, SpecError
from datakiln.readers.image import (
    DecodedImage,
    ImageDecodeError,
    decode_image,
    draft_request,
)
from datakiln.testing.image_corpus import write_image_corpus

REPS = ("rgb", "grayscale", "rgba")


def _picture(width: int = 48, height: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth RGB picture with some noise and an asymmetric bright corner."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256])
    img = img.transpose(1, 2, 0).astype(np.int64) + rng.integers(-8, 9, (height, width, 3))
    img[: height // 4, : width // 4] = (250, 20, 20)  # marks the top-left corner
    return np.clip(img, 0, 255).astype(np.uint8)


def _encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _decode_full(data: bytes, representation: str) -> DecodedImage:
    """Decode at full resolution (the output is the image's own size: no draft)."""
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
    return decode_image(data, representation=representation, height=h, width=w)


def _expected(im: Image.Image, representation: str) -> np.ndarray:
    """The conversion decode_image promises, written independently."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        v = np.asarray(im).astype(np.float64)
        gray = np.floor(np.clip(v, 0, 65535) / 257.0 + 0.5).astype(np.uint8)
        im = Image.fromarray(gray)
    elif im.mode == "F":
        im = Image.fromarray(np.clip(np.rint(np.asarray(im)), 0, 255).astype(np.uint8))
    elif im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    target = {"rgb": "RGB", "grayscale": "L", "rgba": "RGBA"}[representation]
    if im.mode == "CMYK" and target == "L":
        im = im.convert("RGB")
    arr = np.asarray(im.convert(target))
    return arr[:, :, None] if arr.ndim == 2 else arr


def _modes() -> list[tuple[str, Image.Image]]:
    rgb = Image.fromarray(_picture())
    alpha = Image.fromarray(np.tile(np.linspace(0, 255, 48).astype(np.uint8), (32, 1)))
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    la = rgb.convert("L")
    la.putalpha(alpha)
    p_trans = rgb.quantize(colors=16)
    p_trans.info["transparency"] = 0
    ramp = np.linspace(0, 65535, 48 * 32).reshape(32, 48).astype(np.uint16)
    i32 = Image.fromarray(ramp.astype(np.int32))
    f32 = Image.fromarray(np.linspace(-20, 300, 48 * 32).reshape(32, 48).astype(np.float32))
    return [
        ("RGB", rgb),
        ("L", rgb.convert("L")),
        ("1", rgb.convert("L").point(lambda v: 255 if v > 128 else 0).convert("1")),
        ("P", rgb.quantize(colors=32)),
        ("P-transparency", p_trans),
        ("RGBA", rgba),
        ("LA", la),
        ("CMYK", rgb.convert("CMYK")),
        ("I;16", Image.fromarray(ramp)),
        ("I", i32),
        ("F", f32),
    ]


# (name of a mode from _modes, format, lossless?)
_MODE_FORMATS = [
    ("RGB", "PNG"),
    ("RGB", "BMP"),
    ("RGB", "TIFF"),
    ("RGB", "WEBP"),
    ("L", "PNG"),
    ("L", "BMP"),
    ("1", "PNG"),
    ("1", "TIFF"),
    ("P", "PNG"),
    ("P", "GIF"),
    ("P", "BMP"),
    ("P-transparency", "PNG"),
    ("P-transparency", "GIF"),
    ("RGBA", "PNG"),
    ("RGBA", "TIFF"),
    ("RGBA", "WEBP"),
    ("LA", "PNG"),
    ("CMYK", "TIFF"),
    ("CMYK", "JPEG"),
    ("I;16", "PNG"),
    ("I;16", "TIFF"),
    ("I", "TIFF"),
    ("F", "TIFF"),
    ("RGB", "JPEG"),
    ("L", "JPEG"),
]


@pytest.mark.parametrize(("mode_name", "fmt"), _MODE_FORMATS)
def test_every_mode_and_format_converts(mode_name: str, fmt: str) -> None:
    im = dict(_modes())[mode_name]
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    data = _encode(im, fmt, **kwargs)
    with Image.open(io.BytesIO(data)) as reopened:
        reopened.load()
        stored_mode = reopened.mode
        for rep in REPS:
            decoded = _decode_full(data, rep)
            if fmt == "JPEG" and rep == "grayscale" and stored_mode == "RGB":
                continue  # the decoder's luma channel: checked in test_jpeg_grayscale_draft
            expected = _expected(reopened, rep)
            assert decoded.pixels.dtype == np.uint8
            assert decoded.pixels.shape == (32, 48, {"rgb": 3, "grayscale": 1, "rgba": 4}[rep])
            assert decoded.pixels.flags["C_CONTIGUOUS"]
            np.testing.assert_array_equal(decoded.pixels, expected, err_msg=f"{rep}")
            assert decoded.original_mode == stored_mode
            assert decoded.format == reopened.format
            assert decoded.original_size == (48, 32)
            assert decoded.box == (0.0, 0.0, 48.0, 32.0)


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    values = np.array([[0, 128, 257, 32767, 32768, 65534, 65535, 1000]], dtype=np.uint16)
    data = _encode(Image.fromarray(values), "PNG")
    decoded = _decode_full(data, "grayscale")
    # round(v / 257); Pillow's convert("L") would give 255 for everything >= 255.
    assert decoded.pixels[0, :, 0].tolist() == [0, 0, 1, 127, 128, 255, 255, 4]
    assert decoded.original_mode.startswith("I;16")


def test_palette_transparency_becomes_alpha() -> None:
    p = Image.new("P", (4, 2))
    p.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    p.putdata([0, 1, 0, 1, 1, 1, 0, 0])
    p.info["transparency"] = 0
    decoded = _decode_full(_encode(p, "PNG"), "rgba")
    assert decoded.pixels[0, :, 3].tolist() == [0, 255, 0, 255]
    assert decoded.pixels[0, 1, :3].tolist() == [200, 100, 50]
    rgb = _decode_full(_encode(p, "PNG"), "rgb")  # alpha dropped, colours kept
    assert rgb.pixels[0, 0].tolist() == [10, 20, 30]


def test_animated_gif_and_webp_give_first_frame() -> None:
    frames = [Image.new("RGB", (20, 10), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    for fmt, kwargs in (("GIF", {}), ("WEBP", {"lossless": True})):
        buf = io.BytesIO()
        frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=50, **kwargs)
        decoded = _decode_full(buf.getvalue(), "rgb")
        assert decoded.pixels.shape == (10, 20, 3)
        np.testing.assert_allclose(decoded.pixels[5, 10], (255, 0, 0), atol=2)


def _exif_jpeg(pixels: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif.tobytes())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int) -> None:
    data = _exif_jpeg(_picture(48, 32), orientation)
    with Image.open(io.BytesIO(data)) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    h, w = expected.shape[:2]
    decoded = decode_image(data, representation="rgb", height=h, width=w)
    np.testing.assert_array_equal(decoded.pixels, expected)
    assert decoded.original_size == (w, h)
    assert (w, h) == ((32, 48) if orientation >= 5 else (48, 32))


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_with_draft_maps_the_box(orientation: int) -> None:
    # 203 x 150 at scale 1/2 is 102 x 75 with a partial last column: the box's fractional
    # edge must follow the pixels through the rotation.
    data = _exif_jpeg(_picture(203, 150, seed=1), orientation)
    decoded = decode_image(data, representation="rgb", height=64, width=64)
    h, w = decoded.pixels.shape[:2]
    rotated = orientation in (6, 8)
    assert (w, h) == ((75, 102) if rotated else (102, 75))
    x0, y0, x1, y1 = decoded.box
    assert x1 - x0 == pytest.approx(75.0 if rotated else 101.5)
    assert y1 - y0 == pytest.approx(101.5 if rotated else 75.0)
    # The partial pixel is where the stored image's right edge went.
    expected = {1: (0, 0), 3: (0.5, 0), 6: (0, 0), 8: (0, 0.5)}[orientation]
    assert (x0, y0) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("size", "fit", "shape", "box", "region"),
    [
        ((640, 480), "stretch", (120, 160), (0, 0, 160, 120), (0, 0, 64, 64)),
        ((2000, 1500), "stretch", (188, 250), (0, 0, 250, 187.5), (0, 0, 64, 64)),
        ((640, 480), "center-crop", (120, 160), (20, 0, 140, 120), (0, 0, 64, 64)),
        ((640, 480), "pad", (60, 80), (0, 0, 80, 60), (8, 0, 48, 64)),  # 64x48 is enough
        ((60, 40), "stretch", (40, 60, 3), (0, 0, 60, 40), (0, 0, 64, 64)),  # upscale
        ((1200, 40), "pad", (5, 150), (0, 0, 150, 5), (31, 0, 2, 64)),
    ],
)
def test_draft_and_geometry(
    size: tuple[int, int],
    fit: str,
    shape: tuple[int, ...],
    box: tuple[float, ...],
    region: tuple[int, ...],
) -> None:
    data = _encode(Image.fromarray(_picture(*size)), "JPEG", quality=90)
    decoded = decode_image(data, representation="rgb", height=64, width=64, fit=fit)
    assert decoded.pixels.shape[:2] == shape[:2]
    assert decoded.box == pytest.approx(box)
    assert decoded.region == region
    assert decoded.original_size == size


@pytest.mark.parametrize("fit", ["stretch", "center-crop", "pad"])
@pytest.mark.parametrize("size", [(1023, 769), (300, 299), (520, 130), (97, 600), (2000, 1500)])
def test_draft_keeps_at_least_the_output_resolution(fit: str, size: tuple[int, int]) -> None:
    data = _encode(Image.fromarray(_picture(*size, seed=2)), "JPEG", quality=80)
    height, width = 48, 80
    decoded = decode_image(data, representation="rgb", height=height, width=width, fit=fit)
    x0, y0, x1, y1 = decoded.box
    _, _, rh, rw = decoded.region
    scale = size[0] / decoded.pixels.shape[1]
    assert x1 - x0 >= rw - 1e-9
    assert y1 - y0 >= rh - 1e-9
    if round(scale) < 8:  # the next DCT scale would have been too small
        assert (x1 - x0) / 2 < rw or (y1 - y0) / 2 < rh
    if fit == "center-crop":
        assert (x1 - x0) / (y1 - y0) == pytest.approx(width / height)
    if fit == "pad":
        assert rw == width or rh == height
        assert rw / rh == pytest.approx(size[0] / size[1], rel=0.2, abs=1)


def test_draft_request_swaps_nothing_and_covers_the_crop() -> None:
    assert draft_request((640, 480), height=64, width=64, fit="stretch") == (64, 64)
    assert draft_request((640, 480), height=64, width=64, fit="center-crop") == (86, 64)
    assert draft_request((640, 480), height=64, width=64, fit="pad") == (64, 48)


def test_jpeg_grayscale_draft() -> None:
    data = _encode(Image.fromarray(_picture(256, 256)), "JPEG", quality=95)
    decoded = decode_image(data, representation="grayscale", height=64, width=64)
    with Image.open(io.BytesIO(data)) as im:
        im.draft("L", (64, 64))
        expected = np.asarray(im)[:, :, None]
    np.testing.assert_array_equal(decoded.pixels, expected)
    rgb = decode_image(data, representation="rgb", height=64, width=64).pixels
    luma = np.asarray(Image.fromarray(rgb).convert("L"))[:, :, None].astype(int)
    assert np.abs(decoded.pixels.astype(int) - luma).max() <= 3


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (the data is far too short)."""
    data = bytearray(_encode(Image.new("L", (1, 1)), "PNG"))
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def _stage(data: bytes, **kwargs: int) -> str:
    args = {"height": 64, "width": 64} | kwargs
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, representation="rgb", **args)
    err = info.value
    assert isinstance(err, DatakilnError)
    assert isinstance(err, ValueError)
    assert str(err)
    copy = pickle.loads(pickle.dumps(err))
    assert (type(copy), copy.stage, str(copy)) == (ImageDecodeError, err.stage, str(err))
    return err.stage


def test_broken_inputs_are_rejected_with_their_stage() -> None:
    jpeg = _encode(Image.fromarray(_picture(120, 90)), "JPEG")
    png = _encode(Image.fromarray(_picture(120, 90)), "PNG")
    assert _stage(b"") == "open"
    assert _stage(b"this is a text file, not an image\n") == "open"
    assert _stage(jpeg[:20]) == "open"
    assert _stage(jpeg[: len(jpeg) // 2]) == "decode"
    assert _stage(png[: len(png) // 2]) == "decode"
    assert _stage(jpeg[: len(jpeg) // 2], height=8, width=8) == "decode"  # drafted too


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_decompression_bombs_are_rejected_from_the_header() -> None:
    before = Image.MAX_IMAGE_PIXELS
    assert _stage(_png_declaring(20_000, 20_000)) == "limit"  # over our default 100 M
    assert _stage(_png_declaring(1000, 1000), max_pixels=999_999) == "limit"
    assert _stage(_png_declaring(1000, 1000), max_pixels=1_000_000) == "decode"  # allowed
    # The caller's limit governs, above Pillow's (its error past 2x, its warning past 1x):
    # these headers pass it and are opened, then fail to decode (they hold no pixel data).
    huge = int(2 * (before or 0)) + 1
    assert _stage(_png_declaring(huge // 10_000 + 1, 10_000), max_pixels=10**12) == "decode"
    warn = int(before or 0) + 10_000
    assert _stage(_png_declaring(warn // 10_000 + 1, 10_000), max_pixels=10**12) == "decode"
    assert _stage(_png_declaring(warn // 10_000 + 1, 10_000), max_pixels=warn) == "limit"
    assert before == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize(
    "kwargs",
    [
        {"representation": "cmyk"},
        {"fit": "cover"},
        {"height": 0},
        {"width": -1},
        {"max_pixels": 0},
    ],
)
def test_bad_arguments_raise_spec_error(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"representation": "rgb", "height": 8, "width": 8} | kwargs
    with pytest.raises(SpecError):
        decode_image(b"irrelevant", **args)  # type: ignore[arg-type]


def test_corpus_is_deterministic_and_decodes(tmp_path: Path) -> None:
    a = write_image_corpus(tmp_path / "a", 40, seed=3, broken=3)
    b = write_image_corpus(tmp_path / "b", 40, seed=3, broken=3)
    assert len(a.good) == 40
    assert len(a.broken) == 3
    assert [p.relative_to(a.root) for p in a.paths] == [p.relative_to(b.root) for p in b.paths]
    for pa, pb in zip(a.paths, b.paths, strict=True):
        assert pa.read_bytes() == pb.read_bytes()
    assert {p.parent.name for p in a.paths} == set(a.classes)
    formats, modes = set(), set()
    for path in a.good:
        decoded = decode_image(path.read_bytes(), representation="rgb", height=32, width=32)
        formats.add(decoded.format)
        modes.add(decoded.original_mode)
    assert formats >= {"JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"}
    assert modes >= {"RGB", "L", "P", "RGBA", "CMYK"}
    stages = sorted(_stage(p.read_bytes()) for p in a.broken)
    assert stages == ["decode", "open", "open"]
