"""Lazy, vectorised generation of synthetic samples by index.

A synthetic dataset keeps one JAX key and renders sample ``i`` from ``fold_in(key, i)`` on
demand, vmapped over the requested indices, so a dataset of a million samples costs nothing
until it is read, and sample ``i`` is the same whichever batch it is read in. Index arrays are
padded to power-of-two buckets of at least ``MIN_BUCKET`` rows, so that jit compiles once per
bucket, not once per batch size (single samples and small batches share one compilation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from datakiln.errors import SpecError

# Smallest padded batch: reading one sample renders this many (cheap for synthetic data), and
# in exchange every batch of up to this size reuses one compiled function.
MIN_BUCKET = 128


def bucket_size(n: int) -> int:
    """The smallest power of two >= ``n``, at least :data:`MIN_BUCKET`."""
    return max(MIN_BUCKET, 1 << max(n - 1, 0).bit_length())


def render(
    fn: Callable[..., Any], key: jax.Array, indices: np.ndarray, *args: Any, **static: Any
) -> Any:
    """``fn(key, padded_indices, *args, **static)`` with the padding rows cut off again.

    Args:
        fn: A jitted function returning an array or a pytree of arrays with a leading axis
            of ``len(padded_indices)``.
        key: The dataset's key.
        indices: int64 indices of the samples wanted (must fit int32).
        *args: Further array arguments, passed as they are.
        **static: Static keyword arguments of ``fn``.

    Returns:
        The same pytree as NumPy arrays with a leading axis of ``len(indices)``.
    """
    n = len(indices)
    padded = np.zeros(bucket_size(n), dtype=np.int32)
    padded[:n] = indices
    out = fn(key, jnp.asarray(padded), *args, **static)
    return jax.tree.map(lambda a: np.asarray(a)[:n], out)


def sample_keys(key: jax.Array, indices: jax.Array) -> jax.Array:
    """One key per index: ``fold_in(key, index)``."""
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)


def check_size(value: Any, name: str) -> int:
    """``value`` as a dataset size: an integer in ``[0, 2**31)`` (indices are int32 in JAX).

    Raises:
        SpecError: It is not one.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise SpecError(f"{name} must be a non-negative integer, got {value!r}")
    if value > np.iinfo(np.int32).max:
        raise SpecError(f"{name}={value} is larger than synthetic datasets support (2**31 - 1)")
    return int(value)
