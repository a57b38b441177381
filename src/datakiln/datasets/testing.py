"""Conformance suite for random-access datasets (needs pytest, a dev dependency).

Every ``BaseDataset`` implementation's tests subclass :class:`DatasetTests` and provide a
``dataset`` fixture with a small instance (say 10-200 samples)::

    class TestMyDataset(DatasetTests):
        @pytest.fixture
        def dataset(self):
            return MyDataset(...)

The suite checks the ``read_batch`` contract (see :mod:`datakiln.datasets.base`): batch
shapes and ``"indices"``, rows independent of their batch-mates, indexing and iteration that
agree with batches, thread-safe reads, and that loaders and ``split_dataset`` accept the
dataset and cover it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from datakiln.datasets.base import BaseDataset
from datakiln.datasets.batching import batch_size_of, unbatch
from datakiln.datasets.loader import Loader
from datakiln.datasets.splits import split_dataset


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Assert two samples, batches or values are equal (arrays exactly, NaN equal to NaN)."""
    if isinstance(a, dict):
        assert isinstance(b, dict), f"{where}: {type(b).__name__} is not a dict"
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{where}: lengths {len(a)} != {len(b)}"
        for n, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{n}]")
    elif isinstance(a, str):
        assert a == b, f"{where}: {a!r} != {b!r}"
    else:
        x, y = np.asarray(a), np.asarray(b)
        assert x.shape == y.shape, f"{where}: shapes {x.shape} != {y.shape}"
        assert x.dtype == y.dtype, f"{where}: dtypes {x.dtype} != {y.dtype}"
        np.testing.assert_array_equal(x, y, err_msg=where)


class DatasetTests:
    """Tests every random-access ``BaseDataset`` must pass; subclass and set ``dataset``."""

    @pytest.fixture
    def dataset(self) -> BaseDataset:
        raise NotImplementedError("subclasses provide a `dataset` fixture")

    def test_length(self, dataset: BaseDataset) -> None:
        assert isinstance(len(dataset), int)
        assert len(dataset) > 0, "give the suite a non-empty dataset"
        assert dataset.supports_random_access

    def test_read_batch_contract(self, dataset: BaseDataset) -> None:
        n = len(dataset)
        indices = np.array([n - 1, 0, n - 1], dtype=np.int64)
        batch = dataset.read_batch(indices)
        assert batch_size_of(batch) == 3
        np.testing.assert_array_equal(np.asarray(batch["indices"]), indices)
        for key, value in batch.items():
            rows = len(value) if isinstance(value, list) else np.shape(value)[0]
            assert rows == 3, f"{key!r} has {rows} rows for 3 indices"
        assert_same(unbatch(batch, 0), unbatch(batch, 2), "duplicate index")

    def test_empty_batch(self, dataset: BaseDataset) -> None:
        batch = dataset.read_batch(np.zeros(0, dtype=np.int64))
        assert len(batch["indices"]) == 0

    def test_rows_do_not_depend_on_the_batch(self, dataset: BaseDataset) -> None:
        n = len(dataset)
        alone = dataset.read_batch(np.array([n // 2], dtype=np.int64))
        mixed = dataset.read_batch(np.array([0, n // 2, n - 1], dtype=np.int64))
        assert_same(unbatch(alone, 0), unbatch(mixed, 1), f"sample {n // 2}")

    def test_reads_are_deterministic(self, dataset: BaseDataset) -> None:
        indices = np.arange(min(len(dataset), 5), dtype=np.int64)
        assert_same(dataset.read_batch(indices), dataset.read_batch(indices))

    def test_getitem_matches_batch_row(self, dataset: BaseDataset) -> None:
        n = len(dataset)
        batch = dataset.get_batch(indices=[n - 1])
        assert_same(dataset[n - 1], unbatch(batch, 0))
        assert_same(dataset[-1], dataset[n - 1])
        with pytest.raises(IndexError):
            dataset[n]

    def test_iteration_matches_indexing(self, dataset: BaseDataset) -> None:
        count = 0
        for i, sample in enumerate(dataset):
            if i in (0, len(dataset) - 1):
                assert_same(sample, dataset[i], f"sample {i}")
            count += 1
        assert count == len(dataset)

    def test_random_batches_advance(self, dataset: BaseDataset) -> None:
        first = dataset.get_batch(16)["indices"]
        second = dataset.get_batch(16)["indices"]
        assert len(first) == 16
        if len(dataset) > 1:
            assert not np.array_equal(first, second)

    def test_threaded_reads_agree(self, dataset: BaseDataset) -> None:
        n = len(dataset)
        batches = [np.arange(i, min(i + 4, n), dtype=np.int64) for i in range(0, min(n, 32), 4)]
        expected = [dataset.read_batch(b) for b in batches]
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(dataset.read_batch, batches))
        for e, g in zip(expected, got, strict=True):
            assert_same(e, g)

    def test_loader_covers_an_epoch(self, dataset: BaseDataset) -> None:
        loader = Loader(
            dataset, 7, num_epochs=1, drop_last=False, prefetch=2, shard_index=0, shard_count=1
        )
        seen = np.concatenate([np.asarray(b["indices"]) for b in loader])
        np.testing.assert_array_equal(np.sort(seen), np.arange(len(dataset)))

    def test_split_dataset_partitions(self, dataset: BaseDataset) -> None:
        train, val = split_dataset(dataset, 0.5, seed=3)
        both = np.concatenate([train.indices, val.indices])
        np.testing.assert_array_equal(np.sort(both), np.arange(len(dataset)))
        if len(val):
            original = dataset[int(val.indices[0])]
            subset = val[0]
            assert subset["index"] == 0
            assert subset["base_indices"] == val.indices[0]
            for key in original:
                if key not in ("index", "base_indices"):
                    assert_same(subset[key], original[key], key)
