"""Versions: an open dataset keeps its version; ``open_cache(version=...)`` reopens any kept one."""

from __future__ import annotations

import pytest
from tests.conftest import write_small_images

import datakiln
from datakiln.cache.catalog import collect_garbage, list_caches
from datakiln.cache.verify import verify_cache
from datakiln.errors import CacheNotFoundError, SpecError


def _spec(raw, out):
    return datakiln.BakeSpec(
        sources=(str(raw),),
        output=out,
        shard_size=8,
        scheduler="threads",
        image=datakiln.ImageParams(height=8, width=8),
    )


def test_open_cache_pins_a_version_and_latest_sees_the_new_one(tmp_path):
    raw, out = tmp_path / "raw", str(tmp_path / "cache")
    write_small_images(raw, [f"a/{k:02d}.png" for k in range(10)])
    datakiln.bake(_spec(raw, out))
    first = datakiln.open_cache(out)
    write_small_images(raw, [f"b/{k:02d}.png" for k in range(6)], seed=1)
    datakiln.bake(_spec(raw, out))

    assert len(first) == 10  # pinned to the version it opened
    assert len(datakiln.open_cache(out, version="latest")) == 16
    assert len(datakiln.open_cache(out, version=2)) == 16
    old = datakiln.open_cache(out, version=1)
    assert len(old) == 10
    assert (
        old.get_batch(indices=[0, 9])["images"] == first.get_batch(indices=[0, 9])["images"]
    ).all()
    with pytest.raises(CacheNotFoundError, match="no version 3"):
        datakiln.open_cache(out, version=3)
    with pytest.raises(SpecError, match="version must be"):
        datakiln.open_cache(out, version="newest")
    assert [c.url for c in list_caches(str(tmp_path))] == [f"file://{out}"]
    assert verify_cache(out).ok

    removed = collect_garbage(out, grace_s=0)  # no reader pins version 1 any more
    assert any(p.endswith("manifests/v000001.json") for p in removed)
    with pytest.raises(CacheNotFoundError, match="kept until `datakiln gc`"):
        datakiln.open_cache(out, version=1)
    assert len(datakiln.open_cache(out, version=2)) == 16
