"""Text datasets: tokens equal the reference tokenizer, patterns are what they claim."""

from __future__ import annotations

import numpy as np
import pytest

import datakiln.datasets as dk
from datakiln.datasets.testing import DatasetTests
from datakiln.datasets.text import PATTERN_TYPES
from datakiln.errors import SpecError

CONFIG = dk.ModalityConfiguration(
    name="text",
    modality_type="text",
    metadata={"text_params": {"vocab_size": 10000, "max_length": 512}},
)
SHORT = dk.ModalityConfiguration(
    name="text",
    modality_type="text",
    metadata={"text_params": {"vocab_size": 500, "max_length": 12}},
)


class TestSyntheticTextConformance(DatasetTests):
    @pytest.fixture
    def dataset(self) -> dk.BaseDataset:
        return dk.SyntheticTextDataset(CONFIG, 80, "random_sentences", rngs=1)


class TestSimpleTextConformance(DatasetTests):
    @pytest.fixture
    def dataset(self) -> dk.BaseDataset:
        return dk.SimpleTextDataset(SHORT, [f"text number {i} of many" for i in range(30)], rngs=1)


@pytest.mark.parametrize("pattern", PATTERN_TYPES)
def test_tokens_equal_the_reference_tokenizer(pattern: str) -> None:
    data = dk.SyntheticTextDataset(SHORT, 1000, pattern, rngs=2)
    batch = data.get_batch(indices=np.arange(64))
    params = data.params.to_dict()
    for row, text in enumerate(batch["texts"]):
        tokens, length = dk.word_hash_tokenize(text, **params)
        np.testing.assert_array_equal(batch["text_tokens"][row], tokens, err_msg=text)
        assert batch["text_lengths"][row] == length
    assert batch["text_tokens"].dtype == np.int32
    # max_length 12 truncates some: those still end with EOS.
    assert (batch["text_tokens"][batch["text_lengths"] == 12, -1] == 3).all()


def _words(pattern: str, n: int = 64) -> list[list[str]]:
    data = dk.SyntheticTextDataset(SHORT, 1000, pattern, rngs=3)
    return [t.split() for t in data.get_batch(indices=np.arange(n))["texts"]]


def test_palindromes_read_the_same_backwards() -> None:
    for words in _words("palindromes"):
        assert words == words[::-1]
        assert 3 <= len(words) <= 16


def test_sequences_are_arithmetic_progressions() -> None:
    for words in _words("sequences"):
        numbers = np.array([int(w) for w in words])
        steps = set(np.diff(numbers).tolist())
        assert len(steps) == 1
        assert 1 <= steps.pop() <= 5
        assert 5 <= len(numbers) <= 20


def test_repeated_phrases_repeat() -> None:
    for words in _words("repeated_phrases"):
        period = next(
            p for p in range(2, 5) if len(words) % p == 0 and words == words[:p] * (len(words) // p)
        )
        assert len(words) // period >= 2


def test_random_sentences_vary() -> None:
    sentences = [" ".join(w) for w in _words("random_sentences")]
    assert len(set(sentences)) == len(sentences)
    assert all(5 <= len(s.split()) <= 15 for s in sentences)


def test_simple_text_dataset_access_and_stats() -> None:
    texts = ["The quick brown fox", "the QUICK fox", "Deep nets learn"]
    data = dk.SimpleTextDataset(SHORT, texts, rngs=0)
    assert data.get_sample_text(1) == "the QUICK fox"
    sample = data[0]
    assert sample["text"] == texts[0]
    assert sample["index"] == 0
    assert sample["text_tokens"].shape == (12,)
    stats = data.get_vocab_stats()
    # bos, eos and the words the, quick, brown, fox, deep, nets, learn (case folded).
    assert stats["unique_tokens"] == 9
    assert stats["vocab_coverage"] == pytest.approx(9 / 500)
    assert stats["total_sequences"] == 3
    assert stats["max_length"] == 12
    assert stats["mean_length"] == pytest.approx((6 + 5 + 5) / 3)
    batch = data.get_batch(32)
    assert batch["text_tokens"].shape == (32, 12)
    assert len(batch["texts"]) == 32


def test_synthetic_stats_and_sample_text() -> None:
    data = dk.SyntheticTextDataset(SHORT, 100, "sequences", rngs=0)
    assert data.get_sample_text(7) == data[7]["text"]
    stats = data.get_vocab_stats()
    assert stats["total_sequences"] == 100
    assert 0 < stats["vocab_coverage"] <= 1


def test_text_errors() -> None:
    with pytest.raises(SpecError, match="pattern_type"):
        dk.SyntheticTextDataset(SHORT, 10, "poems")
    with pytest.raises(SpecError, match="strings"):
        dk.SimpleTextDataset(SHORT, ["ok", 3])  # type: ignore[list-item]
    with pytest.raises(SpecError, match="dataset_type"):
        dk.create_text_dataset("corpus", SHORT)
    assert isinstance(dk.create_text_dataset("simple", SHORT, texts=["a"]), dk.SimpleTextDataset)
