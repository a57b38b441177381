"""Image, text and audio augmentations of the seed guide, as pure, jit-able JAX functions.

Every function maps ``(data, key)`` to new data of the same shape and dtype, with no Python
branch on a traced value, so each works under ``jax.jit`` and ``jax.vmap`` and gives the same
result with and without ``jit`` (up to float rounding). The batch versions vmap the
per-sample ones over a key per sample (``jax.random.split(key, batch_size)``) and are jitted;
the ``*_batch`` functions take and return batch dicts, replacing only their own entry.

Differences from the seed's code, which branched in Python on traced values (``if
bernoulli(...)``, ``int(k)``), so could not be jitted, and looped over samples:

* flips use ``jnp.where``, rotations ``lax.switch``; a non-square image is rotated by 0 or
  180 degrees only (90 would change its shape);
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
    k_flip, k_rot, k_bright, k_contrast, k_level, k_noise = jax.random.split(key, 6)
    dtype = image.dtype
    x = image.astype(jnp.float32)
    x = jnp.where(jax.random.bernoulli(k_flip, flip_prob), jnp.flip(x, axis=1), x)
    if x.shape[0] == x.shape[1]:
        k = jax.random.randint(k_rot, (), 0, 4)
        x = jax.lax.switch(k, [functools.partial(jnp.rot90, k=i, axes=(0, 1)) for i in range(4)], x)
    else:
        x = jnp.where(jax.random.bernoulli(k_rot), jnp.rot90(x, k=2, axes=(0, 1)), x)
    factor = jax.random.uniform(k_bright, minval=brightness[0], maxval=brightness[1])
    x = jnp.clip(x * factor, 0.0, 1.0)
    factor = jax.random.uniform(k_contrast, minval=contrast[0], maxval=contrast[1])
    mean = jnp.mean(x)
    x = jnp.clip((x - mean) * factor + mean, 0.0, 1.0)
    level = jax.random.uniform(k_level, minval=0.0, maxval=max_noise)
    x = jnp.clip(x + level * jax.random.normal(k_noise, x.shape), 0.0, 1.0)
    return x.astype(dtype)


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
    return augment_images(images, key)


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
    k_mask, k_replace, k_ids = jax.random.split(key, 3)
    word = tokens >= num_reserved
    mask = jax.random.bernoulli(k_mask, mask_prob, tokens.shape) & word
    out = jnp.where(mask, jnp.asarray(mask_token_id, tokens.dtype), tokens)
    replace = jax.random.bernoulli(k_replace, replace_prob, tokens.shape) & word
    random_ids = jax.random.randint(
        k_ids, tokens.shape, num_reserved, vocab_size, dtype=tokens.dtype
    )
    return jnp.where(replace, random_ids, out)


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
    k_scale, k_shift, k_level, k_noise = jax.random.split(key, 4)
    dtype = audio.dtype
    x = audio.astype(jnp.float32)
    x = x * jax.random.uniform(k_scale, minval=scale[0], maxval=scale[1])
    max_shift = int(max_shift_fraction * x.shape[0])
    x = jnp.roll(x, jax.random.randint(k_shift, (), -max_shift, max_shift + 1))
    level = jax.random.uniform(k_level, minval=0.0, maxval=max_noise)
    x = x + level * jax.random.normal(k_noise, x.shape)
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
