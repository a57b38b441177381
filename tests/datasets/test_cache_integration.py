"""A baked cache is just another BaseDataset: the dataset API and loaders accept it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datakiln.datasets as dk
from datakiln.datasets.testing import DatasetTests

pytest.importorskip("PIL")
pytest.importorskip("dask")


@pytest.fixture(scope="module")
def cache_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    from PIL import Image

    from datakiln.etl.bake import bake
    from datakiln.etl.spec import BakeSpec, ImageParams

    root = tmp_path_factory.mktemp("raw")
    rng = np.random.default_rng(0)
    for i in range(30):
        folder = root / ("cat" if i % 3 else "dog")
        folder.mkdir(exist_ok=True)
        pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    out = str(Path(tmp_path_factory.mktemp("baked")) / "cache")
    spec = BakeSpec(
        sources=(str(root),),
        output=out,
        shard_size=16,
        image=ImageParams(height=8, width=8, labels="parent"),
    )
    bake(spec)
    return out


@pytest.fixture
def cache(cache_url: str) -> Any:
    from datakiln.cache.open import open_cache

    return open_cache(cache_url, rngs=0)


class TestCachedDatasetConformance(DatasetTests):
    @pytest.fixture
    def dataset(self, cache: Any) -> dk.BaseDataset:
        return cache


def test_split_and_loaders_over_a_cache(cache: Any) -> None:
    assert isinstance(cache, dk.BaseDataset)
    assert len(cache) == 30
    train, val = dk.split_dataset(cache, 0.8)
    assert (len(train), len(val)) == (24, 6)
    loader = dk.Loader(
        train, 5, seed=1, num_epochs=2, drop_last=False, shard_index=0, shard_count=1
    )
    epochs: dict[int, list[int]] = {0: [], 1: []}
    for epoch, batch in loader.iter_with_epoch():
        assert batch["images"].dtype == np.float32
        assert batch["images"].shape[1:] == (8, 8, 3)
        epochs[epoch].extend(batch["base_indices"].tolist())
    assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(train.indices.tolist())
    head = dk.split_dataset(cache, "train[:50%]")
    assert len(head) == 15
    simple = list(dk.create_simple_data_loader(val, 4))
    assert sorted(np.concatenate([b["base_indices"] for b in simple]).tolist()) == sorted(
        val.indices.tolist()
    )
    prefetch = dk.PrefetchDataLoader(cache, 8, num_workers=2, prefetch_size=2)
    assert sorted(np.concatenate([b["indices"] for b in prefetch]).tolist()) == list(range(30))


def test_transforms_validation_and_augmentation_over_a_cache(cache: Any) -> None:
    import jax

    augmented = dk.augment_batch(cache.get_batch(indices=range(4)), jax.random.key(0))
    assert augmented["images"].shape == (4, 8, 8, 3)
    valid = dk.ValidatedDataset(cache)
    assert valid.shape is None
    assert len(valid.get_batch(indices=range(30))["indices"]) == 30
    labels = dk.TransformDataset(None, cache, [lambda b: {**b, "labels": b["labels"] * 0}])
    assert set(labels.get_batch(8)["labels"].tolist()) == {0}
    resumed = dk.Loader(cache, 7, seed=3, shard_index=0, shard_count=1)
    it = iter(resumed)
    next(it)
    state = resumed.state()
    resumed.close()
    again = dk.Loader(cache, 7, seed=3, shard_index=0, shard_count=1)
    again.restore(state)
    np.testing.assert_array_equal(next(iter(again))["indices"], resumed.epoch_indices(0)[1])
