"""Augmentations keep shapes, dtypes and value ranges, and agree with and without jit.

"Without jit" is the seed's way: the per-sample function called op by op in a Python loop
over the batch, with the keys ``jax.random.split(key, batch_size)``; "with jit" is datakiln's
jitted, vmapped batch function. Shapes are fixed so that hypothesis explores keys and values
without compiling a new function per example.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import datakiln.datasets as dk

IMAGE_SHAPE = (3, 8, 8, 3)
SEEDS = st.integers(0, 2**31 - 1)


def _images(shape: tuple[int, ...], seed: int) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), shape)


@settings(max_examples=8, deadline=None)
@given(seed=SEEDS, key_seed=SEEDS)
def test_image_augmentation_properties(seed: int, key_seed: int) -> None:
    shape = IMAGE_SHAPE
    images = _images(shape, seed)
    key = jax.random.key(key_seed)
    out = dk.augment_images(images, key)
    assert out.shape == images.shape
    assert out.dtype == images.dtype
    assert float(out.min()) >= 0.0
    assert float(out.max()) <= 1.0
    keys = jax.random.split(key, shape[0])
    eager = [dk.augment_image(images[i], keys[i]) for i in range(shape[0])]
    np.testing.assert_allclose(np.asarray(out), np.stack(eager), rtol=1e-5, atol=1e-6)
    batch = dk.augment_batch({"images": images, "labels": np.arange(shape[0])}, key)
    np.testing.assert_array_equal(np.asarray(batch["images"]), np.asarray(out))
    assert batch["labels"].tolist() == list(range(shape[0]))


def test_image_augmentation_rotates_square_images_and_keeps_non_square_shapes() -> None:
    ramp = jnp.broadcast_to(jnp.arange(4.0)[None, :, None] / 4, (4, 4, 1))
    geometric = jax.jit(
        functools.partial(dk.augment_image, brightness=(1, 1), contrast=(1, 1), max_noise=0.0)
    )
    outs = {np.asarray(geometric(ramp, jax.random.key(k))).tobytes() for k in range(40)}
    assert len(outs) == 4  # identity, flips and rotations of a ramp give four distinct images
    wide = jnp.broadcast_to(jnp.arange(6.0)[None, :, None] / 6, (2, 4, 6, 1))
    outs = dk.augment_batch_jit(wide, jax.random.key(0))
    assert outs.shape == (2, 4, 6, 1)
    assert outs.dtype == jnp.float32
    assert float(outs.min()) >= 0.0
    assert float(outs.max()) <= 1.0


def test_batch_augmentation_differs_per_sample_and_per_key() -> None:
    images = jnp.broadcast_to(_images((1, 8, 8, 3), 0), (4, 8, 8, 3))
    out = np.asarray(dk.augment_images(images, jax.random.key(0)))
    assert len({row.tobytes() for row in out}) == 4
    again = np.asarray(dk.augment_images(images, jax.random.key(0)))
    np.testing.assert_array_equal(out, again)
    assert not np.array_equal(out, np.asarray(dk.augment_images(images, jax.random.key(1))))


@settings(max_examples=8, deadline=None)
@given(seed=SEEDS, key_seed=SEEDS)
def test_text_augmentation_properties(seed: int, key_seed: int) -> None:
    vocab = 50
    body = jax.random.randint(jax.random.key(seed), (4, 10), 4, vocab, dtype=jnp.int32)
    tokens = jnp.concatenate(
        [
            jnp.full((4, 1), 2, jnp.int32),
            body,
            jnp.full((4, 1), 3, jnp.int32),
            jnp.zeros((4, 4), jnp.int32),
        ],
        axis=1,
    )
    key = jax.random.key(key_seed)
    out = dk.augment_text_array(tokens, vocab, key)
    assert out.shape == tokens.shape
    assert out.dtype == jnp.int32
    assert int(out.min()) >= 0
    assert int(out.max()) < vocab
    reserved = np.asarray(tokens) < 4
    np.testing.assert_array_equal(np.asarray(out)[reserved], np.asarray(tokens)[reserved])
    keys = jax.random.split(key, 4)
    eager = [dk.augment_text_tokens(tokens[i], vocab, keys[i]) for i in range(4)]
    np.testing.assert_array_equal(np.asarray(out), np.stack(eager))
    batch = dk.augment_text_batch({"text_tokens": tokens}, vocab, key)
    np.testing.assert_array_equal(np.asarray(batch["text_tokens"]), np.asarray(out))


def test_text_masking_rate() -> None:
    tokens = jnp.full((64, 64), 10, jnp.int32)
    out = np.asarray(dk.augment_text_array(tokens, 1000, jax.random.key(0)))
    masked = (out == 1).mean()
    replaced = ((out != 1) & (out != 10)).mean()
    assert 0.10 < masked < 0.20
    assert 0.02 < replaced < 0.08


@settings(max_examples=8, deadline=None)
@given(seed=SEEDS, key_seed=SEEDS, silent=st.booleans())
def test_audio_augmentation_properties(seed: int, key_seed: int, silent: bool) -> None:
    audio = jax.random.normal(jax.random.key(seed), (3, 200)) * 3
    if silent:
        audio = jnp.zeros_like(audio)
    key = jax.random.key(key_seed)
    out = dk.augment_audio_array(audio, 16000, key)
    assert out.shape == audio.shape
    assert out.dtype == audio.dtype
    assert float(jnp.abs(out).max()) <= 1.0
    if not silent:
        np.testing.assert_allclose(np.abs(np.asarray(out)).max(axis=1), 1.0, rtol=1e-6)
    keys = jax.random.split(key, 3)
    eager = [dk.augment_audio(audio[i], 16000, keys[i]) for i in range(3)]
    np.testing.assert_allclose(np.asarray(out), np.stack(eager), rtol=1e-5, atol=1e-6)
    batch = dk.augment_audio_batch({"audio": audio}, 16000, key)
    np.testing.assert_array_equal(np.asarray(batch["audio"]), np.asarray(out))


def test_audio_shift_is_circular_and_bounded() -> None:
    pulse = jnp.zeros(100).at[50].set(1.0)
    shift = jax.jit(
        functools.partial(dk.augment_audio, scale=(1, 1), max_noise=0.0), static_argnums=1
    )
    peaks = {int(np.asarray(shift(pulse, 16000, jax.random.key(k))).argmax()) for k in range(30)}
    assert min(peaks) >= 40
    assert max(peaks) <= 60
    assert len(peaks) > 5
