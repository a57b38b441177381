"""Modality configs: frozen, validated, JSON round trips; and the word-hash tokenizer."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import datakiln.datasets as dk
from datakiln.errors import SpecError


def test_image_config_defaults_channels_and_round_trip() -> None:
    config = dk.ImageModalityConfig(
        representation=dk.ImageRepresentation.GRAYSCALE, height=28, width=20, normalize=False
    )
    assert config.channels == 1
    assert config.shape == (28, 20, 1)
    again = dk.ImageModalityConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert hash(again) == hash(config)
    assert dk.ImageModalityConfig(representation="RGBA").channels == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.height = 3  # type: ignore[misc]
    assert dataclasses.replace(config, height=3).height == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"height": 0}, "height"),
        ({"width": 2.5}, "width"),
        ({"representation": "cmyk"}, "representation"),
    ],
)
def test_image_config_rejects_bad_fields(kwargs: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        dk.ImageModalityConfig(**kwargs)


def test_configs_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        dk.ImageModalityConfig(dk.ImageRepresentation.RGB)  # type: ignore[misc]


def test_audio_config() -> None:
    config = dk.AudioModalityConfig(sample_rate=16000, duration=0.5)
    assert config.n_samples == 8000
    assert dk.AudioModalityConfig.from_dict(config.to_dict()) == config
    with pytest.raises(SpecError, match="duration"):
        dk.AudioModalityConfig(duration=0.0)
    with pytest.raises(SpecError, match="no field"):
        dk.AudioModalityConfig.from_dict({"rate": 1})


def test_modality_configuration_freezes_metadata_and_parses_text_params() -> None:
    params = {"vocab_size": 100, "max_length": 8, "case_sensitive": True}
    config = dk.ModalityConfiguration(
        name="text", modality_type="text", metadata={"text_params": params, "tags": ["a"]}
    )
    params["vocab_size"] = 5  # the config keeps its own copy
    assert config.text_params == dk.TextParams(vocab_size=100, max_length=8, case_sensitive=True)
    with pytest.raises(TypeError):
        config.metadata["x"] = 1  # type: ignore[index]
    data = json.loads(json.dumps(config.to_dict()))
    assert data["metadata"]["tags"] == ["a"]
    assert dk.ModalityConfiguration.from_dict(data) == config
    assert isinstance(config, dk.BaseModalityConfig)
    hash(config)


def test_text_params_are_checked_where_they_are_given() -> None:
    with pytest.raises(SpecError, match="vocab_size"):
        dk.ModalityConfiguration(
            name="t", modality_type="text", metadata={"text_params": {"vocab_size": 4}}
        )
    with pytest.raises(SpecError, match="unknown text_params"):
        dk.TextParams.from_config({"text_params": {"vocab": 10}})
    with pytest.raises(SpecError, match="eos_token_id"):
        dk.TextParams(vocab_size=10, eos_token_id=10)


# --- tokenizer ----------------------------------------------------------------------------------


def test_fnv1a_reference_values() -> None:
    # Published 32-bit FNV-1a test vectors.
    assert dk.word_hash("") == 0x811C9DC5
    assert dk.word_hash("a") == 0xE40C292C
    assert dk.word_hash("foobar") == 0xBF9CF968


def test_tokenize_layout_case_and_unicode_whitespace() -> None:
    kw = {"vocab_size": 1000, "max_length": 8}
    tokens, length = dk.word_hash_tokenize("Hello\u3000WORLD\n", **kw)

    def word(w):
        return dk.word_hash(w) % 996 + 4

    assert tokens.dtype == np.int32
    assert tokens.shape == (8,)
    assert tokens.tolist() == [2, word("hello"), word("world"), 3, 0, 0, 0, 0]
    assert length == 4
    cased, _ = dk.word_hash_tokenize("Hello", case_sensitive=True, **kw)
    assert cased[1] == word("Hello") != word("hello")
    folded, _ = dk.word_hash_tokenize("STRASSE", **kw)
    assert folded[1] == word("strasse"), "casefold, not lower"
    assert dk.word_hash_tokenize("", **kw)[0].tolist() == [2, 3, 0, 0, 0, 0, 0, 0]


def test_truncation_keeps_eos_last() -> None:
    tokens, length = dk.word_hash_tokenize("a b c d e f", vocab_size=50, max_length=4)
    assert length == 4
    assert tokens[0] == 2
    assert tokens[-1] == 3
    assert tokens[1:3].tolist() == [dk.word_hash(w) % 46 + 4 for w in "ab"]
    assert dk.word_hash_tokenize("a b", vocab_size=50, max_length=1)[0].tolist() == [3]


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(max_size=40),
    max_length=st.integers(1, 12),
    vocab_size=st.integers(5, 70000),
)
def test_tokenize_properties(text: str, max_length: int, vocab_size: int) -> None:
    tokens, length = dk.word_hash_tokenize(
        text, vocab_size=vocab_size, max_length=max_length, pad_token_id=0
    )
    words = text.casefold().split()
    assert length == min(len(words) + 2, max_length)
    assert tokens[length - 1] == 3
    assert (tokens[length:] == 0).all()
    assert ((tokens[1 : length - 1] >= 4) & (tokens[1 : length - 1] < vocab_size)).all()


def test_token_ids_are_the_same_in_another_process() -> None:
    # The tokenizer module alone (numpy + datakiln.errors), under two other hash seeds: the
    # seed's ids came from Python's salted hash() and changed from process to process.
    src = Path(dk.__file__).parents[2]
    code = (
        "import sys, types;"
        f"pkg = types.ModuleType('datakiln'); pkg.__path__ = [{str(src / 'datakiln')!r}];"
        "sys.modules['datakiln'] = pkg;"
        "from datakiln.datasets.tokenize import word_hash_tokenize as t;"
        "print(t('Zebra crossing ünïcode', vocab_size=10000, max_length=6)[0].tolist())"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    here = dk.word_hash_tokenize("Zebra crossing ünïcode", vocab_size=10000, max_length=6)
    assert runs == {f"{here[0].tolist()}\n"}
