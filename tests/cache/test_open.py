"""CachedDataset: what batches hold, determinism, bounded caches, the reference path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import write_small_images

from datakiln.cache.open import CachedDataset, open_cache
from datakiln.errors import CacheFormatError, CacheNotFoundError
from datakiln.etl.bake import bake
from datakiln.etl.spec import BakeSpec, ImageParams


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("open")
    write_small_images(root / "raw", [f"c{k % 3}/{k:03d}.png" for k in range(70)])
    (root / "raw" / "c0" / "bad.png").write_bytes(b"not a png")
    out = str(root / "cache")
    bake(
        BakeSpec(
            sources=(str(root / "raw"),),
            output=out,
            shard_size=16,
            image=ImageParams(height=12, width=10, labels="parent"),
        )
    )
    return out


def test_batches_have_the_promised_shapes_dtypes_and_ranges(cache):
    dataset = open_cache(cache, rngs=0)
    assert len(dataset) == 70
    batch = dataset.get_batch(9)
    assert batch["images"].shape == (9, 12, 10, 3)
    assert batch["images"].dtype == np.float32
    assert 0.0 <= batch["images"].min() <= batch["images"].max() <= 1.0
    assert batch["labels"].dtype == np.int32
    assert set(batch["labels"].tolist()) <= {0, 1, 2}
    assert batch["indices"].dtype == np.int64
    sample = dataset[5]
    assert sample["images"].shape == (12, 10, 3)
    assert int(sample["index"]) == 5


def test_random_batches_are_reproducible_and_advance(cache):
    a, b = open_cache(cache, rngs=7), open_cache(cache, rngs=7)
    first, second = a.get_batch(8), a.get_batch(8)
    assert not np.array_equal(first["indices"], second["indices"])
    np.testing.assert_array_equal(b.get_batch(8)["indices"], first["indices"])


def test_fast_path_equals_zarr_python(cache):
    fast, reference = open_cache(cache), CachedDataset(cache, fast=False)
    idx = np.random.default_rng(0).integers(0, 70, 50)
    a, b = fast.get_batch(indices=idx), reference.get_batch(indices=idx)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_batches_a_caller_keeps_are_never_overwritten(cache):
    """Output arrays are pooled, but reused only once the caller dropped them."""
    import jax.numpy as jnp

    dataset, reference = open_cache(cache), CachedDataset(cache, fast=False)
    rng = np.random.default_rng(1)
    kept, views, on_device = [], [], []
    for step in range(40):
        idx = rng.integers(0, 70, 16)
        batch = dataset.get_batch(indices=idx)
        if step % 3 == 0:
            kept.append((idx, batch))
        elif step % 3 == 1:
            views.append((idx, batch["images"][2:5]))
        else:
            on_device.append((idx, jnp.asarray(batch["images"])))
        del batch
    for idx, batch in kept:
        want = reference.get_batch(indices=idx)
        for key in want:
            np.testing.assert_array_equal(batch[key], want[key])
    for idx, view in views:
        np.testing.assert_array_equal(view, reference.get_batch(indices=idx)["images"][2:5])
    for idx, array in on_device:
        np.testing.assert_array_equal(np.asarray(array), reference.get_batch(indices=idx)["images"])


def test_indices_are_checked(cache):
    dataset = open_cache(cache)
    with pytest.raises(IndexError, match="out of range"):
        dataset.get_batch(indices=[0, 70])
    np.testing.assert_array_equal(dataset[-1]["images"], dataset[69]["images"])


def test_read_caches_are_bounded_in_bytes(cache):
    dataset = CachedDataset(cache, max_cache_bytes=1)
    dataset.get_batch(indices=np.arange(70))
    assert dataset._chunked["labels"].resident_chunks() == 1
    assert len(dataset._sharded["images"]._slot_shard) == 1


def test_missing_and_foreign_caches(cache, tmp_path):
    with pytest.raises(CacheNotFoundError, match="no datakiln cache"):
        open_cache(str(tmp_path))
    manifest = json.loads(Path(cache, "manifest.json").read_text())
    manifest["fields"]["images"]["shape"] = [12, 10, 4]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(Path(cache, "zarr.json"), tmp_path / "zarr.json")
    shutil.copytree(Path(cache, manifest["generation"]), tmp_path / manifest["generation"])
    with pytest.raises(CacheFormatError, match="verify"):
        open_cache(str(tmp_path))


def test_a_loader_state_of_another_cache_version_is_refused(cache, tmp_path):
    from datakiln.datasets.loader import Loader
    from datakiln.errors import SpecError

    other = tmp_path / "other"
    shutil.copytree(cache, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["version"] += 1
    (other / "manifest.json").write_text(json.dumps(manifest))
    loader = Loader(open_cache(cache), 8, seed=1, shard_index=0, shard_count=1, prefetch=0)
    next(iter(loader))
    state = loader.state()
    same = Loader(open_cache(cache), 8, seed=1, shard_index=0, shard_count=1)
    same.restore(state)
    assert same.step == 1
    with pytest.raises(SpecError, match="another cache version"):
        Loader(open_cache(str(other)), 8, seed=1, shard_index=0, shard_count=1).restore(state)


def test_raw_dtype_returns_the_stored_bytes(cache):
    from datakiln.errors import SpecError

    converted = open_cache(cache)
    raw = open_cache(cache, dtype="raw")
    some = open_cache(cache, dtype={"images": "raw"})
    indices = np.array([5, 0, 17, 3])
    images = raw.read_batch(indices)["images"]
    assert images.dtype == np.uint8
    as_float = converted.read_batch(indices)["images"]
    np.testing.assert_array_equal(images, np.round(as_float * 255).astype(np.uint8))
    batch = some.read_batch(indices)
    assert batch["images"].dtype == np.uint8
    np.testing.assert_array_equal(batch["labels"], converted.read_batch(indices)["labels"])
    with pytest.raises(SpecError, match="lacks"):
        open_cache(cache, dtype={"pixels": "raw"})


def test_chunk_cache_serves_any_batch_from_few_slots(tmp_path):
    """Random batches, some touching more chunks than there are slots, against the array."""
    import zarr

    from datakiln.cache.open import _ChunkCache

    values = np.arange(1003 * 2, dtype=np.int32).reshape(1003, 2)  # a partial last chunk
    array = zarr.create_array(tmp_path / "a.zarr", shape=values.shape, chunks=(10, 2), dtype="i4")
    array[:] = values
    cache = _ChunkCache(array, max_cache_bytes=3 * 10 * 2 * 4)  # three chunks
    rng = np.random.default_rng(0)
    for size in (1, 5, 40, 300):
        for _ in range(5):
            rows = rng.integers(0, len(values), size)
            np.testing.assert_array_equal(cache.take(rows), values[rows])
            assert cache.resident_chunks() <= 3
    np.testing.assert_array_equal(cache.take(np.array([1002, 1000, 5])), values[[1002, 1000, 5]])
    assert cache.take(np.array([], np.int64)).shape == (0, 2)
