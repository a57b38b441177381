"""Random streams for datasets: accept an ``nnx.Rngs``, an int seed or a JAX key.

flax is not a dependency. An object with a callable ``sample`` or ``default`` stream is used as
it is (``flax.nnx.Rngs`` has those), anything else is wrapped in :class:`Rngs`, a small
thread-safe stand-in with the same calling convention::

    rngs = Rngs(0)
    key = rngs.sample()        # a fresh key from the "sample" stream on every call
    key = rngs()               # the "default" stream
    key = rngs.params()        # unknown stream names fall back to "default", as in nnx

Every stream is a pure function of the seed and the number of keys drawn from it so far, so a
program that draws keys in the same order reproduces them.
"""

from __future__ import annotations

import threading
from typing import Any

import jax
import numpy as np
from numpy.typing import NDArray

# Streams every Rngs has: "default", and "sample" from which datasets draw random batches.
_SAMPLE_STREAM_TAG = 1


class Rngs:
    """A minimal, thread-safe stand-in for ``flax.nnx.Rngs`` with named key streams.

    Args:
        seed: Seed (int) or JAX key of the ``default`` stream; ``sample`` derives from it.
        **streams: Seeds or keys of further named streams.

    ``rngs.NAME()`` returns a fresh key each call (``fold_in(stream_key, count)``); names that
    are not streams fall back to ``default``, as ``nnx.Rngs`` does. ``"NAME" in rngs`` tells
    whether a stream exists. Safe to call from several threads.
    """

    def __init__(
        self,
        seed: int | np.integer | jax.Array | np.ndarray = 0,
        **streams: int | np.integer | jax.Array | np.ndarray,
    ) -> None:
        base = _as_key(seed)
        self._keys: dict[str, jax.Array] = {
            "default": base,
            "sample": jax.random.fold_in(base, _SAMPLE_STREAM_TAG),
        }
        for name, value in streams.items():
            self._keys[name] = _as_key(value)
        self._counts: dict[str, int] = dict.fromkeys(self._keys, 0)
        self._lock = threading.Lock()

    def __contains__(self, name: object) -> bool:
        return name in self._keys

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda: self.key(name)

    def __call__(self) -> jax.Array:
        return self.key("default")

    def __repr__(self) -> str:
        return f"Rngs(streams={sorted(self._keys)})"

    def key(self, stream: str = "default") -> jax.Array:
        """The next key of ``stream`` (``default`` when there is no such stream)."""
        name = stream if stream in self._keys else "default"
        with self._lock:
            count = self._counts[name]
            self._counts[name] = count + 1
        return jax.random.fold_in(self._keys[name], count)

    def randint(self, size: int, high: int) -> NDArray[np.int64]:
        """``size`` indices uniform in ``[0, high)`` (int64) from the ``sample`` stream."""
        return _randint(self.key("sample"), size, high)


class _Foreign:
    """Wraps a duck-typed ``nnx.Rngs`` so datasets can call ``key``/``randint`` on it."""

    def __init__(self, rngs: Any) -> None:
        self._rngs = rngs

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._rngs
        except TypeError:
            return callable(getattr(self._rngs, str(name), None))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._rngs, name)

    def __call__(self) -> jax.Array:
        return self.key("default")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._rngs!r})"

    def key(self, stream: str = "default") -> jax.Array:
        for name in (stream, "default", "sample"):
            draw = getattr(self._rngs, name, None)
            if callable(draw):
                key: jax.Array = draw()
                return key
        raise TypeError(
            f"{type(self._rngs).__name__} has neither a {stream!r} nor a 'default' stream; "
            "pass nnx.Rngs(seed) or an int seed"
        )

    def randint(self, size: int, high: int) -> NDArray[np.int64]:
        return _randint(self.key("sample"), size, high)


def _as_key(value: int | np.integer | jax.Array | np.ndarray) -> jax.Array:
    if isinstance(value, int | np.integer):
        return jax.random.key(int(value))
    arr = jax.numpy.asarray(value)
    if jax.numpy.issubdtype(arr.dtype, jax.dtypes.prng_key):
        return arr
    key: jax.Array = jax.random.wrap_key_data(arr.astype(jax.numpy.uint32))
    return key


def _randint(key: jax.Array, size: int, high: int) -> NDArray[np.int64]:
    """``size`` int64 draws from ``[0, high)``, a pure function of ``key``.

    NumPy's PCG64 seeded with the key's bits: int64 ranges (JAX's ``randint`` is int32 without
    x64) and nothing to compile.
    """
    if high < 1:
        raise IndexError("cannot draw a random batch from an empty dataset")
    bits = np.asarray(jax.random.key_data(key), dtype=np.uint32).ravel().tolist()
    return np.random.Generator(np.random.PCG64(bits)).integers(0, high, size, dtype=np.int64)


def as_rngs(rngs: Any) -> Rngs | _Foreign:
    """Return an object with ``key()``/``sample()``/``randint()`` for ``rngs``.

    Args:
        rngs: ``None`` (seed 0), an int seed, a JAX key (typed or raw ``uint32`` data), an
            :class:`Rngs`, or any object with a callable ``sample`` or ``default`` attribute
            (``flax.nnx.Rngs``), which is used as it is, so drawing from it advances it.

    Raises:
        TypeError: ``rngs`` is none of those.
    """
    if rngs is None:
        return Rngs(0)
    if isinstance(rngs, Rngs | _Foreign):
        return rngs
    # Not hasattr(rngs, "dtype"): nnx.Rngs answers any attribute name with a stream.
    if isinstance(rngs, int | np.integer | jax.Array | np.ndarray):
        return Rngs(rngs)
    if callable(getattr(rngs, "default", None)) or callable(getattr(rngs, "sample", None)):
        return _Foreign(rngs)
    raise TypeError(
        f"rngs must be an nnx.Rngs, an int seed or a JAX key, got {type(rngs).__name__}"
    )
