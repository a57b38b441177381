"""``TransformDataset``: a dataset whose batches pass through a list of functions.

Over a base that can read by index, transforms receive *batches* (dicts with a leading batch
axis) everywhere: ``read_batch``, ``get_batch``, loaders, and also ``dataset[i]`` and iteration,
which read batches and take rows out. So that sample ``i`` stays the same whatever batch it is
read in, transforms should work row by row (as ``jax.vmap``-ed functions do) and be
deterministic; draw random augmentation in the training loop with an explicit key instead
(see :mod:`datakiln.datasets.augment`).

Over a base that can only be iterated (the seed guide's custom datasets), it does what the
seed's ``TransformDataset`` did: iteration transforms each sample, ``get_batch`` transforms the
base's ``get_batch``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from datakiln.datasets.base import BaseDataset, has_random_access, read_indices
from datakiln.errors import SpecError

Transform = Callable[[dict[str, Any]], Mapping[str, Any]]


class TransformDataset(BaseDataset):
    """``base_dataset`` with ``transforms`` applied in order to what it returns.

    Args:
        config: Config of the transformed data (default: the base's).
        base_dataset: Dataset to transform.
        transforms: Functions ``batch dict -> batch dict``. Each gets a shallow copy, so one
            that assigns into its argument does not change the base's data.
        split: Split name (default: the base's).
        rngs: Seed source of ``get_batch``'s random draws (default: the base's).

    Raises:
        SpecError: A transform is not callable.
    """

    def __init__(
        self,
        config: Any = None,
        base_dataset: Any = None,
        transforms: Sequence[Transform] | None = None,
        split: str | None = None,
        *,
        rngs: Any = None,
    ) -> None:
        if base_dataset is None:
            raise SpecError("TransformDataset needs a base_dataset")
        super().__init__(
            getattr(base_dataset, "config", None) if config is None else config,
            getattr(base_dataset, "split", "train") if split is None else split,
            rngs=getattr(base_dataset, "rngs", None) if rngs is None else rngs,
        )
        self.base_dataset = base_dataset
        self.transforms: tuple[Transform, ...] = tuple(transforms or ())
        for t in self.transforms:
            if not callable(t):
                raise SpecError(f"transforms must be callables, got {t!r}")

    def _apply_transforms(self, data: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(data)
        for transform in self.transforms:
            result = transform(dict(out))
            if not isinstance(result, Mapping):
                raise SpecError(
                    f"transform {getattr(transform, '__name__', transform)!r} returned "
                    f"{type(result).__name__}, not a dict"
                )
            out = dict(result)
        return out

    def __len__(self) -> int:
        return len(self.base_dataset)

    @property
    def supports_random_access(self) -> bool:
        return has_random_access(self.base_dataset)

    def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
        batch = read_indices(self.base_dataset, indices, purpose="transform a batch")
        return self._apply_transforms(batch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.supports_random_access:
            yield from super().__iter__()
            return
        for sample in self.base_dataset:
            yield self._apply_transforms(sample)

    def get_batch(self, batch_size: int | None = None, *, indices: Any = None) -> dict[str, Any]:
        if self.supports_random_access or indices is not None:
            return super().get_batch(batch_size, indices=indices)
        return self._apply_transforms(self.base_dataset.get_batch(batch_size))
