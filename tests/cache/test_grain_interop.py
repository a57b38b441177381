"""A cache is a Grain random-access data source (``__len__`` + ``__getitem__``)."""

from __future__ import annotations

import numpy as np
import pytest
from tests.conftest import write_small_images

from datakiln.cache.open import open_cache
from datakiln.etl.bake import bake
from datakiln.etl.spec import BakeSpec, ImageParams

grain = pytest.importorskip("grain.python")


def test_grain_pipeline_over_a_cache(tmp_path):
    write_small_images(tmp_path / "raw", [f"c{k % 2}/{k:02d}.png" for k in range(20)])
    out = str(tmp_path / "c")
    bake(
        BakeSpec(
            sources=(str(tmp_path / "raw"),),
            output=out,
            image=ImageParams(height=8, width=8, labels="parent"),
        )
    )
    dataset = open_cache(out)
    pipeline = (
        grain.MapDataset.source(dataset)
        .shuffle(seed=3)
        .map(lambda sample: {"image": sample["images"], "label": sample["labels"]})
        .batch(batch_size=5)
    )
    batches = list(pipeline)
    assert len(batches) == 4
    assert batches[0]["image"].shape == (5, 8, 8, 3)
    seen = np.concatenate([b["image"].reshape(5, -1) for b in batches])
    reference = dataset.get_batch(indices=np.arange(20))["images"].reshape(20, -1)
    assert sorted(map(bytes, seen.astype(np.float32))) == sorted(
        map(bytes, reference.astype(np.float32))
    )
