from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
from tests.conftest import write_small_images

from datakiln.cache.catalog import collect_garbage, list_caches
from datakiln.cache.open import open_cache
from datakiln.cache.verify import verify_cache
from datakiln.etl.bake import bake
from datakiln.etl.spec import BakeSpec, ImageParams


def test_ls_finds_every_cache_below_a_prefix(tmp_path):
    write_small_images(tmp_path / "raw", [f"{k}.png" for k in range(5)])
    for name in ("a", "nested/b"):
        bake(
            BakeSpec(
                sources=(str(tmp_path / "raw"),),
                output=str(tmp_path / "caches" / name),
                image=ImageParams(height=8, width=8),
            )
        )
    entries = list_caches(str(tmp_path / "caches"))
    assert [e.url.rsplit("caches/", 1)[1] for e in entries] == ["a", "nested/b"]
    assert all(e.rows == 5 and e.modality == "image" and e.size_bytes > 0 for e in entries)
    out = subprocess.run(
        [sys.executable, "-m", "datakiln", "ls", str(tmp_path / "caches")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "nested/b" in out


def test_gc_removes_old_generations_and_retired_shards_only(tmp_path):
    raw = tmp_path / "raw"
    write_small_images(raw, [f"{k:02d}.png" for k in range(12)])
    spec = BakeSpec(
        sources=(str(raw),),
        output=str(tmp_path / "c"),
        shard_size=4,
        image=ImageParams(height=8, width=8),
    )
    bake(spec)
    bake(dataclasses.replace(spec, image=ImageParams(height=6, width=6)))  # another generation
    bake(spec)  # back to the first generation: its shards are reused, version 3
    os.remove(raw / "00.png")  # retire shard 0 of the first generation
    bake(spec)
    assert open_cache(spec.output).manifest["version"] == 4
    before = open_cache(spec.output).get_batch(indices=np.arange(11))["images"]

    planned = collect_garbage(spec.output, dry_run=True)
    assert any("/g-" in p and p.endswith(tuple("0123456789abcdef")) for p in planned)
    assert any("_shards/00000.json" in p for p in planned)
    assert any("rejected-v" in p for p in planned)
    assert all(os.path.exists(p) for p in planned)
    removed = collect_garbage(spec.output)
    assert removed == planned
    assert not any(os.path.exists(p) for p in removed)
    assert verify_cache(spec.output).ok
    after = open_cache(spec.output).get_batch(indices=np.arange(11))["images"]
    np.testing.assert_array_equal(before, after)
    assert collect_garbage(spec.output, dry_run=True) == []
