"""Difference hash (dHash) of a batch of images: a 64-bit perceptual fingerprint per image.

Each image is turned to luma, shrunk to 9x8 with an antialiased linear resize, and each bit says
whether a pixel is brighter than its right neighbour. Re-encoding (JPEG quality) and small
rescaling move few bits, so near copies lie within a small Hamming distance while distinct
images differ in about half of the 64 bits. The kernel is pure: uint8 ``(B, H, W, C)`` in, bool
``(B, 64)`` out; the host packs the bits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["dhash_bits", "pack_hashes"]

# ITU-R BT.601 luma weights, as Pillow's convert("L").
_LUMA = (0.299, 0.587, 0.114)


@jax.jit
def dhash_bits(images: jax.Array) -> jax.Array:
    """64 difference bits per image of ``images`` (uint8, ``(B, H, W, C)``)."""
    x = images.astype(jnp.float32)
    c = x.shape[-1]
    if c >= 3:
        gray = x[..., 0] * _LUMA[0] + x[..., 1] * _LUMA[1] + x[..., 2] * _LUMA[2]
    else:
        gray = x[..., 0]
    small = jax.image.resize(gray, (x.shape[0], 8, 9), "linear", antialias=True)
    return (small[:, :, 1:] > small[:, :, :-1]).reshape(x.shape[0], 64)


def pack_hashes(bits: np.ndarray) -> list[str]:
    """The bits of each row as 16 hex digits (most significant bit first)."""
    packed = np.packbits(np.asarray(bits, bool), axis=1)
    return [row.tobytes().hex() for row in packed]
