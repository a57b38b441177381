"""BaseDataset, Rngs and batch helpers: the contract every dataset builds on."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import pytest

import datakiln.datasets as dk
from datakiln.datasets.rngs import as_rngs
from datakiln.datasets.testing import DatasetTests
from datakiln.errors import SpecError


class FakeNnxRngs:
    """Duck-typed like flax.nnx.Rngs(0): a `default` stream only, `in` on stream names, and
    (like nnx) any other attribute name answered with the default stream, `dtype` included."""

    def __init__(self, seed: int) -> None:
        self.key = jax.random.key(seed)
        self.count = 0

    def __contains__(self, name: str) -> bool:
        return name == "default"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.default

    def default(self) -> jax.Array:
        self.count += 1
        return jax.random.fold_in(self.key, self.count)


class TestCountingDatasetConformance(DatasetTests):
    @pytest.fixture
    def dataset(self, counting: Any) -> dk.BaseDataset:
        return counting(37)


class GetItemOnly(dk.BaseDataset):
    """Implements only __getitem__: read_batch comes from collating it."""

    def __len__(self) -> int:
        return 5

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = int(self.check_indices([index])[0])
        return {"x": np.float32(i), "text": f"t{i}", "index": np.int64(i)}


class TestGetItemOnlyConformance(DatasetTests):
    @pytest.fixture
    def dataset(self) -> dk.BaseDataset:
        return GetItemOnly()


def test_rngs_accepts_int_key_nnx_and_none() -> None:
    for rngs in (0, np.int64(0), jax.random.key(0), jax.random.PRNGKey(0), None, dk.Rngs(0)):
        assert isinstance(as_rngs(rngs).randint(3, 10), np.ndarray)
    fake = FakeNnxRngs(0)
    wrapped = as_rngs(fake)
    wrapped.randint(4, 10)
    assert fake.count == 1, "a foreign nnx.Rngs is used (and advanced) as it is"
    assert "default" in wrapped
    assert "sample" not in wrapped
    with pytest.raises(TypeError, match=r"nnx\.Rngs"):
        as_rngs("seed")


def test_rngs_streams_are_reproducible_and_fall_back_to_default() -> None:
    a, b = dk.Rngs(3), dk.Rngs(3)
    assert "sample" in a
    assert "params" not in a
    keys_a = [a.sample(), a.sample(), a.params()]
    keys_b = [b.sample(), b.sample(), b.default()]
    for x, y in zip(keys_a, keys_b, strict=True):
        np.testing.assert_array_equal(jax.random.key_data(x), jax.random.key_data(y))
    assert not np.array_equal(jax.random.key_data(keys_a[0]), jax.random.key_data(keys_a[1]))


def test_get_batch_advances_and_reproduces(counting: Any) -> None:
    a, b = counting(1000, rngs=7), counting(1000, rngs=7)
    first, second = a.get_batch(8)["indices"], a.get_batch(8)["indices"]
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, b.get_batch(8)["indices"])
    np.testing.assert_array_equal(second, b.get_batch(8)["indices"])
    assert not np.array_equal(first, counting(1000, rngs=8).get_batch(8)["indices"])


def test_get_batch_with_a_foreign_rngs_draws_from_it(counting: Any) -> None:
    fake = FakeNnxRngs(1)
    data = counting(100, rngs=fake)
    data.get_batch(4)
    data.get_batch(4)
    assert fake.count == 2


def test_get_batch_argument_errors(counting: Any) -> None:
    data = counting(10)
    with pytest.raises(SpecError, match="batch_size"):
        data.get_batch()
    with pytest.raises(SpecError, match="batch_size"):
        data.get_batch(0)
    with pytest.raises(SpecError, match="3 indices"):
        data.get_batch(2, indices=[1, 2, 3])
    with pytest.raises(IndexError, match="out of range"):
        data.get_batch(indices=[10])
    with pytest.raises(SpecError, match="1-D"):
        data.get_batch(indices=[[1]])
    with pytest.raises(TypeError, match="int"):
        data["1"]  # type: ignore[index]
    np.testing.assert_array_equal(data.get_batch(indices=[-1, 0])["indices"], [9, 0])


def test_seed_style_dataset_iterates_but_refuses_random_access(iter_only: Any) -> None:
    data = iter_only(5)
    assert not data.supports_random_access
    assert not dk.has_random_access(data)
    assert [int(s["index"]) for s in data] == [0, 1, 2, 3, 4]
    assert data.get_batch(3)["values"].shape == (3, 2)
    with pytest.raises(dk.RandomAccessError, match="read_batch"):
        data[0]
    with pytest.raises(dk.RandomAccessError):
        dk.read_indices(data, [0])
    with pytest.raises(TypeError):  # RandomAccessError is a TypeError too
        dk.Loader(data, 2, shuffle=True)


def test_plain_getitem_objects_are_random_access() -> None:
    source = [{"x": np.float32(i), "index": i} for i in range(4)]
    assert dk.has_random_access(source)
    batch = dk.read_indices(source, [3, 1])
    np.testing.assert_array_equal(batch["indices"], [3, 1])
    seen = np.concatenate(
        [b["indices"] for b in dk.Loader(source, 3, num_epochs=1, drop_last=False)]
    )
    np.testing.assert_array_equal(np.sort(seen), np.arange(4))


def test_collate_unbatch_round_trip() -> None:
    samples = [
        {"images": np.full((2, 2), i), "text": f"t{i}", "index": np.int64(i)} for i in range(3)
    ]
    batch = dk.collate(samples)
    assert list(batch) == ["images", "texts", "indices"]
    assert batch["images"].shape == (3, 2, 2)
    assert batch["texts"] == ["t0", "t1", "t2"]
    back = dk.unbatch(batch, 2)
    assert back["text"] == "t2"
    assert back["index"] == 2
    with pytest.raises(SpecError, match="shapes"):
        dk.collate([{"a": np.zeros(2)}, {"a": np.zeros(3)}])
    with pytest.raises(SpecError, match="keys"):
        dk.collate([{"a": 1}, {"b": 1}])
    with pytest.raises(SpecError, match="empty"):
        dk.collate([])


def test_pad_batch_pads_every_entry_and_marks_padding() -> None:
    batch = {
        "images": np.arange(3, dtype=np.float32)[:, None],
        "labels": jax.numpy.arange(3),
        "texts": ["a", "b", "c"],
        "indices": np.arange(3),
        "meta": "kept",
    }
    out = dk.pad_batch(batch, 5)
    assert out["images"][:, 0].tolist() == [0, 1, 2, 2, 2]
    assert out["labels"].tolist() == [0, 1, 2, 2, 2]
    assert out["texts"] == ["a", "b", "c", "c", "c"]
    assert out["mask"].tolist() == [True, True, True, False, False]
    assert out["meta"] == "kept"
    assert len(batch["texts"]) == 3, "the input is not modified"
    assert "mask" not in dk.pad_batch(batch, 3, mask_key=None)
    with pytest.raises(SpecError, match="more than"):
        dk.pad_batch(batch, 2)
    with pytest.raises(SpecError, match="empty"):
        dk.pad_batch({"images": np.zeros((0, 1))}, 2)


def test_take_rows_by_mask_and_index() -> None:
    batch = {"x": np.arange(4), "t": list("abcd"), "indices": np.arange(4)}
    assert dk.take_rows(batch, np.array([True, False, True, False]))["t"] == ["a", "c"]
    assert dk.take_rows(batch, [3])["x"].tolist() == [3]


def test_repr_names_the_class(counting: Any) -> None:
    assert repr(counting(3)) == "CountingDataset(len=3, split='train')"
