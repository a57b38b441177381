"""Tests of the text kernels against a plain-Python reference of the same schemes."""

from __future__ import annotations

import doctest
import sys

import hypothesis.strategies as st
import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from datakiln.errors import SpecError
from datakiln.etl.kernels import text as kt

PARAMS = {"pad_id": 0, "unk_id": 1, "bos_id": 2, "eos_id": 3}


@pytest.fixture(autouse=True)
def _strict_jax():
    # As the project's conftest asks: no implicit dtype or rank promotion in kernels.
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        yield


# -- the independent reference: the scheme exactly as written in the issue -------------------


def fnv1a_32(data: bytes) -> int:
    h = 2166136261
    for byte in data:
        h ^= byte
        h = (h * 16777619) % 2**32
    return h


def _finish(ids: list[int], max_length: int) -> tuple[list[int], int, bool]:
    seq = [PARAMS["bos_id"], *ids, PARAMS["eos_id"]]
    truncated = len(seq) > max_length
    if truncated:
        seq = [*seq[: max_length - 1], PARAMS["eos_id"]]
    return seq + [PARAMS["pad_id"]] * (max_length - len(seq)), len(seq), truncated


def ref_word_hash(text: str, *, vocab_size: int, max_length: int, case_sensitive: bool):
    if not case_sensitive:
        text = text.casefold()
    ids = [fnv1a_32(w.encode("utf-8")) % (vocab_size - 4) + 4 for w in text.split()]
    return _finish(ids, max_length)


def ref_bytes(text: str, *, max_length: int, case_sensitive: bool):
    if not case_sensitive:
        text = text.casefold()
    return _finish([b + 4 for b in text.encode("utf-8")], max_length)


def check_against_reference(texts, *, tokenizer, vocab_size, max_length, case_sensitive):
    tokens, lengths, truncated = kt.tokenize_texts(
        texts,
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        max_length=max_length,
        case_sensitive=case_sensitive,
        **PARAMS,
    )
    assert tokens.shape == (len(texts), max_length)
    assert tokens.dtype == np.int32
    assert lengths.dtype == np.int32
    assert truncated.dtype == bool
    for i, text in enumerate(texts):
        if tokenizer == "word_hash":
            want = ref_word_hash(
                text, vocab_size=vocab_size, max_length=max_length, case_sensitive=case_sensitive
            )
        else:
            want = ref_bytes(text, max_length=max_length, case_sensitive=case_sensitive)
        got = (tokens[i].tolist(), int(lengths[i]), bool(truncated[i]))
        assert got == want, f"text {text!r}"


# Characters that stress the scheme: every kind of Unicode whitespace, emoji (4-byte UTF-8,
# ZWJ sequences, skin tones), CJK, combining marks, characters whose case folding changes
# their length (ß -> ss, ﬃ -> ffi, İ -> i̇), NUL and other controls that are not whitespace.
WHITESPACE = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
TRICKY = [
    *WHITESPACE,
    "\t\t",
    "   ",
    "😀",
    "👩‍👩‍👧",
    "👍🏽",
    "漢",
    "字",
    "日本語",
    "e\u0301",
    "\u0301",
    "\u200b",  # zero-width space is not whitespace for str.split
    "ß",
    "ẞ",
    "ﬃ",
    "İ",
    "Σ",
    "ς",
    "\x00",
    "\x7f",
    "A",
    "b",
    "Word",
]
TEXT = st.lists(st.one_of(st.sampled_from(TRICKY), st.characters(codec="utf-8")), max_size=40).map(
    "".join
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(TEXT, min_size=1, max_size=12), case_sensitive=st.booleans())
def test_word_hash_matches_reference_on_random_unicode(texts, case_sensitive):
    check_against_reference(
        texts, tokenizer="word_hash", vocab_size=1000, max_length=12, case_sensitive=case_sensitive
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(TEXT, min_size=1, max_size=12), case_sensitive=st.booleans())
def test_bytes_matches_reference_on_random_unicode(texts, case_sensitive):
    check_against_reference(
        texts, tokenizer="byte", vocab_size=260, max_length=12, case_sensitive=case_sensitive
    )


def test_fnv1a_reference_matches_published_vectors():
    # Test vectors of the FNV reference implementation (fnv-0.5 test suite).
    assert fnv1a_32(b"") == 0x811C9DC5
    assert fnv1a_32(b"a") == 0xE40C292C
    assert fnv1a_32(b"foobar") == 0xBF9CF968


def test_word_hash_known_ids():
    # Pinned ids: if these change, every cache baked with word_hash is invalid.
    tokens, lengths, truncated = kt.tokenize_texts(
        ["Hello, WORLD", "straße STRASSE"], vocab_size=10000, max_length=6, **PARAMS
    )
    hello = fnv1a_32(b"hello,") % 9996 + 4
    world = fnv1a_32(b"world") % 9996 + 4
    ss = fnv1a_32(b"strasse") % 9996 + 4
    assert tokens.tolist() == [[2, hello, world, 3, 0, 0], [2, ss, ss, 3, 0, 0]]
    assert lengths.tolist() == [4, 4]
    assert truncated.tolist() == [False, False]


@pytest.mark.parametrize("case_sensitive", [False, True])
def test_ascii_and_unicode_separators_and_long_words(case_sensitive):
    texts = [
        "a\x1cb\x1dc\x1ed\x1fe\x0bf\x0cg\rh\ti\nj k",  # every ASCII whitespace, ASCII text
        "Über\u00a0straße\u3000x\u2028y\x85z",  # non-ASCII whitespace
        "supercalifragilisticexpialidocious " * 3 + "\x00nul\x00 \x07bell",
        "漢字漢字漢字漢字漢字 😀😀😀😀😀 e\u0301e\u0301",
    ]
    check_against_reference(
        texts,
        tokenizer="word_hash",
        vocab_size=1 << 20,
        max_length=16,
        case_sensitive=case_sensitive,
    )


def test_truncation_keeps_eos_and_long_texts_are_exact():
    words = [f"w{i}" for i in range(3000)]
    texts = [" ".join(words), "x" * 5000 + " tail", "short", "", " \t\n "]
    check_against_reference(
        texts, tokenizer="word_hash", vocab_size=5000, max_length=32, case_sensitive=False
    )
    tokens, lengths, truncated = kt.tokenize_texts(texts, vocab_size=5000, max_length=32, **PARAMS)
    assert truncated.tolist() == [True, False, False, False, False]
    assert tokens[0, -1] == PARAMS["eos_id"]
    assert lengths.tolist() == [32, 4, 3, 2, 2]
    assert tokens[3, :3].tolist() == [2, 3, 0]


@pytest.mark.parametrize("tokenizer", ["word_hash", "byte"])
def test_minimal_max_lengths(tokenizer):
    texts = ["a b", ""]
    two = kt.tokenize_texts(texts, tokenizer=tokenizer, vocab_size=300, max_length=2, **PARAMS)
    assert [a.tolist() for a in two] == [[[2, 3], [2, 3]], [2, 2], [True, False]]
    one = kt.tokenize_texts(texts, tokenizer=tokenizer, vocab_size=300, max_length=1, **PARAMS)
    assert [a.tolist() for a in one] == [[[3], [3]], [1, 1], [True, True]]
    for max_length in (1, 2):
        check_against_reference(
            texts, tokenizer=tokenizer, vocab_size=300, max_length=max_length, case_sensitive=False
        )


def test_kernel_on_a_narrow_matrix_is_exact_or_refuses():
    texts = ["aa bb cc dd ee ff gg hh", "averyveryverylongword and more"]
    matrix, lengths = kt.encode_texts(texts, case_sensitive=False, max_bytes=10)
    assert matrix.shape == (2, 10)
    assert matrix.dtype == np.uint8
    assert lengths.tolist() == [23, 30]
    # Row 0: BOS + 2 words + EOS needs 3 word starts inside 10 bytes ("aa bb cc d"): exact.
    tokens, _, truncated = kt.tokenize_word_hash(
        matrix[:1], lengths[:1], vocab_size=50, max_length=4
    )
    want = ref_word_hash(texts[0], vocab_size=50, max_length=4, case_sensitive=False)
    assert np.asarray(tokens)[0].tolist() == want[0]
    assert bool(truncated[0])
    # Row 1: the first word does not end inside the matrix: refuse rather than guess.
    with pytest.raises(ValueError, match="larger max_bytes"):
        kt.tokenize_word_hash(matrix, lengths, vocab_size=50, max_length=4)


def test_encode_texts_folds_case_and_normalises_whitespace():
    matrix, lengths = kt.encode_texts(
        ["  Straße\u3000\tİ\n", "ab"], case_sensitive=False, max_bytes=16
    )
    first = "strasse i̇".encode()
    assert lengths.tolist() == [len(first), 2]
    assert bytes(matrix[0, : len(first)]) == first
    assert not matrix[0, len(first) :].any()
    matrix, lengths = kt.encode_texts(
        ["A\tB"], case_sensitive=True, max_bytes=8, normalize_whitespace=False
    )
    assert bytes(matrix[0, :3]) == b"A\tB"
    assert lengths.tolist() == [3]


def test_token_dtype_is_smallest_unsigned():
    assert kt.token_dtype(256) == np.uint8
    assert kt.token_dtype(257) == np.uint16
    assert kt.token_dtype(10000) == np.uint16
    assert kt.token_dtype(65536) == np.uint16
    assert kt.token_dtype(65537) == np.uint32


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"max_length": 0}, "max_length"),
        ({"vocab_size": 4}, "vocab_size"),
        ({"tokenizer": "byte", "vocab_size": 259}, "vocab_size"),
        ({"pad_id": 300}, "pad_id"),
        ({"bos_id": -1}, "bos_id"),
        ({"tokenizer": "bpe"}, "tokenizer"),
    ],
)
def test_bad_parameters_raise_spec_error(overrides, match):
    kwargs = {"tokenizer": "word_hash", "vocab_size": 300, "max_length": 8, **PARAMS, **overrides}
    with pytest.raises(SpecError, match=match):
        kt.tokenize_texts(["a"], **kwargs)


def test_docstring_examples_run():
    result = doctest.testmod(kt, raise_on_error=False)
    assert result.attempted > 0
    assert result.failed == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(st.text(alphabet=" \t\nab\u00dfc\u3000\U0001f642", max_size=80), max_size=12),
    max_length=st.sampled_from([2, 3, 7, 64]),
)
def test_narrow_tokens_are_the_full_tokens_without_trailing_padding(texts, max_length):
    params = {"vocab_size": 300, "max_length": max_length, "pad_id": 1, "unk_id": 0}
    full, lengths, truncated = kt.tokenize_texts(texts, **params)
    narrow, n_lengths, n_truncated = kt.tokenize_texts_narrow(texts, **params)
    assert narrow.dtype == kt.token_dtype(300)
    assert narrow.shape[1] <= max_length
    np.testing.assert_array_equal(full[:, : narrow.shape[1]], narrow)
    assert (full[:, narrow.shape[1] :] == 1).all()
    np.testing.assert_array_equal(lengths, n_lengths)
    np.testing.assert_array_equal(truncated, n_truncated)


def test_word_bound_covers_every_row():
    texts = ["a b\tc", "", "word", "x  y\x1fz"]
    matrix, lengths = kt._pack([t.encode() for t in texts], 8)
    assert kt._word_bound(matrix, lengths) >= 3
