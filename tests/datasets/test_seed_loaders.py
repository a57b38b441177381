"""The seed's loaders, splits, transforms and validation, fixed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import datakiln.datasets as dk
from datakiln.datasets.testing import DatasetTests
from datakiln.errors import SpecError

# --- loaders --------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 90),
    batch_size=st.integers(1, 25),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
    seed=st.integers(0, 3),
)
def test_seed_loaders_cover_each_epoch_once(
    counting: Any, n: int, batch_size: int, drop_last: bool, shuffle: bool, seed: int
) -> None:
    data = counting(n)
    expected = n - n % batch_size if drop_last else n

    simple = [
        b["indices"]
        for b in dk.create_simple_data_loader(data, batch_size, shuffle, drop_last, seed=seed)
    ]
    seen = np.concatenate([np.zeros(0, np.int64), *simple])
    assert len(seen) == len(set(seen.tolist())) == expected

    per_epoch: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for epoch, batch in dk.create_multi_epoch_data_loader(
        data, batch_size, 3, shuffle, drop_last, seed=seed
    ):
        per_epoch[epoch].extend(batch["indices"].tolist())
    for seen_epoch in per_epoch.values():
        assert len(seen_epoch) == len(set(seen_epoch)) == expected
    assert per_epoch[0] == seen.tolist(), "epoch 0 is the simple loader's epoch"
    if shuffle and expected >= 20:
        assert per_epoch[0] != per_epoch[1]

    prefetch = dk.PrefetchDataLoader(
        data, batch_size, shuffle, 2, 2, drop_last=drop_last, seed=seed
    )
    assert [b["indices"].tolist() for b in prefetch] == [b.tolist() for b in simple]
    second = [i for b in prefetch for i in b["indices"].tolist()]
    assert second == per_epoch[1], "each iteration of a PrefetchDataLoader is the next epoch"
    assert len(prefetch) == (n // batch_size if drop_last else -(-n // batch_size))


def test_seed_loader_epochs_are_reproducible(counting: Any) -> None:
    data = counting(64)

    def run():
        return [
            b["indices"].tolist() for _, b in dk.create_multi_epoch_data_loader(data, 16, 2, seed=9)
        ]

    assert run() == run()
    loader = dk.PrefetchDataLoader(data, 16, seed=9)
    loader.set_epoch(1)
    assert [b["indices"].tolist() for b in loader] == run()[4:]


def test_loaders_check_settings_when_called(counting: Any, iter_only: Any) -> None:
    with pytest.raises(SpecError, match="batch_size"):
        dk.create_simple_data_loader(counting(5), 0)
    with pytest.raises(dk.RandomAccessError):
        dk.PrefetchDataLoader(iter_only(5), 2)
    batches = list(dk.create_multi_epoch_data_loader(iter_only(5), 2, 2, shuffle=False))
    assert [(e, b["indices"].tolist()) for e, b in batches] == [
        (0, [0, 1]),
        (0, [2, 3]),
        (0, [4]),
        (1, [0, 1]),
        (1, [2, 3]),
        (1, [4]),
    ]


def test_training_pipeline_normalises_per_image_and_augments() -> None:
    config = dk.ImageModalityConfig(height=32, width=32)
    data = dk.SyntheticImageDataset(config, 100, "gradient", rngs=0)
    plain = list(dk.create_training_pipeline(data, 32, augment=False, seed=1))
    assert len(plain) == 3, "full batches only, as the seed's len // batch_size"
    images = np.asarray(plain[0]["images"])
    np.testing.assert_allclose(images.reshape(32, -1).min(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(images.reshape(32, -1).max(axis=1), 1.0, atol=1e-5)
    augmented = list(dk.create_training_pipeline(data, 32, seed=1))
    assert [b["indices"].tolist() for b in augmented] == [b["indices"].tolist() for b in plain]
    assert not np.array_equal(np.asarray(augmented[0]["images"]), images)
    again = list(dk.create_training_pipeline(data, 32, seed=1))
    np.testing.assert_array_equal(
        np.asarray(again[1]["images"]), np.asarray(augmented[1]["images"])
    )


def test_multi_modal_loader_aligns_rows(counting: Any) -> None:
    class Images(type(counting(1))):  # type: ignore[misc]
        def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
            return {"images": indices * 10, "indices": indices}

    class Texts(type(counting(1))):  # type: ignore[misc]
        def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
            return {"text_tokens": indices * 100, "indices": indices}

    aligned = list(dk.create_multi_modal_loader(Images(40), Texts(40), 8, seed=2))
    assert len(aligned) == 5
    for batch in aligned:
        np.testing.assert_array_equal(batch["images"] * 10, batch["text_tokens"])
    free = list(dk.create_multi_modal_loader(Images(40), Texts(40), 8, align=False, seed=2))
    assert any(not np.array_equal(b["images"] * 10, b["text_tokens"]) for b in free)
    assert sorted(np.concatenate([b["text_tokens"] for b in free]).tolist()) == list(
        range(0, 4000, 100)
    )
    with pytest.raises(SpecError, match="same length"):
        dk.create_multi_modal_loader(Images(40), Texts(41), 8)


def test_multi_modal_loader_over_iterable_only_datasets(iter_only: Any) -> None:
    class Seed(iter_only):  # type: ignore[misc, valid-type]
        def __iter__(self):  # type: ignore[no-untyped-def]
            for sample in super().__iter__():
                yield {**sample, "images": sample["values"], "text_tokens": sample["values"] * 2}

    batches = list(dk.create_multi_modal_loader(Seed(5), Seed(5), 2, shuffle=False))
    assert [b["indices"].tolist() for b in batches] == [[0, 1], [2, 3]]
    np.testing.assert_array_equal(batches[1]["text_tokens"], batches[1]["images"] * 2)
    with pytest.raises(dk.RandomAccessError):
        dk.create_multi_modal_loader(Seed(5), Seed(5), 2)


# --- splits ---------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 200), ratio=st.floats(0, 1), seed=st.integers(0, 100))
def test_ratio_splits_are_disjoint_and_cover(
    counting: Any, n: int, ratio: float, seed: int
) -> None:
    train, val = dk.split_dataset(counting(n), ratio, seed)
    assert len(train) == int(n * ratio)
    assert len(train) + len(val) == n
    assert not set(train.indices.tolist()) & set(val.indices.tolist())
    assert sorted([*train.indices.tolist(), *val.indices.tolist()]) == list(range(n))
    again, _ = dk.split_dataset(counting(n), ratio, seed)
    np.testing.assert_array_equal(again.indices, train.indices)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 300), pct=st.integers(0, 100))
def test_split_strings_are_disjoint_and_cover(counting: Any, n: int, pct: int) -> None:
    head, tail = dk.split_dataset(counting(n), [f"train[:{pct}%]", f"train[{pct}%:]"])
    assert sorted([*head.indices.tolist(), *tail.indices.tolist()]) == list(range(n))
    assert len(head) == (pct * n + 50) // 100
    assert head.split == f"train[:{pct}%]"


def test_split_string_forms(counting: Any) -> None:
    data = counting(100)
    assert dk.split_dataset(data, "train").indices.tolist() == list(range(100))
    assert dk.split_dataset(data, "train[10:13]").indices.tolist() == [10, 11, 12]
    assert dk.split_dataset(data, "train[-2:]").indices.tolist() == [98, 99]
    assert dk.split_dataset(data, "train[-5%:]").indices.tolist() == [95, 96, 97, 98, 99]
    both = dk.split_dataset(data, "train[:2]+train[-1:]")
    assert both.indices.tolist() == [0, 1, 99]
    assert dk.split_dataset(data, "train[50:10]").indices.tolist() == []
    nested = dk.split_dataset(dk.split_dataset(data, "train[50:]"), "train[:10%]")
    assert nested.indices.tolist() == [0, 1, 2, 3, 4]
    assert nested.get_batch(indices=range(5))["names"] == [f"s{i}" for i in range(50, 55)]
    with pytest.raises(SpecError, match="names split 'test'"):
        dk.split_dataset(data, "test[:10%]")
    with pytest.raises(SpecError, match="cannot parse"):
        dk.split_dataset(data, "train[:10%")
    with pytest.raises(SpecError, match="outside"):
        dk.split_dataset(data, "train[:150%]")
    with pytest.raises(SpecError, match="train_ratio"):
        dk.split_dataset(data, 1.5)


def test_subsets_read_the_base_by_index_in_constant_time(counting: Any) -> None:
    base = counting(10_000)
    train, val = dk.split_dataset(base, 0.8, seed=1)
    base.rows_read = 0
    sample = val[5]
    assert base.rows_read == 1, "one row read, not an iteration of the base"
    assert sample["index"] == 5
    assert sample["base_indices"] == val.indices[5]
    assert sample["names"] == f"s{val.indices[5]}"
    batch = train.get_batch(indices=[0, 1])
    np.testing.assert_array_equal(batch["base_indices"], train.indices[:2])
    random_batch = val.get_batch(64)
    assert set(random_batch["base_indices"].tolist()) <= set(val.indices.tolist())
    deep = dk.SubsetDataset(dk.SubsetDataset(base, [5, 6, 7]), [2, 0])
    assert deep.get_batch(indices=[0, 1])["names"] == ["s7", "s5"]
    assert deep.get_batch(indices=[0, 1])["base_indices"].tolist() == [2, 0]


class TestSubsetConformance(DatasetTests):
    @pytest.fixture
    def dataset(self, counting: Any) -> dk.BaseDataset:
        return dk.split_dataset(counting(90), 0.5, seed=0)[1]


def test_subsets_of_iterable_only_datasets_iterate(iter_only: Any) -> None:
    sub = dk.SubsetDataset(iter_only(6), [4, 1])
    assert [int(s["index"]) for s in sub] == [1, 4], "in base order"
    with pytest.raises(dk.RandomAccessError):
        sub[0]


# --- transforms and validation ------------------------------------------------------------------


def _double(batch: dict[str, Any]) -> dict[str, Any]:
    batch["values"] = batch["values"] * 2
    return batch


class TestTransformConformance(DatasetTests):
    @pytest.fixture
    def dataset(self, counting: Any) -> dk.BaseDataset:
        return dk.TransformDataset(None, counting(40), [_double])


def test_transform_dataset(counting: Any, iter_only: Any) -> None:
    base = counting(10)
    data = dk.TransformDataset(None, base, [_double, _double])
    assert data[3]["values"].tolist() == [12.0, 12.0]
    assert base[3]["values"].tolist() == [3.0, 3.0], "the base is untouched"
    assert data.split == "train"
    assert len(data) == 10
    seed_style = dk.TransformDataset(None, iter_only(3), [_double])
    assert [s["values"][0] for s in seed_style] == [0.0, 2.0, 4.0]
    assert seed_style.get_batch(2)["values"].shape == (2, 2)
    with pytest.raises(SpecError, match="callables"):
        dk.TransformDataset(None, base, [3])  # type: ignore[list-item]
    with pytest.raises(SpecError, match="not a dict"):
        dk.TransformDataset(None, base, [lambda b: 1]).get_batch(indices=[0])  # type: ignore[arg-type, return-value]
    loader = dk.Loader(data, 3, num_epochs=1, drop_last=False, shard_index=0, shard_count=1)
    values = np.concatenate([b["values"][:, 0] for b in loader])
    assert sorted(values.tolist()) == [4.0 * i for i in range(10)]


class _Noisy(dk.BaseDataset):
    """Images where every third sample is NaN and every fifth out of range."""

    def __len__(self) -> int:
        return 30

    def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
        images = np.full((len(indices), 2, 2, 1), 0.5, np.float32)
        images[indices % 3 == 0] = np.nan
        images[indices % 5 == 0] = 2.0
        return {"images": images, "texts": [str(i) for i in indices], "indices": indices}


def test_validate_sample_and_batch() -> None:
    good = {"images": np.zeros((32, 32, 3))}
    assert dk.validate_sample(good)
    assert dk.validate_sample(good, shape=(32, 32, 3))
    assert not dk.validate_sample(good, shape=(28, 28, 1))
    assert not dk.validate_sample({"images": np.full((2,), -0.1)})
    assert dk.validate_sample({"images": np.full((2,), -0.1)}, value_range=None)
    assert not dk.validate_sample({"images": np.array([np.nan])}, value_range=None)
    batch = _Noisy().read_batch(np.arange(6))
    assert dk.validate_batch(batch).tolist() == [False, True, True, False, True, False]
    with pytest.raises(SpecError, match="no 'audio'"):
        dk.validate_sample(good, key="audio")


def test_validated_dataset_drops_invalid_rows_everywhere() -> None:
    data = dk.ValidatedDataset(_Noisy())
    batch = data.get_batch(indices=np.arange(10))
    assert batch["indices"].tolist() == [1, 2, 4, 7, 8]
    assert batch["texts"] == ["1", "2", "4", "7", "8"], "every entry, not just images"
    assert [int(s["index"]) for s in data] == [i for i in range(30) if i % 3 and i % 5]
    with pytest.raises(dk.SampleValidationError, match="dropped"):
        data[3]
    strict = dk.ValidatedDataset(_Noisy(), on_invalid="raise")
    with pytest.raises(dk.SampleValidationError, match="sample 3"):
        strict.get_batch(indices=[1, 3])
    seen = np.concatenate(
        [
            b["indices"]
            for b in dk.Loader(data, 7, num_epochs=1, drop_last=False, shard_index=0, shard_count=1)
        ]
    )
    assert sorted(seen.tolist()) == [i for i in range(30) if i % 3 and i % 5]
    shaped = dk.ValidatedDataset(_Noisy(), shape=(3, 3, 1))
    assert shaped.get_batch(indices=[1, 2])["indices"].tolist() == []
    with pytest.raises(SpecError, match="on_invalid"):
        dk.ValidatedDataset(_Noisy(), on_invalid="skip")  # type: ignore[arg-type]
