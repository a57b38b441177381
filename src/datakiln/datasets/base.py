"""``BaseDataset``: the dataset contract of the seed guide, with random access added.

The seed API asks for ``__len__``, ``__iter__`` and ``get_batch(batch_size)``. datakiln adds
random access as a documented extension: a subclass that implements ``__len__`` and
``read_batch(indices)`` gets ``__getitem__``, ``get_batch(indices=...)`` and ``__iter__`` for
free, and every loader reads it by index. A subclass may instead implement ``__getitem__``
(one sample) and gets a ``read_batch`` that collates it. Subclasses written against the seed
guide (only ``__len__``, ``__iter__`` and ``get_batch``) keep working wherever iteration is
enough; whatever needs to read by index raises :class:`RandomAccessError` for them.

The contract of ``read_batch(indices)``:

* ``indices`` is a 1-D int64 NumPy array of in-range indices (duplicates allowed);
* it returns a dict whose per-sample entries have a leading axis of ``len(indices)`` (NumPy or
  JAX arrays; lists for strings), including ``"indices"`` (int64) equal to ``indices``;
* row ``k`` depends only on ``indices[k]``: sample ``i`` is the same on every call, whatever
  else is in the batch (a *fixed* dataset);
* it is safe to call from several threads at once (loaders prefetch in threads).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datakiln.datasets.batching import collate, unbatch
from datakiln.datasets.rngs import Rngs, _Foreign, as_rngs
from datakiln.errors import RandomAccessError, SpecError

# Samples read per read_batch call while iterating: amortises per-call overhead (a jit dispatch
# for synthetic data, a chunk fetch for caches) while keeping memory bounded.
_ITER_CHUNK = 64


class BaseDataset:
    """A finite, fixed dataset: sample ``i`` is the same on every access.

    Args:
        config: The modality configuration the samples follow (may be ``None``).
        split: Name of the split this dataset serves.
        rngs: A flax ``nnx.Rngs`` (duck-typed), an int seed, a JAX key, or ``None`` (seed 0).
            ``get_batch(batch_size)`` draws its random indices from the ``sample`` stream (or
            ``default`` where there is none), so repeated calls differ and a given seed
            reproduces them. Synthetic datasets also draw the key their content derives from.

    Thread safety: ``read_batch`` implementations must be safe to call from several threads.
    """

    def __init__(self, config: Any = None, split: str = "train", *, rngs: Any = None) -> None:
        self.config = config
        self.split = split
        self.rngs: Rngs | _Foreign = as_rngs(rngs)

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must implement __len__")

    def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
        """Return the samples at ``indices`` (int64, 1-D, in range) as one batch dict.

        Subclasses that support random access override this (see the module doc for the
        contract). The default collates ``self[i]`` where a subclass implements
        ``__getitem__`` instead, and otherwise raises :class:`RandomAccessError`.
        """
        if type(self).__getitem__ is not BaseDataset.__getitem__:
            if len(indices) == 0:  # no sample to learn the keys from
                return {"indices": np.zeros(0, dtype=np.int64)}
            return collate([self[int(i)] for i in indices])
        raise RandomAccessError(_no_random_access(self, "read samples by index"))

    @property
    def supports_random_access(self) -> bool:
        """Whether this dataset can read samples by index (``read_batch`` or ``__getitem__``)."""
        cls = type(self)
        return (
            cls.read_batch is not BaseDataset.read_batch
            or cls.__getitem__ is not BaseDataset.__getitem__
        )

    def check_indices(self, indices: Any) -> NDArray[np.int64]:
        """Turn ``indices`` into an in-range int64 array, wrapping negatives like a list.

        Raises:
            SpecError: ``indices`` is not a 1-D sequence of integers.
            IndexError: An index is out of range.
        """
        return check_indices(indices, len(self), type(self).__name__)

    def get_batch(self, batch_size: int | None = None, *, indices: Any = None) -> dict[str, Any]:
        """A batch of ``batch_size`` random samples, or of the samples at ``indices``.

        Random batches draw indices uniformly *with replacement* from ``self.rngs``, as the
        seed guide's datasets do: each call advances the stream, so calls differ, and the same
        seed gives the same sequence of batches. Use a loader for epochs that visit every
        sample once.

        Raises:
            SpecError: Neither a positive ``batch_size`` nor ``indices`` is given.
            RandomAccessError: The dataset cannot read by index.
        """
        if not self.supports_random_access:
            raise RandomAccessError(_no_random_access(self, "get_batch"))
        if indices is None:
            if batch_size is None or int(batch_size) < 1:
                raise SpecError(f"batch_size must be a positive integer, got {batch_size!r}")
            indices = self.rngs.randint(int(batch_size), len(self))
        elif batch_size is not None and int(batch_size) != len(indices):
            raise SpecError(
                f"batch_size={batch_size} but {len(indices)} indices were given; pass one"
            )
        return self.read_batch(self.check_indices(indices))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not isinstance(index, int | np.integer):
            raise TypeError(f"dataset index must be an int, got {type(index).__name__}")
        if not self.supports_random_access:
            raise RandomAccessError(_no_random_access(self, "index a sample"))
        return unbatch(self.read_batch(self.check_indices([index])), 0)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Samples ``0 .. len-1`` in order, read ``_ITER_CHUNK`` at a time."""
        if not self.supports_random_access:
            raise RandomAccessError(_no_random_access(self, "iterate"))
        n = len(self)
        for start in range(0, n, _ITER_CHUNK):
            indices = np.arange(start, min(start + _ITER_CHUNK, n), dtype=np.int64)
            batch = self.read_batch(indices)
            for row in range(len(indices)):
                yield unbatch(batch, row)

    def __repr__(self) -> str:
        try:
            size = str(len(self))
        except Exception:  # a broken __len__ must not break repr
            size = "?"
        return f"{type(self).__name__}(len={size}, split={self.split!r})"


def check_indices(indices: Any, length: int, name: str = "dataset") -> NDArray[np.int64]:
    """``indices`` as an int64 array in ``[0, length)``, negatives counted from the end.

    Raises:
        SpecError: ``indices`` is not a 1-D sequence of integers.
        IndexError: An index is out of range.
    """
    idx = np.asarray(indices)
    if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
        raise SpecError(f"indices must be a 1-D sequence of integers, got {idx!r}")
    idx = idx.astype(np.int64, copy=True)
    idx[idx < 0] += length
    bad = (idx < 0) | (idx >= length)
    if bad.any():
        raise IndexError(
            f"index {int(np.asarray(indices)[bad][0])} is out of range for {name} "
            f"of length {length}"
        )
    return idx


def has_random_access(dataset: Any) -> bool:
    """Whether ``dataset`` can be read by index.

    True for a :class:`BaseDataset` that implements ``read_batch`` or ``__getitem__``, and for
    any other object with ``__len__`` and ``__getitem__`` (a grain-style data source).
    """
    if isinstance(dataset, BaseDataset):
        return dataset.supports_random_access
    supports = getattr(dataset, "supports_random_access", None)
    if isinstance(supports, bool):
        return supports
    return hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")


def read_indices(dataset: Any, indices: Any, *, purpose: str = "read by index") -> dict[str, Any]:
    """The batch at ``indices`` of any random-access dataset (see :func:`has_random_access`).

    Args:
        dataset: A :class:`BaseDataset`, or an object with ``__len__`` and ``__getitem__``
            returning sample dicts (collated with :func:`~datakiln.datasets.collate`).
        indices: 1-D integer indices; negatives count from the end.
        purpose: What the caller is doing, for the error message.

    Raises:
        RandomAccessError: ``dataset`` can only be iterated.
        IndexError: An index is out of range.
    """
    if not has_random_access(dataset):
        raise RandomAccessError(_no_random_access(dataset, purpose))
    if isinstance(dataset, BaseDataset):
        return dataset.read_batch(dataset.check_indices(indices))
    idx = check_indices(indices, len(dataset), type(dataset).__name__)
    if len(idx) == 0:
        return {"indices": idx}
    return collate([dataset[int(i)] for i in idx])


def _no_random_access(dataset: Any, purpose: str) -> str:
    return (
        f"cannot {purpose}: {type(dataset).__name__} supports only iteration "
        "(__len__/__iter__/get_batch). Implement read_batch(indices) (or __getitem__) on it, "
        "see datakiln.datasets.BaseDataset, or use shuffle=False so loaders iterate it in order"
    )
