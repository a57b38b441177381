"""Subsets of a dataset by index, and ``split_dataset`` (ratios and TFDS-style split strings).

A :class:`SubsetDataset` holds an int64 index array into its base dataset: reading subset
position ``p`` reads base index ``indices[p]`` directly (O(1) per sample; the seed re-iterated
the whole base dataset per index).

Split strings follow TFDS's slicing syntax: ``"train[:80%]"``, ``"train[80%:]"``,
``"train[10:20]"``, ``"train[-100:]"``, joined with ``+`` (``"train[:10%]+train[-10%:]"``).
The name must be the dataset's ``split``. Slices are contiguous ranges *in dataset order* (as in
TFDS); a percentage boundary ``k%`` of ``n`` samples is ``round_half_up(k * n / 100)``, so
``"[:k%]"`` and ``"[k%:]"`` are disjoint and cover the dataset. Use a ratio (a float) instead for
a shuffled split.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np
from numpy.typing import NDArray

from datakiln.datasets.base import BaseDataset, check_indices, has_random_access, read_indices
from datakiln.datasets.loader import epoch_order
from datakiln.errors import SpecError

_SLICE = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9_\-./]+)\s*"
    r"(?:\[\s*(?P<start>-?\d+%?)?\s*:\s*(?P<stop>-?\d+%?)?\s*\])?\s*$"
)


class SubsetDataset(BaseDataset):
    """The samples of ``dataset`` at ``indices``, in that order.

    Args:
        dataset: The base dataset: a :class:`BaseDataset` (random access or not) or any
            object with ``__len__`` and ``__getitem__``.
        indices: Indices into ``dataset`` (1-D integers, negatives from the end).
        split: Name of this subset (default: the base's split).

    Batches hold the subset's own positions in ``"indices"`` (as for any dataset) and the
    indices of the same samples in ``dataset`` in ``"base_indices"`` (int64).
    Over a base that can only be iterated, iterating the subset walks the base once and yields
    the subset's samples in *base* order; reading by index then raises ``RandomAccessError``.
    """

    def __init__(self, dataset: Any, indices: Any, split: str | None = None) -> None:
        base_split = getattr(dataset, "split", "train")
        super().__init__(
            getattr(dataset, "config", None),
            base_split if split is None else split,
            rngs=getattr(dataset, "rngs", None),
        )
        idx = check_indices(indices, len(dataset), type(dataset).__name__)
        self.dataset = dataset
        self.indices: np.ndarray = idx
        self.indices.flags.writeable = False

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def supports_random_access(self) -> bool:
        return has_random_access(self.dataset)

    def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
        base = self.indices[indices]
        batch = read_indices(self.dataset, base, purpose="read a subset by index")
        batch["indices"] = np.asarray(indices, dtype=np.int64)
        batch["base_indices"] = base
        return batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.supports_random_access:
            yield from super().__iter__()
            return
        wanted = np.zeros(len(self.dataset), dtype=bool)
        wanted[self.indices] = True
        for i, sample in enumerate(self.dataset):
            if wanted[i]:
                yield sample


@overload
def split_dataset(
    full_dataset: Any, train_ratio: float = ..., seed: int = ...
) -> tuple[SubsetDataset, SubsetDataset]: ...
@overload
def split_dataset(full_dataset: Any, train_ratio: str, seed: int = ...) -> SubsetDataset: ...
@overload
def split_dataset(
    full_dataset: Any, train_ratio: Sequence[str], seed: int = ...
) -> tuple[SubsetDataset, ...]: ...


def split_dataset(full_dataset: Any, train_ratio: Any = 0.8, seed: int = 42) -> Any:
    """Split a dataset into training and validation subsets, or slice it by split strings.

    Args:
        full_dataset: Any dataset (:class:`BaseDataset`, a cache from ``open_cache``, or an
            object with ``__len__``/``__getitem__``).
        train_ratio: A float in ``[0, 1]``: the dataset is permuted by ``seed`` and the first
            ``int(n * train_ratio)`` samples train, the rest validate. A split string
            (``"train[:80%]"``, see the module doc): one subset. A list of split strings:
            a tuple of subsets, one per string.
        seed: Seed of the ratio split's permutation (a non-negative int).

    Returns:
        ``(train, val)`` for a ratio; one subset for a string; a tuple for a list.

    Raises:
        SpecError: A ratio outside ``[0, 1]``, a malformed split string, or a split name that
            is not the dataset's.
    """
    n = len(full_dataset)
    if isinstance(train_ratio, str):
        return SubsetDataset(
            full_dataset, parse_split(train_ratio, n, _split_of(full_dataset)), train_ratio.strip()
        )
    if isinstance(train_ratio, Sequence):
        return tuple(split_dataset(full_dataset, s, seed) for s in train_ratio)
    ratio = float(train_ratio)
    if not 0.0 <= ratio <= 1.0:
        raise SpecError(f"train_ratio must be in [0, 1], got {train_ratio!r}")
    order = epoch_order(n, seed=seed, epoch=0)
    num_train = int(n * ratio)
    return (
        SubsetDataset(full_dataset, order[:num_train], "train"),
        SubsetDataset(full_dataset, order[num_train:], "validation"),
    )


def _split_of(dataset: Any) -> str:
    split = getattr(dataset, "split", None)
    # A subset made by a split string is named by it ("train[:80%]"); its split is "train".
    return split.split("[")[0].strip() if isinstance(split, str) else "train"


def parse_split(spec: str, num_samples: int, split: str = "train") -> NDArray[np.int64]:
    """Indices selected by a TFDS-style split string (see the module doc).

    Args:
        spec: ``"name[start:stop]"`` parts joined by ``+``; ``start``/``stop`` are optional
            integers (negative from the end) or integer percentages.
        num_samples: Length of the dataset.
        split: The dataset's split name, which every part must use.

    Returns:
        int64 indices, the parts concatenated in order.

    Raises:
        SpecError: Malformed spec, a percentage outside ``[-100, 100]`` or a wrong name.
    """
    parts = []
    for part in spec.split("+"):
        match = _SLICE.match(part)
        if not match:
            raise SpecError(
                f"split {spec!r}: cannot parse {part!r}; expected e.g. 'train[:80%]', "
                "'train[10:20]' or 'train[-10%:]', joined with '+'"
            )
        if match["name"] != split:
            raise SpecError(
                f"split {spec!r} names split {match['name']!r}, but this dataset is split "
                f"{split!r}; slice {split!r} or open the {match['name']!r} split"
            )
        start = _boundary(match["start"], num_samples, spec, default=0)
        stop = _boundary(match["stop"], num_samples, spec, default=num_samples)
        parts.append(np.arange(start, max(start, stop), dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _boundary(text: str | None, n: int, spec: str, *, default: int) -> int:
    if text is None:
        return default
    if text.endswith("%"):
        pct = int(text[:-1])
        if not -100 <= pct <= 100:
            raise SpecError(f"split {spec!r}: percentage {text} is outside [-100%, 100%]")
        value = (abs(pct) * n + 50) // 100
        value = -value if pct < 0 else value
    else:
        value = int(text)
    if value < 0:
        value += n
    return min(max(value, 0), n)
