"""Perceptual hash (pHash) of a batch of images: a 64-bit fingerprint per image.

Each image is turned to luma, shrunk to 32x32 by area averaging, and transformed with a 2-D
DCT-II (the shrink and the DCT fold into one small matrix per axis). Each of the 8x8 lowest
frequencies gives one bit: above or below their median (the DC term excluded from it).
Re-encoding (JPEG quality) and small rescaling move few bits, so near copies lie within a
small Hamming distance. Thresholding at the median keeps about half the bits set for every
image, so smooth images of different layout (a gradient with a disc here or there) still
differ, where a difference hash (dHash) of such images is nearly all ones. The kernel is pure:
uint8 ``(B, H, W, C)`` in, bool ``(B, 64)`` out; the host packs the bits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

__all__ = ["pack_hashes", "phash_bits"]

# ITU-R BT.601 luma weights, as Pillow's convert("L").
_LUMA = (0.299, 0.587, 0.114)
_SIDE = 32  # the image is shrunk to _SIDE x _SIDE before the DCT
_KEEP = 8  # the _KEEP x _KEEP lowest frequencies give the bits


def _dct_matrix(n: int) -> npt.NDArray[np.float64]:
    """The orthonormal DCT-II matrix of size ``n`` (rows: frequencies)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m: npt.NDArray[np.float64] = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


def _area_matrix(side: int, n: int) -> npt.NDArray[np.float64]:
    """``(side, n)``: an area resize, the antialiased shrink.

    Each output pixel is the mean of the input pixels its span covers, with fractional
    weights at the span's ends.
    """
    edges = np.arange(side + 1) * n / side
    lo, hi = edges[:-1, None], edges[1:, None]
    pixel = np.arange(n)[None, :]
    overlap = np.clip(np.minimum(hi, pixel + 1) - np.maximum(lo, pixel), 0, None)
    weights: npt.NDArray[np.float64] = overlap / overlap.sum(axis=1, keepdims=True)
    return weights


def _low_frequencies(n: int) -> npt.NDArray[np.float32]:
    """``(_KEEP, n)``: area shrink and lowest DCT-II frequencies of an axis, as one matrix.

    Shrinks an axis of ``n`` pixels to ``_SIDE`` by area, then keeps its lowest ``_KEEP``
    DCT-II frequencies, folded into one matrix (two small matmuls per image).
    """
    return (_dct_matrix(_SIDE)[:_KEEP] @ _area_matrix(_SIDE, n)).astype(np.float32)


@jax.jit
def phash_bits(images: jax.Array) -> jax.Array:
    """64 pHash bits per image of ``images`` (uint8, ``(B, H, W, C)``)."""
    x = images.astype(jnp.float32)
    if x.shape[-1] >= 3:
        gray = x[..., 0] * _LUMA[0] + x[..., 1] * _LUMA[1] + x[..., 2] * _LUMA[2]
    else:
        gray = x[..., 0]
    rows = jnp.asarray(_low_frequencies(gray.shape[1]))
    cols = jnp.asarray(_low_frequencies(gray.shape[2]))
    low = jnp.matmul(jnp.matmul(rows, gray), cols.T).reshape(x.shape[0], _KEEP * _KEEP)
    median = jnp.median(low[:, 1:], axis=1, keepdims=True)
    return low > median


def pack_hashes(bits: npt.NDArray[np.bool_]) -> list[str]:
    """The bits of each row as 16 hex digits (most significant bit first)."""
    packed = np.packbits(np.asarray(bits, bool), axis=1)
    return [row.tobytes().hex() for row in packed]
