"""Tests of the audio reader: formats libsndfile decodes, and inputs it must reject."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from datakiln.errors import DatakilnError
from datakiln.readers.audio import (
    AudioDecodeError,
    AudioInfo,
    _plain_pcm16_wav,
    decode_audio,
    decode_audio_native,
)

RATE = 16000


def _tone(frames: int = 4000, channels: int = 1) -> np.ndarray:
    t = np.arange(frames) / RATE
    cols = [0.5 * np.sin(2 * np.pi * 440 * (c + 1) * t) for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def _encode(samples: np.ndarray, fmt: str, subtype: str, rate: int = RATE) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "subtype", "atol"),
    [
        ("WAV", "PCM_U8", 1e-2),
        ("WAV", "PCM_16", 1e-4),
        ("WAV", "PCM_24", 1e-6),
        ("WAV", "PCM_32", 1e-7),
        ("WAV", "FLOAT", 0.0),
        ("WAV", "DOUBLE", 0.0),
        ("FLAC", "PCM_16", 1e-4),
        ("FLAC", "PCM_24", 1e-6),
    ],
)
def test_lossless_formats_decode_to_float32(fmt, subtype, atol):
    samples = _tone(channels=2)
    decoded, rate, info = decode_audio(_encode(samples, fmt, subtype))
    assert decoded.dtype == np.float32
    assert decoded.flags.c_contiguous
    assert decoded.shape == samples.shape
    assert rate == RATE
    assert info == AudioInfo(sample_rate=RATE, channels=2, frames=4000, format=fmt, subtype=subtype)
    assert info.duration_s == pytest.approx(0.25)
    np.testing.assert_allclose(decoded, samples, atol=atol)
    # integer PCM is read as integers and scaled in numpy: exactly libsndfile's float values
    reference, _ = soundfile.read(io.BytesIO(_encode(samples, fmt, subtype)), dtype="float32")
    np.testing.assert_array_equal(decoded, reference)


@pytest.mark.parametrize("subtype", ["PCM_S8", "PCM_16", "PCM_24", "PCM_32"])
def test_integer_pcm_extremes_match_libsndfile(subtype):
    # full-scale and near-zero codes, where a wrong scale or rounding would show
    rng = np.random.default_rng(1)
    samples = np.concatenate([[-1.0, 1.0 - 2.0**-31, 0.0, 2.0**-31], rng.uniform(-1, 1, 996)])
    data = _encode(samples.astype(np.float64)[:, None], "AIFF", subtype)
    decoded, _, _ = decode_audio(data)
    reference, _ = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    np.testing.assert_array_equal(decoded, reference)


def test_ogg_vorbis_and_file_objects():
    samples = _tone(8000)
    data = _encode(samples, "OGG", "VORBIS", rate=22050)
    decoded, rate, info = decode_audio(io.BytesIO(data))
    assert (rate, info.format, info.subtype, decoded.shape) == (22050, "OGG", "VORBIS", (8000, 1))
    # Lossy: close in energy, not sample for sample.
    assert np.sqrt(np.mean((decoded - samples) ** 2)) < 0.05


def _wav_with_nan() -> bytes:
    samples = _tone(100)
    samples[50, 0] = np.nan
    return _encode(samples, "WAV", "FLOAT")


WAV16 = _encode(_tone(4000), "WAV", "PCM_16")


@pytest.mark.parametrize(
    ("data", "stage", "match"),
    [
        (b"", "decode", "empty input"),
        (b"this is not audio at all, only text" * 10, "decode", "not decodable"),
        (WAV16[:30], "decode", "not decodable"),  # header cut before the data chunk
        (WAV16[: len(WAV16) // 2], "decode", "truncated WAV"),
        (WAV16[:44], "decode", "truncated WAV"),  # header only
        (_encode(np.zeros((0, 1), np.float32), "WAV", "PCM_16"), "validate", "no audio frames"),
        (_wav_with_nan(), "validate", "NaN or infinite"),
        (_encode(_tone(), "FLAC", "PCM_16")[:-40], "decode", "not decodable"),
    ],
)
def test_bad_inputs_raise_with_stage(data, stage, match):
    with pytest.raises(AudioDecodeError, match=match) as info:
        decode_audio(data, uri="mem://clip")
    assert info.value.stage == stage
    assert info.value.uri == "mem://clip"
    assert "mem://clip" in str(info.value)
    assert isinstance(info.value, DatakilnError)
    assert isinstance(info.value, ValueError)


def test_riff_chunks_before_data_are_skipped():
    # A LIST chunk before "data" must not confuse the truncation check.
    fmt_chunk = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, RATE, RATE * 2, 2, 16)
    list_chunk = b"LIST" + struct.pack("<I", 5) + b"abcde\x00"  # odd size, padded
    body = (_tone(100)[:, 0] * 32767).astype("<i2").tobytes()
    data_chunk = b"data" + struct.pack("<I", len(body)) + body
    riff = b"WAVE" + fmt_chunk + list_chunk + data_chunk
    wav = b"RIFF" + struct.pack("<I", len(riff)) + riff
    _decoded, _, info = decode_audio(wav)
    assert info.frames == 100
    with pytest.raises(AudioDecodeError, match="truncated"):
        decode_audio(wav[:-10])


@settings(max_examples=40, deadline=None)
@given(
    channels=st.integers(1, 6),
    frames=st.integers(1, 3000),
    rate=st.sampled_from([8000, 16000, 22050, 44100, 48000]),
    container=st.sampled_from(["WAV", "WAVEX"]),
    seed=st.integers(0, 2**16),
)
def test_pcm16_wav_read_directly_equals_libsndfile(channels, frames, rate, container, seed):
    samples = np.random.default_rng(seed).uniform(-1, 1, (frames, channels))
    data = _encode(samples, container, "PCM_16", rate)
    assert _plain_pcm16_wav(data) is not None  # the direct path, not libsndfile
    decoded, got_rate, info = decode_audio(data)
    with soundfile.SoundFile(io.BytesIO(data)) as f:
        reference = f.read(dtype="float32", always_2d=True)
        expected = AudioInfo(rate, f.channels, f.frames, f.format, f.subtype)
    assert decoded.dtype == np.float32
    assert decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, reference)
    assert (got_rate, info) == (rate, expected)


def test_pcm16_wav_with_other_chunks_and_odd_sizes():
    # a LIST chunk of odd size (padded to even) before the data chunk, and one after it
    body = _encode(_tone(101, 2), "WAV", "PCM_16")
    fmt_end = 12 + 8 + int.from_bytes(body[16:20], "little")
    extra = b"LIST" + (5).to_bytes(4, "little") + b"abcde\x00"
    data = body[:fmt_end] + extra + body[fmt_end:] + b"junk" + (2).to_bytes(4, "little") + b"zz"
    data = data[:4] + (len(data) - 8).to_bytes(4, "little") + data[8:]
    decoded, _, info = decode_audio(data)
    reference, _ = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    np.testing.assert_array_equal(decoded, reference)
    assert info.frames == 101


@pytest.mark.parametrize(
    ("fmt", "subtype"), [("WAV", "PCM_24"), ("WAV", "FLOAT"), ("WAV", "PCM_U8"), ("FLAC", "PCM_16")]
)
def test_other_encodings_go_through_libsndfile(fmt, subtype):
    assert _plain_pcm16_wav(_encode(_tone(), fmt, subtype)) is None


def test_truncated_pcm16_wav_is_still_rejected():
    data = _encode(_tone(4000), "WAV", "PCM_16")
    assert _plain_pcm16_wav(data[:-100]) is None
    with pytest.raises(AudioDecodeError, match="truncated") as err:
        decode_audio(data[:-100])
    assert err.value.stage == "decode"


def test_native_decode_keeps_pcm16_wav_as_integers():
    data = _encode(_tone(500, 2), "WAV", "PCM_16")
    pcm, rate, info = decode_audio_native(data)
    assert pcm.dtype == np.int16
    assert (rate, info) == decode_audio(data)[1:]
    np.testing.assert_array_equal(pcm / np.float32(32768), decode_audio(data)[0])
    flac = _encode(_tone(500, 2), "FLAC", "PCM_16")
    assert decode_audio_native(flac)[0].dtype == np.float32  # everything else: decode_audio
