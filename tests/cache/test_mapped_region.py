"""Shard files mapped side by side into one address range (Linux)."""

from __future__ import annotations

import gc
import mmap
import sys

import numpy as np
import pytest

from datakiln.cache import mapped_region
from datakiln.cache.mapped_region import reserve

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux only")


def test_files_become_rows_of_one_array(tmp_path):
    unit = 30  # not a divisor of the page size: slots are a multiple of both
    files = []
    rng = np.random.default_rng(0)
    for k in range(3):
        data = rng.integers(0, 256, (5 + k) * unit, dtype=np.uint8)
        (tmp_path / f"f{k}").write_bytes(data.tobytes())
        files.append(data.reshape(-1, unit))
    region = reserve(4, 8 * unit, unit)
    assert region is not None
    assert (region.units_per_slot * unit) % mmap.PAGESIZE == 0
    for k in (2, 0, 1):  # any order
        assert region.map(k, str(tmp_path / f"f{k}")) == files[k].nbytes
    assert region.map(3, str(tmp_path / "absent")) == 0
    assert region.lengths(np.array([0, 1, 2, 3])).tolist() == [f.nbytes for f in files] + [0]
    rows = [(2, 6), (0, 0), (1, 5), (2, 0), (0, 4)]
    got = np.take(region.units, [s * region.units_per_slot + r for s, r in rows], axis=0)
    np.testing.assert_array_equal(got, [files[s][r] for s, r in rows])
    assert region.map(0, str(tmp_path / "f1")) == files[0].nbytes  # mapped once, kept
    region.close()


def test_a_file_larger_than_its_slot_is_refused(tmp_path):
    (tmp_path / "big").write_bytes(b"x" * 30_000)  # slots are 20,480 bytes here
    region = reserve(1, 100, 10)
    assert region is not None
    with pytest.raises(ValueError, match="do not fit"):
        region.map(0, str(tmp_path / "big"))


def test_unsupported_or_oversized_regions_are_none(monkeypatch):
    assert reserve(2**30, 2**20, 64) is None  # more address space than MAX_REGION_BYTES
    monkeypatch.setattr(mapped_region, "_LIBC", None)
    assert reserve(1, 100, 10) is None


def test_the_range_is_unmapped_with_its_region_but_not_at_exit(tmp_path):
    (tmp_path / "f").write_bytes(b"\x01" * 100)
    region = reserve(1, 100, 10)
    assert region is not None
    region.map(0, str(tmp_path / "f"))
    assert not region._finalizer.atexit  # daemon reader threads may still copy at exit
    finalizer = region._finalizer
    del region
    gc.collect()
    assert not finalizer.alive


def test_a_full_region_refuses_more_files(tmp_path):
    for k in range(2):
        (tmp_path / f"f{k}").write_bytes(b"\x02" * 40)
    region = reserve(2, 40, 10, max_files=1)
    assert region is not None
    assert region.map(0, str(tmp_path / "f0")) == 40
    assert region.map(0, str(tmp_path / "f0")) == 40  # already mapped: no new file
    with pytest.raises(OSError, match="its most"):
        region.map(1, str(tmp_path / "f1"))
