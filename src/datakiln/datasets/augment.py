"""Image, text and audio augmentations of the seed guide, as pure, jit-able JAX functions.

Every function maps ``(data, key)`` to new data of the same shape and dtype, with no Python
branch on a traced value, so each works under ``jax.jit`` and ``jax.vmap`` and gives the same
result with and without ``jit`` (up to float rounding). The batch versions vmap the
per-sample ones over a key per sample (``jax.random.split(key, batch_size)``) and are jitted;
the ``*_batch`` functions take and return batch dicts, replacing only their own entry.

Differences from the seed's code, which branched in Python on traced values (``if
bernoulli(...)``, ``int(k)``), so could not be jitted, and looped over samples:

* flips and rotations choose with ``jnp.where`` / ``lax.select_n``; a non-square image is
  rotated by 0 or 180 degrees only (90 would change its shape);
* the image noise level and the noise draw use separate keys (the seed reused one);
* text masking and replacement leave the reserved ids ``< num_reserved`` (pad, unk, bos, eos)
  alone, so padding stays padding and sequences keep their BOS/EOS;
* the audio shift is drawn from ``[-max_shift, max_shift]`` inclusive.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

# --- images -----------------------------------------------------------------------------------


def augment_image(
    image: jax.Array,
    key: jax.Array,
    *,
    flip_prob: float = 0.5,
    brightness: tuple[float, float] = (0.8, 1.2),
    contrast: tuple[float, float] = (0.8, 1.2),
    max_noise: float = 0.05,
) -> jax.Array:
    """Random flip, 90-degree rotation, brightness, contrast and Gaussian noise of one image.

    Args:
        image: Float ``(H, W, C)`` in ``[0, 1]``.
        key: PRNG key.
        flip_prob: Probability of a horizontal flip.
        brightness: Range of the brightness factor.
        contrast: Range of the contrast factor (around the image mean).
        max_noise: Largest standard deviation of the added noise.

    Returns:
        The augmented image: same shape and dtype, clipped to ``[0, 1]``.
    """
    # One uniform draw for all five scalar choices and one normal draw for the noise (the seed
    # drew the noise level and the noise from one key).
    u = jax.random.uniform(key, (5,))
    noise = jax.random.normal(jax.random.fold_in(key, 1), image.shape)
    dtype = image.dtype
    x = image.astype(jnp.float32)
    x = jnp.where(u[0] < flip_prob, jnp.flip(x, axis=1), x)
    if x.shape[0] == x.shape[1]:
        k = jnp.minimum(jnp.floor(4 * u[1]).astype(jnp.int32), 3)
        x = jax.lax.select_n(k, *(jnp.rot90(x, k=i, axes=(0, 1)) for i in range(4)))
    else:
        x = jnp.where(u[1] < 0.5, jnp.rot90(x, k=2, axes=(0, 1)), x)
    x = jnp.clip(x * _between(u[2], brightness), 0.0, 1.0)
    mean = jnp.mean(x)
    x = jnp.clip((x - mean) * _between(u[3], contrast) + mean, 0.0, 1.0)
    x = jnp.clip(x + _between(u[4], (0.0, max_noise)) * noise, 0.0, 1.0)
    return x.astype(dtype)


def _between(u: jax.Array, bounds: tuple[float, float]) -> jax.Array:
    """A uniform [0, 1) draw mapped to [low, high)."""
    return bounds[0] + (bounds[1] - bounds[0]) * u


@jax.jit
def augment_images(images: jax.Array, key: jax.Array) -> jax.Array:
    """:func:`augment_image` (default settings) of every image of ``(N, H, W, C)``."""
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(augment_image)(images, keys)


def augment_batch(batch: Mapping[str, Any], key: jax.Array) -> dict[str, Any]:
    """A copy of ``batch`` with ``batch["images"]`` augmented by :func:`augment_images`."""
    return {**batch, "images": augment_images(jnp.asarray(batch["images"]), key)}


def augment_batch_jit(images: jax.Array, key: jax.Array) -> jax.Array:
    """The seed's name for the jitted batch augmentation of an image array."""
    augmented: jax.Array = augment_images(images, key)  # jax.jit's wrapper returns Any
    return augmented


# --- text -------------------------------------------------------------------------------------


def augment_text_tokens(
    tokens: jax.Array,
    vocab_size: int,
    key: jax.Array,
    *,
    mask_prob: float = 0.15,
    replace_prob: float = 0.05,
    mask_token_id: int = 1,
    num_reserved: int = 4,
) -> jax.Array:
    """Random masking, then random replacement, of the word tokens of one sequence.

    Args:
        tokens: Integer ``(L,)`` token ids.
        vocab_size: Vocabulary size; replacements are drawn from ``[num_reserved, vocab_size)``.
        key: PRNG key.
        mask_prob: Probability that a word token becomes ``mask_token_id``.
        replace_prob: Probability that a word token becomes a random word id.
        mask_token_id: Id of the mask (the seed uses UNK, 1).
        num_reserved: Ids below this (pad, unk, bos, eos) are never changed.

    Returns:
        Same shape and dtype; ids stay in ``[0, vocab_size)`` when they were.
    """
    u = jax.random.uniform(key, (3, *tokens.shape))  # mask, replace, replacement id
    word = tokens >= num_reserved
    out = jnp.where((u[0] < mask_prob) & word, jnp.asarray(mask_token_id, tokens.dtype), tokens)
    span = vocab_size - num_reserved
    random_ids = num_reserved + jnp.minimum(jnp.floor(u[2] * span).astype(jnp.int32), span - 1)
    return jnp.where((u[1] < replace_prob) & word, random_ids.astype(tokens.dtype), out)


@functools.partial(jax.jit, static_argnames=("vocab_size",))
def augment_text_array(tokens: jax.Array, vocab_size: int, key: jax.Array) -> jax.Array:
    """:func:`augment_text_tokens` (default settings) of every row of ``(N, L)`` tokens."""
    keys = jax.random.split(key, tokens.shape[0])
    return jax.vmap(lambda t, k: augment_text_tokens(t, vocab_size, k))(tokens, keys)


def augment_text_batch(batch: Mapping[str, Any], vocab_size: int, key: jax.Array) -> dict[str, Any]:
    """A copy of ``batch`` with ``batch["text_tokens"]`` augmented."""
    tokens = augment_text_array(jnp.asarray(batch["text_tokens"]), vocab_size, key)
    return {**batch, "text_tokens": tokens}


# --- audio ------------------------------------------------------------------------------------


def augment_audio(
    audio: jax.Array,
    sample_rate: int,
    key: jax.Array,
    *,
    scale: tuple[float, float] = (0.7, 1.3),
    max_shift_fraction: float = 0.1,
    max_noise: float = 0.05,
) -> jax.Array:
    """Random gain, circular time shift and Gaussian noise, then peak normalisation.

    Args:
        audio: Float ``(T,)`` waveform.
        sample_rate: Sample rate in Hz (kept for the seed's signature; the shift is a
            fraction of the clip).
        key: PRNG key.
        scale: Range of the gain.
        max_shift_fraction: Largest shift as a fraction of the clip length.
        max_noise: Largest standard deviation of the added noise.

    Returns:
        Same shape and dtype, peak-normalised into ``[-1, 1]`` (silence stays silent).
    """
    del sample_rate
    u = jax.random.uniform(key, (3,))  # gain, shift, noise level
    noise = jax.random.normal(jax.random.fold_in(key, 1), audio.shape)
    dtype = audio.dtype
    x = audio.astype(jnp.float32) * _between(u[0], scale)
    max_shift = int(max_shift_fraction * x.shape[0])
    shift = jnp.minimum(jnp.floor(u[1] * (2 * max_shift + 1)).astype(jnp.int32), 2 * max_shift)
    x = jnp.roll(x, shift - max_shift)
    x = x + _between(u[2], (0.0, max_noise)) * noise
    peak = jnp.max(jnp.abs(x))
    x = jnp.where(peak > 0, x / jnp.where(peak > 0, peak, 1.0), x)
    return jnp.clip(x, -1.0, 1.0).astype(dtype)


@functools.partial(jax.jit, static_argnames=("sample_rate",))
def augment_audio_array(audio: jax.Array, sample_rate: int, key: jax.Array) -> jax.Array:
    """:func:`augment_audio` (default settings) of every row of ``(N, T)`` waveforms."""
    keys = jax.random.split(key, audio.shape[0])
    return jax.vmap(lambda a, k: augment_audio(a, sample_rate, k))(audio, keys)


def augment_audio_batch(
    batch: Mapping[str, Any], sample_rate: int, key: jax.Array
) -> dict[str, Any]:
    """A copy of ``batch`` with ``batch["audio"]`` augmented."""
    return {**batch, "audio": augment_audio_array(jnp.asarray(batch["audio"]), sample_rate, key)}
