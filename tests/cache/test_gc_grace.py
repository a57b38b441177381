"""gc keeps what a version opened by a reader within the grace period references, so a reader
pinned to version k keeps reading while k+1 bakes and gc runs."""

from __future__ import annotations

import dataclasses
import json
import time

import fsspec
import numpy as np
import pytest
from tests.conftest import write_small_images

from datakiln.cache.catalog import collect_garbage
from datakiln.cache.open import open_cache
from datakiln.cache.pins import pin_path
from datakiln.cache.verify import verify_cache
from datakiln.etl.bake import bake
from datakiln.etl.spec import BakeSpec, ImageParams


@pytest.mark.parametrize("store", ["local", "s3"])
@pytest.mark.parametrize("change", ["new parameters", "removed input"])
def test_a_pinned_reader_keeps_reading_through_a_rebake_and_gc(store, change, tmp_path, request):
    raw = tmp_path / "raw"
    write_small_images(raw, [f"{k:02d}.png" for k in range(12)])
    if store == "local":
        url, options = str(tmp_path / "c"), {}
    else:
        bucket, options = request.getfixturevalue("s3_options")
        url = f"{bucket}/c"
    spec = BakeSpec(
        sources=(str(raw),),
        output=url,
        output_storage_options=options,
        shard_size=4,
        scheduler="threads",
        image=ImageParams(height=8, width=8),
    )
    bake(spec)
    reader = open_cache(url, storage_options=options)  # pins version 1
    rows = np.arange(12)
    before = reader.get_batch(indices=rows)["images"]

    if change == "new parameters":  # version 2 in another generation
        bake(dataclasses.replace(spec, image=ImageParams(height=6, width=6)))
    else:  # version 2 retires shard 0 of the same generation
        (raw / "00.png").unlink()
        bake(spec)
    removed = collect_garbage(url, options)
    assert not [p for p in removed if "/g-" in p and "rejected-v" not in p]
    # a fresh reader of the old version's objects: nothing it needs was deleted
    fresh = type(reader)(url, storage_options=options, manifest=reader.manifest)
    np.testing.assert_array_equal(fresh.get_batch(indices=rows)["images"], before)
    np.testing.assert_array_equal(reader.get_batch(indices=rows)["images"], before)

    # once the pin is older than the grace period, gc removes the old version's objects
    fs, root = fsspec.core.url_to_fs(url, **options)
    pin = f"{root}/{pin_path(1)}"
    record = json.loads(fs.cat_file(pin))
    fs.pipe_file(pin, json.dumps({**record, "touched": time.time() - 7200}).encode())
    removed = collect_garbage(url, options)
    assert [p for p in removed if "/g-" in p]
    assert not fs.exists(pin)
    assert verify_cache(url, options).ok
    assert collect_garbage(url, options, dry_run=True) == []
