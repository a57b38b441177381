"""Versions of one store: append-only incremental bakes, generations, and readers held open."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from tests.conftest import write_small_images

from datakiln.cache.open import open_cache
from datakiln.cache.verify import verify_cache
from datakiln.etl.bake import bake, plan_only
from datakiln.etl.spec import BakeSpec, ImageParams


def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}/{k:03d}.png" for k in range(n)]


@pytest.fixture
def spec(tmp_path) -> BakeSpec:
    write_small_images(tmp_path / "raw", _names("cats", 10) + _names("dogs", 10))
    return BakeSpec(
        sources=(str(tmp_path / "raw"),),
        output=str(tmp_path / "cache"),
        shard_size=8,
        image=ImageParams(height=8, width=8, labels="parent"),
    )


def _all(dataset) -> dict[str, np.ndarray]:
    return dataset.get_batch(indices=np.arange(len(dataset)))


def test_new_inputs_are_appended_without_rewriting(spec, tmp_path):
    first = bake(spec)
    before = open_cache(spec.output)
    old = _all(before)
    shard_files = sorted((tmp_path / "cache").rglob("images/c/*/0/0/0"))
    stamps = {p: p.stat().st_mtime_ns for p in shard_files}

    write_small_images(tmp_path / "raw", _names("birds", 5), seed=1)
    summary = plan_only(spec)
    assert (summary.new_inputs, summary.changed_inputs, summary.removed_inputs) == (5, 0, 0)
    second = bake(spec)
    assert second.inputs == first.inputs + 5
    assert second.shards_skipped == first.shards
    assert {p: p.stat().st_mtime_ns for p in shard_files} == stamps
    after = open_cache(spec.output)
    np.testing.assert_array_equal(_all(after)["images"][: len(before)], old["images"])
    assert after.class_names == ["cats", "dogs", "birds"]  # old labels keep their numbers
    np.testing.assert_array_equal(_all(before)["images"], old["images"])
    assert verify_cache(spec.output).ok


def test_changed_and_removed_inputs_rebuild_their_shards(spec, tmp_path):
    bake(spec)
    os.remove(tmp_path / "raw" / "cats" / "000.png")
    write_small_images(tmp_path / "raw", ["dogs/005.png"], seed=7)  # new content
    summary = plan_only(spec)
    assert (summary.changed_inputs, summary.removed_inputs) == (1, 1)
    report = bake(spec)
    assert report.inputs == 19
    assert report.baked == 19
    fresh = dataclasses.replace(spec, output=str(tmp_path / "fresh"))
    bake(fresh)
    mine, theirs = open_cache(spec.output), open_cache(fresh.output)
    a, b = _all(mine), _all(theirs)
    order = lambda ds: np.argsort(ds.metadata().column("uri").to_pylist())  # noqa: E731
    np.testing.assert_array_equal(a["images"][order(mine)], b["images"][order(theirs)])
    assert verify_cache(spec.output).ok


def test_reader_keeps_its_version_across_a_rebake_with_new_parameters(spec):
    bake(spec)
    reader = open_cache(spec.output)
    old = _all(reader)
    bake(dataclasses.replace(spec, image=ImageParams(height=6, width=6, labels="parent")))
    np.testing.assert_array_equal(_all(reader)["images"], old["images"])
    assert open_cache(spec.output).get_batch(indices=[0])["images"].shape == (1, 6, 6, 3)


def test_plan_names_the_changed_parameter(spec):
    bake(spec)
    changed = dataclasses.replace(
        spec, image=ImageParams(height=8, width=8, fit="pad", labels="parent")
    )
    summary = plan_only(changed)
    assert not summary.up_to_date
    assert any("image.fit: 'stretch' -> 'pad'" in r for r in summary.key_changes)
    assert plan_only(spec).up_to_date


def test_an_unchanged_listing_is_up_to_date_without_reading_markers(spec, tmp_path, monkeypatch):
    """A re-bake of an unchanged listing (``watch`` polls so) reads the manifest, not every
    shard's marker; a changed one still plans against the markers."""
    import datakiln.etl.bake as bake_module

    first = bake(spec)
    reads: list[int] = []
    real = bake_module.read_marker

    def counted(fs, root, generation, shard_id):
        reads.append(shard_id)
        return real(fs, root, generation, shard_id)

    monkeypatch.setattr(bake_module, "read_marker", counted)
    again = bake(spec)
    assert again.up_to_date
    assert reads == []
    assert (again.cache_key, again.shards, again.shards_skipped) == (
        first.cache_key,
        first.shards,
        first.shards,
    )
    assert bake_module.listed_cache_key(spec) == first.cache_key

    write_small_images(tmp_path / "raw", _names("birds", 3), seed=1)
    third = bake(spec)
    assert not third.up_to_date
    assert third.inputs == first.inputs + 3
    assert len(reads) >= first.shards  # the incremental plan read the committed markers
    assert bake_module.listed_cache_key(spec) == third.cache_key
