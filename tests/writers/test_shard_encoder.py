"""The direct shard encoder writes exactly the bytes zarr-python writes, and zarr reads them."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from datakiln.cache.chunk_codecs import ChunkCodec
from datakiln.writers.shard_encoder import encode_compressed_shard, encode_shard


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


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 30),
    lengths=st.lists(st.integers(0, 16), min_size=30, max_size=30),
    seed=st.integers(0, 2**16),
)
def test_rows_split_into_chunks_equal_zarr_python(tmp_path_factory, rows, lengths, seed):
    """Token-like rows (values, then zero padding) in (1, 4) inner chunks: zarr-python reads
    what write_field writes, and the same chunks are stored (padding alone: none). The bytes
    differ only in order: zarr-python lays a shard's chunks out in Morton order, we keep each
    row's chunks together."""
    from datakiln.writers.zarr_region import FieldLayout, prepare_arrays, write_field

    root = tmp_path_factory.mktemp("split")
    data = np.random.default_rng(seed).integers(1, 2**16, (rows, 16), dtype=np.uint16)
    data[np.arange(16)[None, :] >= np.array(lengths[:rows])[:, None]] = 0
    reference = zarr.open_group(root / "ref", mode="w").create_array(
        "x", shape=data.shape, dtype="uint16", chunks=(1, 4), shards=(8, 16), compressors=None
    )
    reference[:] = data
    field = FieldLayout("x", "x", "uint16", (16,), 8, chunk_cols=4)
    ours = str(root / "ours")
    prepare_arrays(ours, None, [field], rows, {})
    for start in range(0, rows, 8):
        write_field(ours, None, field, start, data[start : start + 8])
    for k in range(-(-rows // 8)):
        want, got = (root / where / "x" / "c" / str(k) / "0" for where in ("ref", "ours"))
        assert got.exists() == want.exists()
        if got.exists():
            assert got.stat().st_size == want.stat().st_size
            assert _missing(got) == _missing(want)
    np.testing.assert_array_equal(zarr.open_array(ours, path="x", mode="r")[:], data)
    stored = sum(p.stat().st_size for p in (root / "ours" / "x" / "c").rglob("*") if p.is_file())
    present_chunks = int((data.reshape(rows, 4, 4) != 0).any(axis=2).sum())
    index_bytes = -(-rows // 8) * (8 * 4 * 16 + 4) if present_chunks else 0
    assert stored <= present_chunks * 8 + index_bytes


def _missing(path) -> list[bool]:
    """Which inner chunks a shard object's index marks absent."""
    raw = path.read_bytes()[-(8 * 4 * 16 + 4) : -4]
    return (np.frombuffer(raw, "<u8").reshape(-1, 2)[:, 0] == 2**64 - 1).tolist()


@pytest.mark.parametrize("codec", ["zstd", "blosc-lz4", "png", "jpeg"])
@pytest.mark.parametrize("threads", [1, 3])
def test_compressed_shards_equal_zarr_python(tmp_path, codec, threads):
    chunk_codec = ChunkCodec(codec, 75)
    rows, shard_rows, shape = 11, 4, (12, 10, 3)
    yy, xx = np.mgrid[0:12, 0:10]
    data = np.stack([(yy * 9 + xx * 5 + 20 * k) % 256 for k in range(rows)]).astype(np.uint8)
    data = np.repeat(data[..., None], 3, axis=-1)
    data[[2, 8]] = 0  # fill rows: no chunk, as zarr-python leaves them out
    data[4:8] = 0  # a whole shard of fill: no object at all
    serializer, compressors = chunk_codec.zarr_codecs()
    array = zarr.open_group(tmp_path, mode="w").create_array(
        "x",
        shape=data.shape,
        dtype="uint8",
        chunks=(1, *shape),
        shards=(shard_rows, *shape),
        serializer=serializer,
        compressors=compressors,
        fill_value=0,
    )
    array[:] = data
    for k, start in enumerate(range(0, rows, shard_rows)):
        path = tmp_path / "x" / "c" / str(k) / "0" / "0" / "0"
        expected = path.read_bytes() if path.exists() else None
        rows_k = data[start : start + shard_rows]
        got = encode_compressed_shard(rows_k, shard_rows, chunk_codec, threads=threads)
        assert got == expected, (codec, k)
