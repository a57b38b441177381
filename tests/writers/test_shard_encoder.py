"""The direct shard encoder writes exactly the bytes zarr-python writes, and zarr reads them."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from datakiln.writers.shard_encoder import encode_shard


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 40),
    shard_rows=st.sampled_from([4, 8, 16]),
    empty=st.lists(st.integers(0, 39), max_size=10),
    seed=st.integers(0, 2**16),
)
def test_bytes_equal_zarr_python(tmp_path_factory, rows, shard_rows, empty, seed):
    root = tmp_path_factory.mktemp("enc")
    data = np.random.default_rng(seed).integers(1, 256, (rows, 3, 2, 3), dtype=np.uint8)
    data[[e for e in empty if e < rows]] = 0
    array = zarr.open_group(root, mode="w").create_array(
        "x",
        shape=data.shape,
        dtype="uint8",
        chunks=(1, 3, 2, 3),
        shards=(shard_rows, 3, 2, 3),
        compressors=None,
        fill_value=0,
    )
    for start in range(0, rows, shard_rows):
        array[start : start + shard_rows] = data[start : start + shard_rows]
    for k, start in enumerate(range(0, rows, shard_rows)):
        path = root / "x" / "c" / str(k) / "0" / "0" / "0"
        expected = path.read_bytes() if path.exists() else None
        assert encode_shard(data[start : start + shard_rows], shard_rows) == expected


def test_zarr_reads_what_we_write(tmp_path):
    data = np.random.default_rng(1).integers(0, 256, (10, 4, 4, 1), dtype=np.uint8)
    array = zarr.open_group(tmp_path, mode="w").create_array(
        "x",
        shape=data.shape,
        dtype="uint8",
        chunks=(1, 4, 4, 1),
        shards=(8, 4, 4, 1),
        compressors=None,
        fill_value=0,
    )
    for k, start in enumerate(range(0, 10, 8)):
        path = tmp_path / "x" / "c" / str(k) / "0" / "0" / "0"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_shard(data[start : start + 8], 8))
    np.testing.assert_array_equal(array[:], data)


def test_too_many_rows_is_an_error():
    with pytest.raises(ValueError, match="do not fit"):
        encode_shard(np.ones((5, 2), np.uint8), 4)
