"""Mixtures: exact composition per window, determinism, fields, and resume (elastic too)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import datakiln
import datakiln.datasets as dk
from datakiln.datasets.mixture import window_counts
from datakiln.errors import SpecError


class Labelled(dk.BaseDataset):
    """``n`` samples whose ``value`` is ``base + index`` and ``tag`` a fixed int."""

    def __init__(self, n: int, base: int, *, extra: bool = False) -> None:
        super().__init__(None, "train")
        self.n, self.base, self.extra = n, base, extra

    def __len__(self) -> int:
        return self.n

    def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
        batch = {"value": self.base + np.asarray(indices, np.int64), "indices": indices}
        if self.extra:
            batch["mask"] = np.ones(len(indices), bool)
        return batch


@given(weights=st.lists(st.floats(0.01, 10), min_size=1, max_size=5), window=st.integers(1, 300))
def test_window_counts_are_exact_and_close_to_the_weights(weights: list[float], window: int):
    counts = window_counts(np.array(weights) / sum(weights), window)
    assert counts.sum() == window
    assert (np.abs(counts - np.array(weights) / sum(weights) * window) < 1 + 1e-9).all()


def test_each_window_has_exact_counts_and_each_source_cycles_fully():
    a, b = Labelled(50, 0), Labelled(30, 1000)
    mixture = datakiln.mix({a: 0.7, b: 0.3}, seed=4, window=20)
    loader = dk.Loader(mixture, 20, num_epochs=3, shard_index=0, shard_count=1, prefetch=0)
    seen_a: list[int] = []
    for batch in loader:
        assert (batch["sources"] == 0).sum() == 14
        assert (batch["sources"] == 1).sum() == 6
        np.testing.assert_array_equal(
            batch["value"], np.where(batch["sources"] == 0, 0, 1000) + batch["source_indices"]
        )
        seen_a.extend(batch["source_indices"][batch["sources"] == 0].tolist())
    # every sample of a source is drawn once before any is drawn again
    assert sorted(seen_a[:50]) == list(range(50))
    assert sorted(seen_a[50:100]) == list(range(50))
    again = datakiln.mix({a: 0.7, b: 0.3}, seed=4, window=20)
    np.testing.assert_array_equal(
        again.read_batch(np.arange(100, 180))["value"],
        mixture.read_batch(np.arange(100, 180))["value"],
    )
    other = datakiln.mix({a: 0.7, b: 0.3}, seed=5, window=20)
    assert not np.array_equal(
        other.read_batch(np.arange(40))["value"], mixture.read_batch(np.arange(40))["value"]
    )


def test_different_fields_are_refused_unless_named():
    a, b = Labelled(10, 0), Labelled(10, 100, extra=True)
    with pytest.raises(SpecError, match="fields="):
        datakiln.mix({a: 1, b: 1})
    mixture = datakiln.mix({a: 1, b: 1}, fields=["value"])
    assert set(mixture.read_batch(np.arange(8))) == {
        "value",
        "indices",
        "sources",
        "source_indices",
    }
    with pytest.raises(SpecError, match="missing"):
        datakiln.mix({a: 1, b: 1}, fields=["mask"])
    with pytest.raises(SpecError, match="positive"):
        datakiln.mix({a: 1, b: 0})


@settings(max_examples=25, deadline=None)
@given(
    old_hosts=st.sampled_from([1, 2, 4]),
    new_hosts=st.sampled_from([1, 2, 4, 8]),
    steps=st.integers(1, 6),
)
def test_mixture_state_survives_elastic_resume(old_hosts: int, new_hosts: int, steps: int):
    a, b = Labelled(40, 0), Labelled(25, 1000)
    global_batch = 8

    def loaders(hosts: int, state: Any = None) -> list[dk.Loader]:
        out = []
        for h in range(hosts):
            mixture = datakiln.mix({a: 0.75, b: 0.25}, seed=1, window=global_batch)
            loader = dk.Loader(
                mixture,
                global_batch // hosts,
                num_epochs=2,
                shard_index=h,
                shard_count=hosts,
                prefetch=0,
            )
            if state is not None:
                loader.restore(json.loads(json.dumps(state)))
            out.append(loader)
        return out

    def values(batches: list[dict[str, Any]]) -> list[int]:
        return [int(v) for batch in batches for v in batch["value"]]

    reference = values([b for loader in loaders(1) for b in loader])
    first = loaders(old_hosts)
    heads = [[next(it) for _ in range(steps)] for it in map(iter, first)]
    state = first[-1].state()
    rest = [list(loader) for loader in loaders(new_hosts, state)]
    # step by step, the hosts' batches together are the uninterrupted run's global batches
    joined = [v for k in range(steps) for h in range(old_hosts) for v in values([heads[h][k]])]
    joined += [
        v for k in range(len(rest[0])) for h in range(new_hosts) for v in values([rest[h][k]])
    ]
    assert joined == reference


def test_a_state_of_another_mixture_is_refused():
    a, b = Labelled(40, 0), Labelled(25, 1000)
    loader = dk.Loader(datakiln.mix({a: 0.5, b: 0.5}, seed=1), 8, shard_index=0, shard_count=1)
    other = dk.Loader(datakiln.mix({a: 0.6, b: 0.4}, seed=1), 8, shard_index=0, shard_count=1)
    with pytest.raises(SpecError, match="mixture"):
        other.restore(loader.state())
