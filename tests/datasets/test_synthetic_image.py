"""Synthetic image datasets and ImageModality.process.

Shapes stay at 32x32x3 / 28x28x1 and batches within one 64-row bucket where possible, so these
tests share compilations with the guide's.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import datakiln.datasets as dk
from datakiln.datasets.image import PATTERN_TYPES
from datakiln.datasets.testing import DatasetTests
from datakiln.errors import SpecError

RGB32 = dk.ImageModalityConfig(representation=dk.ImageRepresentation.RGB, height=32, width=32)
GRAY28 = dk.ImageModalityConfig(representation="grayscale", height=28, width=28)


class TestSyntheticImageConformance(DatasetTests):
    @pytest.fixture
    def dataset(self) -> dk.BaseDataset:
        return dk.SyntheticImageDataset(RGB32, 100, "circles", rngs=1)


class TestMNISTLikeConformance(DatasetTests):
    @pytest.fixture
    def dataset(self) -> dk.BaseDataset:
        return dk.MNISTLikeDataset(RGB32, 90, num_classes=36, rngs=2)

    def test_colour_layouts_repeat_the_gray_value(self, dataset: dk.BaseDataset) -> None:
        image = dataset[3]["images"]
        assert image.shape == (32, 32, 3)
        np.testing.assert_array_equal(image[..., 0], image[..., 2])


@pytest.mark.parametrize("pattern", PATTERN_TYPES)
def test_patterns_are_in_range_and_fixed(pattern: str) -> None:
    data = dk.SyntheticImageDataset(RGB32, 5000, pattern, rngs=3)
    batch = data.get_batch(indices=np.arange(40, 80))
    images = batch["images"]
    assert images.shape == (40, 32, 32, 3)
    assert images.dtype == np.float32
    assert images.min() >= 0.0
    assert images.max() <= 1.0
    assert images.std() > 0.05, "patterns vary"
    again = data.get_batch(indices=[41])["images"][0]
    np.testing.assert_array_equal(again, images[1])
    other = dk.SyntheticImageDataset(RGB32, 5000, pattern, rngs=4).get_batch(indices=[41])
    assert not np.array_equal(other["images"][0], images[1]), "the seed matters"


def test_samples_are_the_same_in_any_batch() -> None:
    # Batches are padded to power-of-two buckets: 1 and 200 indices run different programs.
    data = dk.SyntheticImageDataset(RGB32, 1000, "circles", rngs=6)
    alone = data.get_batch(indices=[150])["images"][0]
    np.testing.assert_array_equal(data.get_batch(indices=np.arange(200))["images"][150], alone)


def test_gradient_spans_a_ramp() -> None:
    images = dk.SyntheticImageDataset(RGB32, 64, "gradient", rngs=0).get_batch(indices=range(8))
    for image in images["images"]:
        # A linear ramp: along its direction the colour changes monotonically end to end.
        lum = image.mean(axis=2)
        corners = [lum[0, 0], lum[0, -1], lum[-1, 0], lum[-1, -1]]
        assert lum.min() >= min(corners) - 1e-5
        assert lum.max() <= max(corners) + 1e-5


def test_checkerboard_has_two_colours() -> None:
    image = dk.SyntheticImageDataset(RGB32, 64, "checkerboard", rngs=0)[5]["images"]
    assert len(np.unique(image.reshape(-1, 3), axis=0)) == 2


def test_unnormalised_images_use_0_to_255() -> None:
    config = dk.ImageModalityConfig(height=32, width=32, normalize=False)
    images = dk.SyntheticImageDataset(config, 64, "random", rngs=0).get_batch(16)["images"]
    assert images.max() > 200
    assert images.max() <= 255
    assert images.min() >= 0


def test_huge_datasets_are_lazy() -> None:
    start = time.perf_counter()
    data = dk.SyntheticImageDataset(RGB32, 2_000_000_000, "random", rngs=0)
    sample = data[1_999_999_999]
    assert sample["images"].shape == (32, 32, 3)
    assert sample["index"] == 1_999_999_999
    assert time.perf_counter() - start < 30
    with pytest.raises(SpecError, match="2\\*\\*31"):
        dk.SyntheticImageDataset(RGB32, 2**31, "random")


def test_bad_arguments() -> None:
    with pytest.raises(SpecError, match="pattern_type"):
        dk.SyntheticImageDataset(RGB32, 10, "stripes")
    with pytest.raises(SpecError, match="dataset_size"):
        dk.SyntheticImageDataset(RGB32, -1)
    with pytest.raises(SpecError, match="ImageModalityConfig"):
        dk.SyntheticImageDataset(dk.AudioModalityConfig(), 10)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="num_classes"):
        dk.MNISTLikeDataset(GRAY28, 10, num_classes=37)
    with pytest.raises(SpecError, match="dataset_type"):
        dk.create_image_dataset("cifar", RGB32)


def _classify(images: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """Nearest template by normalised correlation, allowing shifts of up to 3 pixels."""

    def unit(a: np.ndarray) -> np.ndarray:
        a = a.reshape(len(a), -1)
        a = a - a.mean(axis=1, keepdims=True)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    best = np.full((len(images), len(templates)), -np.inf)
    for dy in range(-3, 4):
        for dx in range(-3, 4):
            shifted = np.roll(templates, (dy, dx), axis=(1, 2))
            best = np.maximum(best, unit(images) @ unit(shifted).T)
    return best.argmax(axis=1)


def test_mnist_like_classes_are_distinct_and_recognisable() -> None:
    data = dk.MNISTLikeDataset(GRAY28, 60000, num_classes=10, rngs=5)
    batch = data.get_batch(indices=np.arange(64))
    labels = batch["labels"]
    assert labels.dtype == np.int32
    assert set(labels.tolist()) == set(range(10))
    templates = data.templates()
    assert templates.shape == (10, 28, 28, 1)
    flat = templates.reshape(10, -1)
    assert len({row.tobytes() for row in flat}) == 10
    accuracy = (_classify(batch["images"][..., 0], templates[..., 0]) == labels).mean()
    assert accuracy > 0.9
    assert data.class_names == "0123456789"


def test_all_36_glyphs_differ() -> None:
    from datakiln.datasets._font import glyph_bitmaps

    glyphs = glyph_bitmaps()
    assert glyphs.shape == (36, 7, 5)
    assert len({g.tobytes() for g in glyphs}) == 36


# --- ImageModality.process ----------------------------------------------------------------------


def test_process_resizes_and_normalises_uint8() -> None:
    raw = np.random.default_rng(0).integers(0, 256, (3, 64, 48, 3), dtype=np.uint8)
    out = np.asarray(dk.ImageModality(RGB32).process(raw))
    assert out.shape == (3, 32, 32, 3)
    assert out.dtype == np.float32
    assert out.min() >= 0
    assert out.max() <= 1
    # Antialiased downscaling averages: a random image's mean is kept, its noise smoothed.
    np.testing.assert_allclose(out.mean(), raw.mean() / 255, atol=0.01)
    assert out.std() < raw.std() / 255


def test_process_samples_a_smooth_image_at_pixel_centres() -> None:
    # A slow wave survives antialiased 2x downscaling: output pixel x sits at input pixel
    # position 2x + 0.5, where the wave is evaluated (the filter barely attenuates it).
    x = np.arange(64, dtype=np.float32)

    def wave(pos):
        return 0.5 + 0.4 * np.sin(2 * np.pi * pos / 64)

    raw = np.broadcast_to(wave(x)[None, :, None], (64, 64, 3))
    out = np.asarray(dk.ImageModality(RGB32).process(raw))
    expected = wave(2 * np.arange(32, dtype=np.float32) + 0.5)
    np.testing.assert_allclose(out[16, 2:-2, 0], expected[2:-2], atol=0.01)


def test_process_against_pillow_if_available() -> None:
    image_mod = pytest.importorskip("PIL.Image")
    ramp = np.tile(np.linspace(0, 255, 80, dtype=np.float32), (60, 1)).astype(np.uint8)
    ours = np.asarray(dk.ImageModality(GRAY28).process(ramp))[..., 0] * 255
    theirs = np.asarray(
        image_mod.fromarray(ramp).resize((28, 28), image_mod.Resampling.BILINEAR), np.float32
    )
    np.testing.assert_allclose(ours[:, 3:-3], theirs[:, 3:-3], atol=3.0)


def test_process_converts_channels() -> None:
    rgba = np.zeros((32, 32, 4), np.float32)
    rgba[..., 0] = 1.0
    gray = np.asarray(dk.ImageModality(GRAY28).process(rgba))
    np.testing.assert_allclose(gray, 0.299, atol=1e-5)
    rgb = np.asarray(dk.ImageModality(RGB32).process(np.full((32, 32), 0.5, np.float32)))
    np.testing.assert_allclose(rgb, 0.5, atol=1e-6)
    alpha = dk.ImageModalityConfig(representation="rgba", height=32, width=32)
    assert np.asarray(dk.ImageModality(alpha).process(rgb))[..., 3].min() == 1.0
    raw = dk.ImageModalityConfig(height=32, width=32, normalize=False)
    assert float(np.asarray(dk.ImageModality(raw).process(np.ones((32, 32, 3)))).max()) == 255.0
    with pytest.raises(SpecError, match="shape"):
        dk.ImageModality(RGB32).process(np.zeros((2, 3, 4, 5, 6)))


def test_create_image_dataset_kinds() -> None:
    assert isinstance(
        dk.create_image_dataset("mnist_like", GRAY28, dataset_size=5), dk.MNISTLikeDataset
    )
    made = dk.create_image_dataset("synthetic", RGB32, pattern_type="circles", dataset_size=5)
    assert isinstance(made, dk.SyntheticImageDataset)
    assert made.pattern_type == "circles"
