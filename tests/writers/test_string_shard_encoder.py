"""Variable-length string shards: the direct encoder writes zarr-python's bytes, and both
zarr-python and the direct reader read them back."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from datakiln.cache.layout import store_fs, zarr_store
from datakiln.cache.string_reader import StringFieldReader
from datakiln.writers.shard_encoder import encode_string_shard

TEXTS = st.lists(st.text(max_size=12), min_size=1, max_size=30)


def _array(root, rows: int, shard_rows: int) -> zarr.Array:
    return zarr.open_group(root, mode="w").create_array(
        "t",
        shape=(rows,),
        dtype=str,
        chunks=(1,),
        shards=(shard_rows,),
        compressors=None,
        fill_value="",
    )


@settings(max_examples=30, deadline=None)
@given(texts=TEXTS, shard_rows=st.sampled_from([1, 4, 8]))
def test_bytes_equal_zarr_python(tmp_path_factory, texts, shard_rows):
    root = tmp_path_factory.mktemp("enc")
    array = _array(root, len(texts), shard_rows)
    for start in range(0, len(texts), shard_rows):
        array[start : start + shard_rows] = np.array(
            texts[start : start + shard_rows], dtype=object
        )
    for k, start in enumerate(range(0, len(texts), shard_rows)):
        path = root / "t" / "c" / str(k)
        expected = path.read_bytes() if path.exists() else None
        assert encode_string_shard(texts[start : start + shard_rows], shard_rows) == expected


@pytest.mark.parametrize("where", ["local", "memory"])
def test_zarr_and_the_direct_reader_read_what_we_write(tmp_path, memory_root, where):
    texts = ["héllo", "", "a\nb", "東京 🎉", "x" * 1000, "last"]
    root = str(tmp_path) if where == "local" else memory_root
    fs, path = store_fs(root)
    array = _array(zarr_store(root, read_only=False), 6, 4)
    for k, start in enumerate(range(0, 6, 4)):
        fs.pipe_file(f"{path}/t/c/{k}", encode_string_shard(texts[start : start + 4], 4))
    assert array[:].tolist() == texts
    reader = StringFieldReader(fs, path, "t")
    rows = np.array([5, 0, 1, 3, 3, 4], dtype=np.int64)
    assert reader.read(rows) == [texts[i] for i in rows]
    assert reader.read(np.zeros(0, dtype=np.int64)) == []


def test_too_many_rows_is_an_error():
    with pytest.raises(ValueError, match="do not fit"):
        encode_string_shard(["a"] * 5, 4)
