"""Checking samples: ``validate_sample``, ``validate_batch`` and ``ValidatedDataset``.

A sample is valid when its array under ``key`` (``"images"`` by default) has no NaN, all its
values lie in ``value_range`` and, if ``shape`` is given, it has that shape. The seed
hard-coded the shape ``(32, 32, 3)``; here it is an argument (``ValidatedDataset`` takes it
from an image config when there is one).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

import numpy as np

from datakiln.datasets.base import _ITER_CHUNK, BaseDataset, has_random_access, read_indices
from datakiln.datasets.batching import batch_size_of, take_rows, unbatch
from datakiln.errors import SampleValidationError, SpecError

OnInvalid = Literal["drop", "raise"]


def validate_sample(
    sample: Mapping[str, Any],
    *,
    key: str = "images",
    shape: tuple[int, ...] | None = None,
    value_range: tuple[float, float] | None = (0.0, 1.0),
) -> bool:
    """Whether ``sample[key]`` is free of NaN, within ``value_range`` and of ``shape``.

    Args:
        sample: A sample dict.
        key: Entry to check.
        shape: Required shape, or ``None`` for any.
        value_range: Inclusive ``(low, high)``, or ``None`` for any (NaN still fails).

    Raises:
        SpecError: ``sample`` has no ``key``.
    """
    if key not in sample:
        raise SpecError(f"sample has no {key!r} to validate (keys {sorted(sample)})")
    value = np.asarray(sample[key])
    if shape is not None and value.shape != tuple(shape):
        return False
    return bool(_valid_values(value[None], value_range)[0])


def validate_batch(
    batch: Mapping[str, Any],
    *,
    key: str = "images",
    shape: tuple[int, ...] | None = None,
    value_range: tuple[float, float] | None = (0.0, 1.0),
) -> np.ndarray:
    """:func:`validate_sample` of every row of ``batch`` at once: a bool array ``(B,)``.

    ``shape`` is the shape of one sample.
    """
    if key not in batch:
        raise SpecError(f"batch has no {key!r} to validate (keys {sorted(batch)})")
    value = np.asarray(batch[key])
    if shape is not None and value.shape[1:] != tuple(shape):
        return np.zeros(len(value), dtype=bool)
    return _valid_values(value, value_range)


def _valid_values(value: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
    flat = value.reshape(len(value), -1)
    if not np.issubdtype(flat.dtype, np.number):
        raise SpecError(f"cannot validate values of dtype {flat.dtype}")
    ok = (
        ~np.isnan(flat).any(axis=1)
        if np.issubdtype(flat.dtype, np.floating)
        else np.ones(len(flat), bool)
    )
    if value_range is not None:
        low, high = value_range
        ok &= ((flat >= low) & (flat <= high)).all(axis=1)
    return ok


class ValidatedDataset(BaseDataset):
    """``base_dataset`` without its invalid samples (or raising on them).

    Args:
        base_dataset: Dataset to check.
        config: Config (default: the base's).
        split: Split name (default: the base's).
        rngs: Seed source of ``get_batch``'s random draws (default: the base's).
        key: Entry to validate.
        shape: Required sample shape; default: ``config.shape`` when the config has one.
        value_range: Allowed values, inclusive.
        on_invalid: ``"drop"``: batches leave out invalid rows, in *every* entry (the seed
            dropped them from ``"images"`` only), so they may be smaller than asked; iteration
            skips them; indexing one raises. ``"raise"``: any invalid sample read raises
            :class:`SampleValidationError` naming its index.

    ``len()`` is the base's length: counting valid samples would mean reading them all.
    """

    def __init__(
        self,
        base_dataset: Any,
        config: Any = None,
        split: str | None = None,
        *,
        rngs: Any = None,
        key: str = "images",
        shape: tuple[int, ...] | None = None,
        value_range: tuple[float, float] | None = (0.0, 1.0),
        on_invalid: OnInvalid = "drop",
    ) -> None:
        super().__init__(
            getattr(base_dataset, "config", None) if config is None else config,
            getattr(base_dataset, "split", "train") if split is None else split,
            rngs=getattr(base_dataset, "rngs", None) if rngs is None else rngs,
        )
        if on_invalid not in ("drop", "raise"):
            raise SpecError(f"on_invalid must be 'drop' or 'raise', got {on_invalid!r}")
        self.base_dataset = base_dataset
        self.key = key
        self.shape = tuple(shape) if shape is not None else getattr(self.config, "shape", None)
        self.value_range = value_range
        self.on_invalid = on_invalid

    def __len__(self) -> int:
        return len(self.base_dataset)

    @property
    def supports_random_access(self) -> bool:
        return has_random_access(self.base_dataset)

    def _check(self, batch: dict[str, Any]) -> dict[str, Any]:
        ok = validate_batch(batch, key=self.key, shape=self.shape, value_range=self.value_range)
        if ok.all():
            return batch
        if self.on_invalid == "raise":
            bad = int(np.flatnonzero(~ok)[0])
            index = np.asarray(batch["indices"])[bad] if "indices" in batch else bad
            raise SampleValidationError(
                f"sample {index} of {type(self.base_dataset).__name__} is invalid: {self.key!r} "
                f"has NaN, values outside {self.value_range} or a shape other than {self.shape}"
            )
        return take_rows(batch, ok)

    def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
        return self._check(read_indices(self.base_dataset, indices, purpose="validate samples"))

    def __getitem__(self, index: int) -> dict[str, Any]:
        batch = self.read_batch(self.check_indices([index]))
        if batch_size_of(batch) == 0:
            raise SampleValidationError(f"sample {index} is invalid and was dropped")
        return unbatch(batch, 0)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not self.supports_random_access:
            for sample in self.base_dataset:
                if self._check_sample(sample):
                    yield sample
            return
        n = len(self)
        for start in range(0, n, _ITER_CHUNK):
            batch = self.read_batch(np.arange(start, min(start + _ITER_CHUNK, n), dtype=np.int64))
            for row in range(batch_size_of(batch)):
                yield unbatch(batch, row)

    def _check_sample(self, sample: Mapping[str, Any]) -> bool:
        if validate_sample(sample, key=self.key, shape=self.shape, value_range=self.value_range):
            return True
        if self.on_invalid == "raise":
            raise SampleValidationError(f"sample {sample.get('index', '?')} is invalid")
        return False

    def get_batch(self, batch_size: int | None = None, *, indices: Any = None) -> dict[str, Any]:
        if self.supports_random_access or indices is not None:
            return super().get_batch(batch_size, indices=indices)
        return self._check(self.base_dataset.get_batch(batch_size))
