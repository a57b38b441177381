"""Random streams for datasets: accept an ``nnx.Rngs``, an int seed or a JAX key.

flax is not a dependency: an object with a callable ``sample`` or ``default`` stream is used as
it is (``nnx.Rngs`` has those), anything else is wrapped in :class:`Rngs`.
"""

from __future__ import annotations

import threading
from typing import Any

import jax
import numpy as np


class Rngs:
    """A minimal, thread-safe stand-in for ``flax.nnx.Rngs`` with named key streams.

    ``rngs.sample()`` (or any stream name) returns a fresh key each call, folding a counter
    into the seed key, so the sequence is a pure function of the seed.
    """

    def __init__(self, seed: int | jax.Array = 0, **streams: int | jax.Array) -> None:
        self._keys: dict[str, jax.Array] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        base = _as_key(seed)
        self._keys["default"] = base
        self._keys["sample"] = jax.random.fold_in(base, 1)
        for name, value in streams.items():
            self._keys[name] = _as_key(value)
        for name in self._keys:
            self._counts[name] = 0

    def __contains__(self, name: object) -> bool:
        return name in self._keys

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self.__dict__.get("_keys", {}):
            raise AttributeError(name)
        return lambda: self._next(name)

    def __call__(self) -> jax.Array:
        return self._next("default")

    def _next(self, name: str) -> jax.Array:
        with self._lock:
            count = self._counts[name]
            self._counts[name] = count + 1
        return jax.random.fold_in(self._keys[name], count)

    def randint(self, size: int, high: int) -> np.ndarray:
        """``size`` indices uniform in ``[0, high)`` from the ``sample`` stream."""
        return _randint(self.sample(), size, high)


class _Foreign:
    """Wraps a duck-typed ``nnx.Rngs`` so datasets can call ``randint`` on it."""

    def __init__(self, rngs: Any) -> None:
        self._rngs = rngs

    def __contains__(self, name: object) -> bool:
        return name in self._rngs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rngs, name)

    def __call__(self) -> jax.Array:
        return self._rngs()

    def randint(self, size: int, high: int) -> np.ndarray:
        stream = "sample" if "sample" in self._rngs else "default"
        return _randint(getattr(self._rngs, stream)(), size, high)


def _as_key(value: int | jax.Array) -> jax.Array:
    if isinstance(value, int | np.integer):
        return jax.random.key(int(value))
    arr = jax.numpy.asarray(value)
    if jax.dtypes.issubdtype(arr.dtype, jax.dtypes.prng_key):
        return arr
    return jax.random.wrap_key_data(arr.astype(jax.numpy.uint32))


def _randint(key: jax.Array, size: int, high: int) -> np.ndarray:
    return np.asarray(jax.random.randint(key, (size,), 0, high), dtype=np.int64)


def as_rngs(rngs: Any) -> Any:
    """Return an object with ``sample()``/``randint()`` for ``rngs`` (see module doc)."""
    if rngs is None:
        return Rngs(0)
    if isinstance(rngs, Rngs | _Foreign):
        return rngs
    if isinstance(rngs, int | np.integer) or hasattr(rngs, "dtype"):
        return Rngs(rngs)
    if callable(getattr(rngs, "default", None)) or callable(getattr(rngs, "sample", None)):
        return _Foreign(rngs)
    raise TypeError(
        f"rngs must be an nnx.Rngs, an int seed or a JAX key, got {type(rngs).__name__}"
    )
