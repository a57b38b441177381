"""Synthetic audio and multi-modal datasets."""

from __future__ import annotations

import numpy as np
import pytest

import datakiln.datasets as dk
from datakiln.datasets.testing import DatasetTests
from datakiln.errors import SpecError

SHORT_AUDIO = dk.AudioModalityConfig(sample_rate=8000, duration=0.25)


class TestSyntheticAudioConformance(DatasetTests):
    @pytest.fixture
    def dataset(self) -> dk.BaseDataset:
        return dk.SyntheticAudioDataset(SHORT_AUDIO, 70, rngs=1)


class TestMultiModalConformance(DatasetTests):
    @pytest.fixture
    def dataset(self) -> dk.BaseDataset:
        return dk.create_synthetic_multi_modal_dataset(
            num_samples=50,
            image_shape=(8, 8, 3),
            text_vocab_size=100,
            text_sequence_length=10,
            audio_sample_rate=1000,
            audio_duration=0.1,
            rngs=1,
        )


class TestPairedConformance(DatasetTests):
    @pytest.fixture
    def dataset(self) -> dk.BaseDataset:
        return dk.MultiModalPairedDataset(
            pairs=[("image", "text")],
            data={
                "image": np.random.default_rng(0).random((12, 4, 4, 3)),
                "text": np.arange(12 * 5).reshape(12, 5),
            },
            alignments=np.linspace(0, 1, 12),
        )


def _zero_crossing_hz(wave: np.ndarray, rate: int) -> float:
    crossings = np.count_nonzero(np.diff(np.signbit(wave)))
    return crossings / 2 / (len(wave) / rate)


def test_audio_types_cycle_and_chirp_sweeps_200_to_800_hz() -> None:
    config = dk.AudioModalityConfig(sample_rate=16000, duration=1.0)
    data = dk.SyntheticAudioDataset(config, 9, ["sine", "noise", "chirp"], rngs=0)
    batch = data.get_batch(indices=np.arange(9))
    assert batch["audio_type"] == ["sine", "noise", "chirp"] * 3
    assert batch["audio"].shape == (9, 16000)
    assert batch["audio"].dtype == np.float32
    np.testing.assert_allclose(np.abs(batch["audio"]).max(axis=1), 1.0, rtol=1e-6)
    chirp = batch["audio"][2]
    assert _zero_crossing_hz(chirp[:800], 16000) == pytest.approx(207.5, abs=25)
    assert _zero_crossing_hz(chirp[-800:], 16000) == pytest.approx(792.5, abs=25)
    sine = batch["audio"][0]
    assert 190 < _zero_crossing_hz(sine, 16000) < 810
    assert np.abs(batch["audio"][1].mean()) < 0.05
    assert batch["sample_rate"].tolist() == [16000] * 9
    np.testing.assert_array_equal(batch["duration"], np.ones(9, np.float32))


def test_audio_collate_fn_and_factory() -> None:
    data = dk.create_audio_dataset("synthetic", SHORT_AUDIO, n_samples=10, audio_types=["noise"])
    batch = data.collate_fn([data[0], data[5]])
    assert batch["audio"].shape == (2, 2000)
    assert batch["audio_type"] == ["noise", "noise"]
    np.testing.assert_array_equal(batch["indices"], [0, 5])
    raw = dk.SyntheticAudioDataset(
        dk.AudioModalityConfig(sample_rate=8000, duration=0.25, normalize=False), 3
    )
    assert np.abs(raw[0]["audio"]).max() <= 1.0
    with pytest.raises(SpecError, match="audio_types"):
        dk.SyntheticAudioDataset(SHORT_AUDIO, 3, ["square"])
    with pytest.raises(SpecError, match="dataset_type"):
        dk.create_audio_dataset("speech", SHORT_AUDIO)


def _mm(strength: float) -> dk.MultiModalDataset:
    return dk.create_synthetic_multi_modal_dataset(
        num_samples=1000,
        alignment_strength=strength,
        image_shape=(8, 8, 3),
        text_vocab_size=100,
        text_sequence_length=10,
        audio_sample_rate=1000,
        audio_duration=0.1,
        rngs=4,
    )


def test_alignment_strength_sets_how_much_the_latent_decides() -> None:
    correlations = {}
    for strength in (0.0, 0.8, 1.0):
        data = _mm(strength)
        batch = data.get_batch(indices=np.arange(64))
        decoded = data.decode(batch["latent"])
        assert batch["alignment_score"].tolist() == pytest.approx([strength] * 64)
        correlations[strength] = {
            m: np.corrcoef(batch[m].ravel().astype(float), decoded[m].ravel().astype(float))[0, 1]
            for m in ("image", "text", "audio")
        }
    for m in ("image", "text"):
        assert abs(correlations[0.0][m]) < 0.2
        assert 0.5 < correlations[0.8][m] < 0.95
        assert correlations[1.0][m] == pytest.approx(1.0)


def test_multi_modal_values_and_subsets_of_modalities() -> None:
    batch = _mm(0.5).get_batch(indices=np.arange(32))
    assert list(batch) == ["image", "text", "audio", "alignment_score", "latent", "indices"]
    assert batch["image"].min() > 0
    assert batch["image"].max() < 1
    assert batch["text"].min() >= 4
    assert batch["text"].max() < 100
    assert np.abs(batch["audio"]).max() == pytest.approx(1.0)
    only = dk.MultiModalDataset(["text"], 10, 0.5, text_vocab_size=50, text_sequence_length=4)
    assert set(only[0]) == {"text", "alignment_score", "latent", "index"}
    with pytest.raises(SpecError, match="modalities"):
        dk.MultiModalDataset(["video"], 10)
    with pytest.raises(SpecError, match="alignment_strength"):
        dk.MultiModalDataset(["text"], 10, 1.5)


def test_paired_dataset_checks_its_inputs() -> None:
    data = {"image": np.zeros((3, 2, 2, 1)), "text": np.zeros((3, 4), np.int32)}
    paired = dk.MultiModalPairedDataset([("image", "text")], data)
    assert paired[2]["alignment_scores"] == 1.0
    pair = paired.pair_batch(("image", "text"), [0, 2])
    assert set(pair) == {"image", "text", "alignment_scores", "indices"}
    with pytest.raises(SpecError, match="pair"):
        paired.pair_batch(("text", "image"), [0])
    with pytest.raises(SpecError, match="missing"):
        dk.MultiModalPairedDataset([("image", "audio")], data)
    with pytest.raises(SpecError, match="row count"):
        dk.MultiModalPairedDataset([("image", "text")], {**data, "text": np.zeros((4, 4))})
    with pytest.raises(SpecError, match="alignments"):
        dk.MultiModalPairedDataset([("image", "text")], data, alignments=np.ones(2))
