"""``BaseDataset``: the dataset contract of the seed guide, with random access added.

The seed API asks for ``__len__``, ``__iter__`` and ``get_batch(batch_size)``. datakiln adds
random access as a documented extension: a subclass that implements ``__len__`` and
``read_batch(indices)`` gets ``__getitem__``, ``get_batch(indices=...)`` and ``__iter__`` for
free, and every loader reads it by index. Subclasses written against the seed guide (only
``__len__``, ``__iter__`` and ``get_batch``) keep working.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from datakiln.datasets.rngs import Rngs, as_rngs
from datakiln.errors import SpecError

# Batch keys whose per-sample name differs from the batched one, as in the seed guide
# ("indices" in a batch is "index" in a sample, "texts" is "text").
_SAMPLE_KEYS: Mapping[str, str] = {"indices": "index", "texts": "text", "paths": "path"}


class BaseDataset:
    """A finite, fixed dataset: sample ``i`` is the same on every access.

    Args:
        config: The modality configuration the samples follow (may be ``None``).
        split: Name of the split this dataset serves.
        rngs: A flax ``nnx.Rngs`` (duck-typed), an int seed, a JAX key, or ``None`` (seed 0).
            ``get_batch(batch_size)`` draws its random indices from ``rngs.sample()`` (or the
            default stream), so repeated calls differ and a given seed reproduces them.

    Thread safety: ``read_batch`` implementations must be safe to call from several threads.
    """

    def __init__(self, config: Any = None, split: str = "train", *, rngs: Any = None) -> None:
        self.config = config
        self.split = split
        self.rngs: Rngs = as_rngs(rngs)

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must implement __len__")

    def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
        """Return the samples at ``indices`` (int64, 1-D, in range) as one batch dict.

        Subclasses that support random access override this; the batch holds arrays with a
        leading axis of ``len(indices)`` (lists for strings) and an ``indices`` entry.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not support random access: implement read_batch()"
        )

    @property
    def supports_random_access(self) -> bool:
        """Whether this dataset implements ``read_batch`` (and so reading by index)."""
        return type(self).read_batch is not BaseDataset.read_batch

    def check_indices(self, indices: Any) -> np.ndarray:
        """Turn ``indices`` into an in-range int64 array, wrapping negatives like a list."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise SpecError(f"indices must be a 1-D sequence of integers, got {idx!r}")
        idx = idx.astype(np.int64, copy=True)
        n = len(self)
        idx[idx < 0] += n
        bad = (idx < 0) | (idx >= n)
        if bad.any():
            raise IndexError(
                f"index {int(np.asarray(indices)[bad][0])} is out of range for "
                f"{type(self).__name__} of length {n}"
            )
        return idx

    def get_batch(
        self, batch_size: int | None = None, *, indices: Any = None
    ) -> dict[str, Any]:
        """A batch of ``batch_size`` random samples, or of the samples at ``indices``.

        Random batches draw indices uniformly (with replacement) from ``self.rngs``; use a
        loader for epochs that visit every sample once.
        """
        if indices is None:
            if batch_size is None or batch_size < 1:
                raise SpecError(f"batch_size must be a positive integer, got {batch_size!r}")
            indices = self.rngs.randint(batch_size, len(self))
        return self.read_batch(self.check_indices(indices))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not isinstance(index, int | np.integer):
            raise TypeError(f"dataset index must be an int, got {type(index).__name__}")
        batch = self.read_batch(self.check_indices([index]))
        return {_SAMPLE_KEYS.get(key, key): value[0] for key, value in batch.items()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]
