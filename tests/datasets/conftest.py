"""Small in-memory datasets shared by the dataset tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from datakiln.datasets import BaseDataset


class CountingDataset(BaseDataset):
    """``n`` samples whose ``"values"`` are their index; counts the rows it reads."""

    def __init__(self, n: int, *, rngs: Any = 0) -> None:
        super().__init__(None, "train", rngs=rngs)
        self.n = n
        self.rows_read = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.n

    def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
        with self._lock:
            self.rows_read += len(indices)
        return {
            "values": indices.astype(np.float32)[:, None] * np.ones(2, np.float32),
            "names": [f"s{i}" for i in indices],
            "indices": np.asarray(indices, dtype=np.int64),
        }


class IterOnlyDataset(BaseDataset):
    """A dataset written against the seed API only: __len__, __iter__, get_batch."""

    def __init__(self, n: int) -> None:
        super().__init__(None, "train", rngs=0)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self.n):
            yield {"values": np.full(2, i, np.float32), "index": np.int64(i)}

    def get_batch(self, batch_size: int) -> dict[str, Any]:  # type: ignore[override]
        idx = self.rngs.randint(batch_size, self.n)
        return {"values": np.repeat(idx[:, None], 2, 1).astype(np.float32), "indices": idx}


@pytest.fixture(scope="session")
def counting() -> type[CountingDataset]:
    return CountingDataset


@pytest.fixture(scope="session")
def iter_only() -> type[IterOnlyDataset]:
    return IterOnlyDataset
