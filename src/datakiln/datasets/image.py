"""Image modality: ``ImageModality.process`` and the synthetic image datasets of the seed guide.

Batches of these datasets hold ``"images"`` (float32, ``(B, height, width, channels)``, in
``[0, 1]`` when the config normalises and in ``[0, 255]`` otherwise) and ``"indices"`` (int64);
``MNISTLikeDataset`` adds ``"labels"`` (int32). Images are rendered lazily, vectorised in JAX,
from ``fold_in(dataset_key, index)``: sample ``i`` is the same on every access and a dataset of
any size costs nothing until it is read.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from datakiln.datasets import _font, _lazy
from datakiln.datasets.base import BaseDataset
from datakiln.datasets.configs import ImageModalityConfig, ImageRepresentation
from datakiln.datasets.rngs import as_rngs
from datakiln.errors import SpecError

PATTERN_TYPES: tuple[str, ...] = ("random", "gradient", "checkerboard", "circles")
# Circles drawn per "circles" image.
_NUM_CIRCLES = 3
# ITU-R BT.601 luma weights, used to turn RGB into grayscale.
_LUMA = (0.299, 0.587, 0.114)


class ImageModality:
    """Brings raw images to a config's size, channel layout and value range.

    Args:
        config: The target :class:`ImageModalityConfig`.
        rngs: Accepted for the seed's signature; processing is deterministic.
    """

    def __init__(self, config: ImageModalityConfig, *, rngs: Any = None) -> None:
        self.config = _image_config(config)
        self.rngs = as_rngs(rngs)

    def process(self, images: Any) -> jax.Array:
        """Convert channels, resize and normalise images.

        Args:
            images: ``(N, H, W, C)``, ``(H, W, C)`` or ``(H, W)`` array, NumPy or JAX. Integer
                images are scaled by their dtype's maximum (uint8 -> /255); float images are
                taken to be in ``[0, 1]``. ``C`` may be 1 (gray), 2 (gray + alpha), 3 (RGB) or
                4 (RGBA).

        Returns:
            float32 ``(N, height, width, channels)`` (no leading axis if none came in): the
            channels converted to the config's representation (luma for RGB -> gray, alpha
            dropped or set to 1), resized with antialiased bilinear interpolation, then
            clipped to ``[0, 1]`` and, when ``config.normalize`` is false, scaled to
            ``[0, 255]``.

        Raises:
            SpecError: The shape or channel count is not one of those above.
        """
        arr = images if isinstance(images, jax.Array) else np.asarray(images)
        if arr.ndim == 2:
            arr = arr[..., None]
        single = arr.ndim == 3
        if single:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] not in (1, 2, 3, 4):
            raise SpecError(
                f"ImageModality.process expects (N, H, W, C), (H, W, C) or (H, W) images with "
                f"1-4 channels, got shape {tuple(np.shape(images))}"
            )
        dtype = np.dtype(arr.dtype)
        if dtype == np.bool_:
            scale = 1.0
        elif np.issubdtype(dtype, np.integer):
            scale = 1.0 / float(np.iinfo(dtype).max)
        else:
            scale = 1.0
        out: jax.Array = _process(
            jnp.asarray(arr),
            height=self.config.height,
            width=self.config.width,
            channels=self.config.channels,
            normalize=self.config.normalize,
            scale=scale,
        )
        return out[0] if single else out


@functools.partial(jax.jit, static_argnames=("height", "width", "channels", "normalize", "scale"))
def _process(
    images: jax.Array, *, height: int, width: int, channels: int, normalize: bool, scale: float
) -> jax.Array:
    x = images.astype(jnp.float32) * scale
    x = convert_channels(x, channels)
    n = x.shape[0]
    if x.shape[1:3] != (height, width):
        x = jax.image.resize(x, (n, height, width, channels), method="linear", antialias=True)
    x = jnp.clip(x, 0.0, 1.0)
    return x if normalize else x * 255.0


def convert_channels(images: jax.Array, channels: int) -> jax.Array:
    """Convert the last axis of float images (1, 2, 3 or 4 channels) to ``channels``.

    Gray (+ alpha) becomes RGB by repetition, RGB becomes gray by BT.601 luma, alpha is dropped
    or added as 1.
    """
    c_in = images.shape[-1]
    if c_in == channels:
        return images
    has_alpha = c_in in (2, 4)
    alpha = images[..., -1:] if has_alpha else jnp.ones_like(images[..., :1])
    base = images[..., :-1] if has_alpha else images
    if channels == 1:
        if base.shape[-1] == 1:
            return base
        return jnp.tensordot(base, jnp.asarray(_LUMA, base.dtype), axes=1)[..., None]
    rgb = base if base.shape[-1] == 3 else jnp.repeat(base, 3, axis=-1)
    return rgb if channels == 3 else jnp.concatenate([rgb, alpha], axis=-1)


class SyntheticImageDataset(BaseDataset):
    """Synthetic images of one pattern type, rendered lazily by index.

    Patterns (every pixel in ``[0, 1]`` before the config's scaling):

    * ``"random"``: independent uniform noise per pixel and channel;
    * ``"gradient"``: a linear ramp between two random colours along a random direction,
      stretched over the whole image;
    * ``"checkerboard"``: squares of a random size and phase in a dark and a light colour;
    * ``"circles"``: three antialiased discs of random centre, radius and colour on a dark
      background.

    Args:
        config: Image size, channels and value range (default ``ImageModalityConfig()``).
        dataset_size: Number of samples (any size: nothing is stored).
        pattern_type: One of :data:`PATTERN_TYPES`.
        split: Split name.
        rngs: Seed source; the dataset draws one key for its content at construction.

    Raises:
        SpecError: Unknown pattern type or negative size.
    """

    def __init__(
        self,
        config: ImageModalityConfig | None = None,
        dataset_size: int = 1000,
        pattern_type: str = "random",
        split: str = "train",
        *,
        rngs: Any = None,
    ) -> None:
        super().__init__(_image_config(config), split, rngs=rngs)
        if pattern_type not in PATTERN_TYPES:
            raise SpecError(f"pattern_type={pattern_type!r} is not one of {list(PATTERN_TYPES)}")
        self.dataset_size = _lazy.check_size(dataset_size, "dataset_size")
        self.pattern_type = pattern_type
        self._key = self.rngs.key("default")

    def __len__(self) -> int:
        return self.dataset_size

    def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
        cfg = self.config
        images = _lazy.render(
            _synthetic_images,
            self._key,
            indices,
            pattern=self.pattern_type,
            shape=cfg.shape,
        )
        return {"images": _scale(images, cfg), "indices": np.asarray(indices, dtype=np.int64)}


@functools.partial(jax.jit, static_argnames=("pattern", "shape"))
def _synthetic_images(
    key: jax.Array,
    indices: jax.Array,
    *,
    pattern: str,
    shape: tuple[int, int, int],
) -> jax.Array:
    draw = {
        "random": _random_image,
        "gradient": _gradient_image,
        "checkerboard": _checkerboard_image,
        "circles": _circles_image,
    }[pattern]
    images = jax.vmap(functools.partial(draw, shape=shape))(_lazy.sample_keys(key, indices))
    return jnp.clip(images, 0.0, 1.0)


def _scale(images: np.ndarray, config: ImageModalityConfig) -> np.ndarray:
    """Images rendered in [0, 1], scaled to [0, 255] when the config does not normalise.

    Done on the host so that both settings share one compiled renderer.
    """
    if not config.normalize:
        images = np.multiply(images, np.float32(255.0), dtype=np.float32)
    return images


def _grid(height: int, width: int) -> tuple[jax.Array, jax.Array]:
    """Pixel-centre coordinates ``(y, x)``, each ``(height, width)``, in pixels."""
    ys = jnp.arange(height, dtype=jnp.float32) + 0.5
    xs = jnp.arange(width, dtype=jnp.float32) + 0.5
    y, x = jnp.meshgrid(ys, xs, indexing="ij")
    return y, x


# Each pattern draws all its scalar parameters with one uniform call (and a large array with
# at most one more): every random call site compiles to its own Threefry computation, and
# compile time, not run time, dominates for images this small.


def _random_image(key: jax.Array, *, shape: tuple[int, int, int]) -> jax.Array:
    return jax.random.uniform(key, shape)


def _gradient_image(key: jax.Array, *, shape: tuple[int, int, int]) -> jax.Array:
    h, w, c = shape
    u = jax.random.uniform(key, (1 + 2 * c,))
    angle = 2 * jnp.pi * u[0]
    y, x = _grid(h, w)
    proj = jnp.cos(angle) * x / w + jnp.sin(angle) * y / h
    lo, hi = proj.min(), proj.max()
    # The ramp spans the whole image: t is exactly 0 and 1 at its ends, so the image is a
    # convex combination of two colours in [0, 1] (the seed's ramp left that range).
    t = jnp.where(hi > lo, (proj - lo) / jnp.where(hi > lo, hi - lo, 1.0), 0.5)
    c0, c1 = u[1 : 1 + c], u[1 + c :]
    return c0 + t[..., None] * (c1 - c0)


def _checkerboard_image(key: jax.Array, *, shape: tuple[int, int, int]) -> jax.Array:
    h, w, c = shape
    u = jax.random.uniform(key, (3 + 2 * c,))
    max_cell = max(2, min(h, w) // 2)
    cell = jnp.minimum(2 + jnp.floor(u[0] * (max_cell - 1)).astype(jnp.int32), max_cell)
    phase = jnp.floor(u[1:3] * cell.astype(jnp.float32)).astype(jnp.int32)
    y = jnp.arange(h)[:, None] + phase[0]
    x = jnp.arange(w)[None, :] + phase[1]
    odd = ((y // cell + x // cell) % 2).astype(bool)
    dark = 0.4 * u[3 : 3 + c]
    light = 0.6 + 0.4 * u[3 + c :]
    return jnp.where(odd[..., None], light, dark)


def _circles_image(key: jax.Array, *, shape: tuple[int, int, int]) -> jax.Array:
    h, w, c = shape
    k = _NUM_CIRCLES
    u = jax.random.uniform(key, (c + 3 * k + k * c,))
    y, x = _grid(h, w)
    image = jnp.broadcast_to(0.3 * u[:c], shape)
    centres = u[c : c + 2 * k].reshape(k, 2) * jnp.array([h, w], jnp.float32)
    radii = (0.1 + 0.25 * u[c + 2 * k : c + 3 * k]) * min(h, w)
    colors = 0.4 + 0.6 * u[c + 3 * k :].reshape(k, c)
    for n in range(k):  # a fixed, tiny unrolled loop over circles, not samples
        dist = jnp.hypot(y - centres[n, 0], x - centres[n, 1])
        alpha = jnp.clip(radii[n] - dist + 0.5, 0.0, 1.0)[..., None]
        image = image * (1.0 - alpha) + colors[n] * alpha
    return image


class MNISTLikeDataset(BaseDataset):
    """Handwriting-like glyphs: class ``k`` is the ``k``-th of ``0-9A-Z`` from a 5x7 font.

    Each sample draws its label uniformly, then renders the class glyph with random size,
    aspect, position, slant and stroke intensity, plus a little noise, so that classes are
    distinct and recognisable (a nearest-template classifier separates them) while samples of
    one class vary. Batches hold ``"images"``, ``"labels"`` (int32) and ``"indices"``.

    Args:
        config: Image size and layout (default: 28x28 grayscale); colour layouts repeat the
            gray value and set alpha to 1.
        dataset_size: Number of samples (lazy: any size is cheap).
        num_classes: Number of classes, 1 to 36.
        split: Split name.
        rngs: Seed source; one key for the content is drawn at construction.

    Raises:
        SpecError: ``num_classes`` out of range or negative size.
    """

    def __init__(
        self,
        config: ImageModalityConfig | None = None,
        dataset_size: int = 60000,
        num_classes: int = 10,
        split: str = "train",
        *,
        rngs: Any = None,
    ) -> None:
        if config is None:
            config = ImageModalityConfig(
                representation=ImageRepresentation.GRAYSCALE, height=28, width=28
            )
        super().__init__(_image_config(config), split, rngs=rngs)
        max_classes = len(_font.GLYPH_NAMES)
        if not isinstance(num_classes, int) or not 1 <= num_classes <= max_classes:
            raise SpecError(
                f"num_classes must be an integer in [1, {max_classes}], got {num_classes!r}"
            )
        self.dataset_size = _lazy.check_size(dataset_size, "dataset_size")
        self.num_classes = num_classes
        self.class_names: str = _font.GLYPH_NAMES[:num_classes]
        self._key = self.rngs.key("default")
        self._glyphs = jnp.asarray(_font.glyph_bitmaps()[:num_classes])

    def __len__(self) -> int:
        return self.dataset_size

    def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
        cfg = self.config
        images, labels = _lazy.render(
            _glyph_images,
            self._key,
            indices,
            self._glyphs,
            shape=cfg.shape,
        )
        return {
            "images": _scale(images, cfg),
            "labels": labels,
            "indices": np.asarray(indices, dtype=np.int64),
        }

    def templates(self) -> np.ndarray:
        """One clean, centred rendering per class, ``(num_classes, H, W, C)`` float32.

        Useful to check that samples look like their class.
        """
        return _scale(
            np.asarray(_glyph_templates(self._glyphs, shape=self.config.shape)), self.config
        )


@functools.partial(jax.jit, static_argnames=("shape",))
def _glyph_images(
    key: jax.Array,
    indices: jax.Array,
    glyphs: jax.Array,
    *,
    shape: tuple[int, int, int],
) -> tuple[jax.Array, jax.Array]:
    def one(k: jax.Array) -> tuple[jax.Array, jax.Array]:
        h, w, _ = shape
        num_classes = glyphs.shape[0]
        u = jax.random.uniform(k, (7,))
        label = jnp.minimum(jnp.floor(u[0] * num_classes).astype(jnp.int32), num_classes - 1)
        size = 0.55 + 0.2 * u[1]
        aspect = 0.85 + 0.3 * u[2]
        offset = 0.16 * u[3:5] - 0.08
        slant = 0.3 * u[5] - 0.15
        ink = 0.8 + 0.2 * u[6]
        gray = _draw_glyph(glyphs[label], h, w, size, aspect, offset, slant) * ink
        gray = gray + 0.03 * jax.random.normal(jax.random.fold_in(k, 1), gray.shape)
        return gray, label

    gray, labels = jax.vmap(one)(_lazy.sample_keys(key, indices))
    return convert_channels(jnp.clip(gray, 0.0, 1.0)[..., None], shape[2]), labels


@functools.partial(jax.jit, static_argnames=("shape",))
def _glyph_templates(glyphs: jax.Array, *, shape: tuple[int, int, int]) -> jax.Array:
    h, w, _ = shape
    draw = functools.partial(
        _draw_glyph, h=h, w=w, size=0.65, aspect=1.0, offset=jnp.zeros(2), slant=0.0
    )
    return convert_channels(jax.vmap(draw)(glyphs)[..., None], shape[2])


def _draw_glyph(
    glyph: jax.Array,
    h: int,
    w: int,
    size: jax.Array | float,
    aspect: jax.Array | float,
    offset: jax.Array,
    slant: jax.Array | float,
) -> jax.Array:
    """Bilinearly sample a 7x5 glyph into an ``(h, w)`` image, placed by the given jitter."""
    gh, gw = _font.GLYPH_HEIGHT, _font.GLYPH_WIDTH
    box_h = size * h
    box_w = box_h * gw / gh * aspect
    cy = h * (0.5 + offset[0])
    cx = w * (0.5 + offset[1])
    y, x = _grid(h, w)
    v = (y - (cy - box_h / 2)) / box_h * gh - 0.5
    u = (x - (cx - box_w / 2)) / box_w * gw - 0.5 + slant * (v - (gh - 1) / 2)
    padded = jnp.pad(glyph, 1)
    image: jax.Array = jax.scipy.ndimage.map_coordinates(
        padded, [v + 1, u + 1], order=1, mode="constant"
    )
    return image


def create_image_dataset(
    dataset_type: str = "synthetic",
    config: ImageModalityConfig | None = None,
    **kwargs: Any,
) -> BaseDataset:
    """Build an image dataset by type name.

    Args:
        dataset_type: ``"synthetic"`` (:class:`SyntheticImageDataset`) or ``"mnist_like"``
            (:class:`MNISTLikeDataset`; ``"mnist"`` is accepted too).
        config: The image config.
        **kwargs: The dataset's other arguments (``dataset_size``, ``pattern_type``, ...).

    Raises:
        SpecError: Unknown ``dataset_type``.
    """
    kinds = {
        "synthetic": SyntheticImageDataset,
        "mnist_like": MNISTLikeDataset,
        "mnist": MNISTLikeDataset,
    }
    if dataset_type not in kinds:
        raise SpecError(f"dataset_type={dataset_type!r} is not one of {sorted(kinds)}")
    dataset: BaseDataset = kinds[dataset_type](config=config, **kwargs)
    return dataset


def _image_config(config: Any) -> ImageModalityConfig:
    if config is None:
        return ImageModalityConfig()
    if not isinstance(config, ImageModalityConfig):
        raise SpecError(f"image datasets need an ImageModalityConfig, got {type(config).__name__}")
    return config
