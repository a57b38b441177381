"""The direct shard reader returns exactly what zarr-python returns, on disk and in memory."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datakiln.cache import shard_reader
from datakiln.cache.layout import store_fs, zarr_store
from datakiln.cache.shard_reader import ShardedFieldReader
from datakiln.errors import CacheFormatError
from datakiln.writers.zarr_region import FieldLayout, prepare_arrays, write_rows

ROWS, SHARD_ROWS, SHAPE = 50, 16, (3, 5, 2)


def _make(url: str) -> np.ndarray:
    field = FieldLayout("x", "x", "uint8", SHAPE, SHARD_ROWS)
    prepare_arrays(url, None, [field], ROWS, {})
    rng = np.random.default_rng(0)
    data = rng.integers(1, 256, (ROWS, *SHAPE), dtype=np.uint8)
    data[5] = 0  # an all-fill sample: zarr stores no inner chunk for it
    data[32:48] = 0  # a whole shard of fill: no object at all
    for start in range(0, ROWS, SHARD_ROWS):
        write_rows(url, None, "x", start, data[start : start + SHARD_ROWS])
    return data


@pytest.fixture(params=["local", "local-per-row", "memory"])
def stored(request, tmp_path, memory_root, monkeypatch):
    """On disk (one mapped region, or one map per shard as where that is unsupported), and
    in a memory filesystem (ranged reads)."""
    url = f"{memory_root}/s" if request.param == "memory" else str(tmp_path / "s")
    if request.param == "local-per-row":
        monkeypatch.setattr(shard_reader, "reserve", lambda *args: None)
    data = _make(url)
    fs, root = store_fs(url)
    reader = ShardedFieldReader(fs, root, "x")
    if request.param == "local" and sys.platform == "linux":
        assert reader._region is not None
    return url, data, reader


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(st.integers(0, ROWS - 1), min_size=1, max_size=40))
def test_matches_zarr_python(stored, rows):
    url, data, reader = stored
    rows = np.array(rows, dtype=np.int64)
    out = np.empty((len(rows), *SHAPE), np.uint8)
    reader.read_into(rows, out)
    reference = zarr.open_array(zarr_store(url, None, read_only=True), path="x", mode="r")
    np.testing.assert_array_equal(out, reference.get_orthogonal_selection((rows,)))
    np.testing.assert_array_equal(out, data[rows])


@settings(max_examples=20, deadline=None)
@given(
    rows=st.lists(st.integers(0, 39), min_size=1, max_size=30),
    lengths=st.lists(st.integers(0, 12), min_size=40, max_size=40),
)
def test_rows_split_into_chunks_match_zarr_python(tmp_path_factory, rows, lengths):
    """A 2-D field stored as (1, C) inner chunks, padding chunks absent: same rows."""
    url = str(tmp_path_factory.mktemp("split") / "s")
    field = FieldLayout("t", "t", "uint16", (12,), 16, chunk_cols=4)
    prepare_arrays(url, None, [field], 40, {})
    data = np.random.default_rng(2).integers(1, 999, (40, 12), dtype=np.uint16)
    data[np.arange(12)[None, :] >= np.array(lengths)[:, None]] = 0
    for start in range(0, 40, 16):
        write_rows(url, None, "t", start, data[start : start + 16])
    fs, root = store_fs(url)
    reader = ShardedFieldReader(fs, root, "t")
    rows = np.array(rows, dtype=np.int64)
    out = np.full((len(rows), 12), 7, np.uint16)
    reader.read_into(rows, out)
    np.testing.assert_array_equal(out, data[rows])


def test_cache_is_bounded(tmp_path):
    url = str(tmp_path / "s")
    data = _make(url)
    fs, root = store_fs(url)
    reader = ShardedFieldReader(fs, root, "x", max_cache_bytes=1)
    out = np.empty((4, *SHAPE), np.uint8)
    rows = np.array([0, 17, 49, 3])
    reader.read_into(rows, out)  # more shards than slots: read shard by shard
    np.testing.assert_array_equal(out, data[rows])
    assert len(reader._slot_shard) == 1
    assert len(reader._cache) == 1
    reader.read_into(np.array([20, 21]), out[:2])  # one shard: through the slot table
    np.testing.assert_array_equal(out[:2], data[[20, 21]])


def test_damaged_chunk_length_is_an_error(tmp_path):
    url = str(tmp_path / "s")
    _make(url)
    fs, root = store_fs(url)
    reader = ShardedFieldReader(fs, root, "x")
    reader.read_into(np.array([1]), np.empty((1, *SHAPE), np.uint8))  # loads shard 0's index
    reader._table[reader._slot_of[0], 2, 1] = 7  # row 2's entry, before row 2 is first read
    with pytest.raises(CacheFormatError, match="verify"):
        reader.read_into(np.array([2]), np.empty((1, *SHAPE), np.uint8))


@pytest.mark.skipif(sys.platform != "linux", reason="the mapped region is Linux-only")
def test_rows_read_again_come_from_the_unit_map_and_forget_drops_them(tmp_path):
    """A second read of the same rows takes the fast path (the unit map) and gives the same
    bytes; forgetting a shard drops its rows from the map, so they are looked up again."""
    url = str(tmp_path / "s")
    data = _make(url)
    fs, root = store_fs(url)
    reader = ShardedFieldReader(fs, root, "x")
    rows = np.array([7, 1, 2, 7, 20])
    first, again = np.empty((5, *SHAPE), np.uint8), np.empty((5, *SHAPE), np.uint8)
    reader.read_into(rows, first)
    assert reader._unit_map is not None
    assert (reader._unit_map[rows] >= 0).all()
    reader.read_into(np.array([5, 40]), np.empty((2, *SHAPE), np.uint8))
    assert (reader._unit_map[[5, 40]] == -1).all()  # fill: no chunk, always looked up
    reader.read_into(rows, again)
    np.testing.assert_array_equal(first, data[rows])
    np.testing.assert_array_equal(again, data[rows])
    reader.forget(0)
    assert (reader._unit_map[: reader._shard_units] == -1).all()
    assert reader._unit_map[20] >= 0  # another shard's rows stay
    reader.read_into(rows, again)
    np.testing.assert_array_equal(again, data[rows])


@pytest.mark.skipif(sys.platform != "linux", reason="the mapped region is Linux-only")
def test_index_pointing_past_the_file_is_an_error_not_a_crash(tmp_path):
    """The mapped region is unreadable outside the files: a bad index must be caught first."""
    url = str(tmp_path / "s")
    data = _make(url)
    fs, root = store_fs(url)
    reader = ShardedFieldReader(fs, root, "x")
    unit = int(np.prod(SHAPE))
    shard = tmp_path / "s" / "x" / "c" / "0" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    index = np.frombuffer(raw, "<u8", 2 * SHARD_ROWS, len(raw) - 16 * SHARD_ROWS - 4).copy()
    index = index.reshape(SHARD_ROWS, 2)
    index[3] = (len(raw) // unit + 8) * unit, unit  # row 3: an aligned chunk past the end
    raw[len(raw) - 16 * SHARD_ROWS - 4 : -4] = index.tobytes()
    shard.write_bytes(bytes(raw))
    out = np.empty((2, *SHAPE), np.uint8)
    reader.read_into(np.array([1, 2]), out)
    np.testing.assert_array_equal(out, data[[1, 2]])
    with pytest.raises(CacheFormatError, match="shorter than its index"):
        reader.read_into(np.array([1, 3]), out)


@pytest.mark.skipif(sys.platform != "linux", reason="the mapped region is Linux-only")
def test_shards_past_the_regions_limit_are_copied_row_by_row(tmp_path, monkeypatch):
    from datakiln.cache import mapped_region

    url = str(tmp_path / "s")
    data = _make(url)
    fs, root = store_fs(url)
    real_reserve = mapped_region.reserve
    monkeypatch.setattr(shard_reader, "reserve", lambda *args: real_reserve(*args, max_files=1))
    reader = ShardedFieldReader(fs, root, "x")
    out = np.empty((3, *SHAPE), np.uint8)
    reader.read_into(np.array([1, 2, 3]), out)  # shard 0: mapped
    np.testing.assert_array_equal(out, data[[1, 2, 3]])
    rows = np.array([17, 2, 49])  # shards 1 and 3 do not fit: the batch goes row by row
    reader.read_into(rows, out)
    np.testing.assert_array_equal(out, data[rows])
    assert reader._region.lengths(np.array([0, 1, 3])).tolist() == [
        (tmp_path / "s" / "x" / "c" / "0" / "0" / "0" / "0").stat().st_size,
        0,
        0,
    ]
