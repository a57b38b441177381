"""Perceptual hash (pHash) of a batch of images: a 64-bit fingerprint per image.

Each image is turned to luma, shrunk to 32x32 with an antialiased linear resize, and
transformed with a 2-D DCT-II; the 8x8 lowest frequencies each give one bit: above or below
their median (the DC term excluded from it). Re-encoding (JPEG quality) and small rescaling
move few bits, so near copies lie within a small Hamming distance. Thresholding at the median
keeps about half the bits set for every image, so smooth images of different layout (a
gradient with a disc here or there) still differ, where a difference hash (dHash) of such
images is nearly all ones. The kernel is pure: uint8 ``(B, H, W, C)`` in, bool ``(B, 64)`` out;
the host packs the bits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["pack_hashes", "phash_bits"]

# ITU-R BT.601 luma weights, as Pillow's convert("L").
_LUMA = (0.299, 0.587, 0.114)
_SIDE = 32  # the image is shrunk to _SIDE x _SIDE before the DCT
_KEEP = 8  # the _KEEP x _KEEP lowest frequencies give the bits


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix of size ``n`` (rows: frequencies)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m.astype(np.float32)


_DCT = _dct_matrix(_SIDE)[:_KEEP]


@jax.jit
def phash_bits(images: jax.Array) -> jax.Array:
    """64 pHash bits per image of ``images`` (uint8, ``(B, H, W, C)``)."""
    x = images.astype(jnp.float32)
    if x.shape[-1] >= 3:
        gray = x[..., 0] * _LUMA[0] + x[..., 1] * _LUMA[1] + x[..., 2] * _LUMA[2]
    else:
        gray = x[..., 0]
    small = jax.image.resize(gray, (x.shape[0], _SIDE, _SIDE), "linear", antialias=True)
    d = jnp.asarray(_DCT)
    low = jnp.einsum("ki,bij,lj->bkl", d, small, d).reshape(x.shape[0], _KEEP * _KEEP)
    median = jnp.median(low[:, 1:], axis=1, keepdims=True)
    return low > median


def pack_hashes(bits: np.ndarray) -> list[str]:
    """The bits of each row as 16 hex digits (most significant bit first)."""
    packed = np.packbits(np.asarray(bits, bool), axis=1)
    return [row.tobytes().hex() for row in packed]
