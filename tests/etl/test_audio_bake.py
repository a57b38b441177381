"""End-to-end audio bakes: formats, rates and channels, bad files, mel against librosa, CLI.

Tolerances: the cached log-mel is stored as float16, whose rounding error is at most half a
unit in the last place, i.e. ``|x| * 2**-11`` (1/64 dB for values of 16 to 32 dB, 1/32 dB up
to 64 dB). On top of that the float32 kernel differs from librosa by at most
``MEL_KERNEL_TOL_DB`` (measured ~0.003 dB). The resampler is checked against
``scipy.signal.resample_poly`` by signal-to-error ratio on in-band content.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import zarr

from datakiln.cache.open import CachedDataset, open_cache
from datakiln.datasets.testing import DatasetTests, assert_same
from datakiln.etl.bake import bake
from datakiln.etl.spec import AudioParams, BakeSpec

MEL_KERNEL_TOL_DB = 0.01
FLOAT16_RELATIVE = 2.0**-11
MIN_SER_DB = 40.0

# name: (sample rate, channels, seconds, subtype)
GOOD = {
    "a_pcm16_16k.wav": (16000, 1, 1.5, "PCM_16"),
    "b_pcm24_44k_stereo.wav": (44100, 2, 0.7, "PCM_24"),
    "c_float_8k.wav": (8000, 1, 1.2, "FLOAT"),
    "d_22k_stereo.flac": (22050, 2, 1.0, "PCM_16"),
    "e_vorbis_16k.ogg": (16000, 1, 0.5, "VORBIS"),
}
BAD = {
    "broken.wav": "decode",
    "empty.wav": "decode",
    "nan.wav": "validate",
    "truncated.wav": "decode",
}


def _signal(rate: int, channels: int, seconds: float, seed: int) -> np.ndarray:
    """In-band tones, a chirp and a little noise, different per channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(rate * seconds)) / rate
    out = []
    for c in range(channels):
        x = 0.3 * np.sin(2 * np.pi * (440 + 100 * c) * t) + 0.2 * np.sin(2 * np.pi * 2500 * t)
        x += 0.2 * np.sin(2 * np.pi * (200 + 1400 * t / seconds) * t)
        x += 0.02 * rng.standard_normal(t.size)
        out.append(x)
    return np.stack(out, axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("audio") / "clips"
    root.mkdir()
    for seed, (name, (rate, channels, seconds, subtype)) in enumerate(GOOD.items()):
        sf.write(root / name, _signal(rate, channels, seconds, seed), rate, subtype=subtype)
    (root / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio")
    (root / "empty.wav").write_bytes(b"")
    nan = _signal(8000, 1, 0.2, 9)
    nan[100] = np.nan
    sf.write(root / "nan.wav", nan, 8000, subtype="FLOAT")
    sf.write(root / "truncated.wav", _signal(16000, 1, 1.0, 7), 16000, subtype="PCM_16")
    data = (root / "truncated.wav").read_bytes()
    (root / "truncated.wav").write_bytes(data[: len(data) // 2])
    (root / "notes.txt").write_text("not audio, not listed")
    return root


@pytest.fixture(scope="module")
def baked(clips):
    spec = BakeSpec(
        sources=(str(clips),),
        output=str(clips.parent / "cache"),
        modality="audio",
        shard_size=4,
        audio=AudioParams(sample_rate=16000, duration=1.0, n_mels=64),
    )
    return spec, bake(spec)


def test_counts_add_up_and_bad_files_are_rejected(baked):
    spec, report = baked
    assert (report.inputs, report.baked, report.rejected) == (9, 5, 4)
    manifest = json.loads((Path(spec.output) / "manifest.json").read_text())
    rejected = pq.read_table(Path(spec.output) / manifest["rejected"]).to_pylist()
    assert {Path(r["uri"]).name: r["stage"] for r in rejected} == BAD
    assert all(r["error_type"] == "AudioDecodeError" and r["message"] for r in rejected)


def test_batches_hold_waveform_mel_and_constants(baked):
    spec, _ = baked
    dataset = open_cache(spec.output)
    batch = dataset.get_batch(indices=[4, 0, 2])
    audio = spec.audio
    assert batch["audio"].dtype == np.float32
    assert batch["audio"].shape == (3, 16000)
    assert batch["mel"].dtype == np.float32
    assert batch["mel"].shape == (3, 64, audio.frames)
    assert batch["sample_rate"].tolist() == [16000] * 3
    assert batch["duration"].dtype == np.float32
    assert batch["duration"].tolist() == [1.0] * 3
    assert batch["indices"].tolist() == [4, 0, 2]
    np.testing.assert_allclose(np.abs(batch["audio"]).max(axis=1), 1.0, rtol=1e-6)  # peak
    fields = dataset.manifest["fields"]
    assert fields["mel"]["dtype"] == "float16"
    assert fields["mel"]["transform"] == {"kind": "cast", "dtype": "float32"}
    assert_same(
        dataset.read_batch(np.arange(5)),
        CachedDataset(spec.output, fast=False).read_batch(np.arange(5)),
    )


def test_metadata_and_duration_statistics(baked):
    spec, _ = baked
    dataset = open_cache(spec.output)
    meta = {Path(m["uri"]).name: m for m in dataset.metadata().to_pylist()}
    assert sorted(meta) == sorted(GOOD)
    for name, (rate, channels, seconds, _) in GOOD.items():
        m = meta[name]
        assert (m["sample_rate"], m["channels"]) == (rate, channels)
        assert m["frames"] == round(rate * seconds)
        assert m["duration_s"] == pytest.approx(seconds)
        assert len(m["content_hash"]) > 8
    assert meta["d_22k_stereo.flac"]["format"] == "FLAC"
    stats = dataset.manifest["stats"]
    assert stats["clips"] == 5
    assert (stats["duration_min_s"], stats["duration_max_s"]) == pytest.approx((0.5, 1.5))
    assert stats["duration_mean_s"] == pytest.approx(np.mean([g[2] for g in GOOD.values()]))
    assert (stats["padded"], stats["trimmed"]) == (2, 2)  # 0.5 s and 0.7 s; 1.2 s and 1.5 s


@pytest.fixture(scope="module")
def baked_float32(clips, baked):
    """The same bake with the waveform stored as float32 instead of int16 PCM."""
    spec = dataclasses.replace(
        baked[0],
        output=str(clips.parent / "cache-f32"),
        audio=dataclasses.replace(baked[0].audio, wave_dtype="float32"),
    )
    return spec, bake(spec)


def test_int16_waveform_is_the_float32_one_quantised(baked, baked_float32):
    pcm, full = open_cache(baked[0].output), open_cache(baked_float32[0].output)
    assert pcm.manifest["fields"]["audio"]["dtype"] == "int16"
    assert pcm.manifest["fields"]["audio"]["transform"]["kind"] == "affine"
    assert full.manifest["fields"]["audio"]["transform"] is None
    a, b = pcm.read_batch(np.arange(5)), full.read_batch(np.arange(5))
    # half a PCM step, plus float32 rounding of the scale
    np.testing.assert_allclose(a["audio"], b["audio"], rtol=0, atol=0.5 / 32767 + 1e-7)
    np.testing.assert_array_equal(a["mel"], b["mel"])  # the mel never sees the quantisation
    assert pcm.manifest["stats"]["clipped"] == 0  # peak-normalised clips stay in [-1, 1]
    stored = zarr.open_array(f"{baked[0].output}/{pcm.manifest['fields']['audio']['path']}")
    assert stored.dtype == np.int16
    peaks = np.abs(stored[:].astype(np.int32)).max(axis=1)
    assert sorted(peaks[peaks > 0].tolist()) == [32767] * 5  # rows past a shard's clips: fill


def test_mel_matches_librosa_on_the_cached_waveform(baked_float32):
    import librosa

    spec, _ = baked_float32
    audio = spec.audio
    dataset = open_cache(spec.output)
    batch = dataset.read_batch(np.arange(len(dataset)))
    worst = 0.0
    for wave, mel in zip(batch["audio"], batch["mel"], strict=True):
        power = librosa.feature.melspectrogram(
            y=wave,
            sr=audio.sample_rate,
            n_fft=audio.n_fft,
            hop_length=audio.hop_length,
            n_mels=audio.n_mels,
            fmin=audio.fmin,
            fmax=audio.fmax,
            htk=False,
            norm="slaney",
            center=True,
            pad_mode="constant",
            power=2.0,
        )
        reference = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=audio.top_db)
        excess = np.abs(mel - reference) - FLOAT16_RELATIVE * np.abs(reference)
        assert excess.max() <= MEL_KERNEL_TOL_DB, f"{excess.max():.4f} dB past float16 rounding"
        worst = max(worst, float(np.abs(mel - reference).max()))
    assert worst < 0.1


@pytest.mark.parametrize("name", ["b_pcm24_44k_stereo.wav", "c_float_8k.wav"])
def test_resampling_matches_scipy(baked, clips, name):
    from scipy.signal import resample_poly

    spec, _ = baked
    dataset = open_cache(spec.output)
    row = [Path(m["uri"]).name for m in dataset.metadata().to_pylist()].index(name)
    cached = dataset[row]["audio"]
    source, rate = sf.read(clips / name, dtype="float32", always_2d=True)
    reference = resample_poly(source.mean(axis=1), 16000, rate)[:16000]
    n = len(reference)
    assert np.all(cached[n:] == 0)  # padded with zeros past the clip
    scale = np.dot(cached[:n], reference) / np.dot(reference, reference)  # peak normalisation
    error = cached[:n] - scale * reference
    ser = 10 * np.log10(np.sum(cached[:n] ** 2) / np.sum(error**2))
    assert ser > MIN_SER_DB, f"signal-to-error {ser:.1f} dB"


def test_unnormalised_float32_mel(clips, tmp_path):
    spec = BakeSpec(
        sources=(str(clips / "a_pcm16_16k.wav"),),
        output=str(tmp_path / "c"),
        modality="audio",
        audio={
            "duration": 0.5,
            "normalize": False,
            "mel_dtype": "float32",
            "wave_dtype": "float32",
            "n_mels": 32,
            "align": "center",
        },
    )
    assert bake(spec).baked == 1
    dataset = open_cache(spec.output)
    assert dataset.manifest["fields"]["mel"]["transform"] is None
    source, _ = sf.read(clips / "a_pcm16_16k.wav", dtype="float32")
    start = (len(source) - 8000) // 2  # centre: the middle half second, unscaled
    np.testing.assert_allclose(
        dataset[0]["audio"][1000:7000], source[start + 1000 : start + 7000], atol=1e-5
    )


def test_int16_storage_clips_and_counts_unnormalised_overloads(tmp_path):
    loud = _signal(16000, 1, 1.0, 3) * 3.0  # float WAV peaking near 2.3: past int16's range
    sf.write(tmp_path / "loud.wav", loud, 16000, subtype="FLOAT")
    sf.write(tmp_path / "quiet.wav", loud / 4, 16000, subtype="FLOAT")
    spec = BakeSpec(
        sources=(str(tmp_path / "*.wav"),),
        output=str(tmp_path / "c"),
        modality="audio",
        audio={"normalize": False},
    )
    assert bake(spec).baked == 2
    dataset = open_cache(spec.output)
    assert dataset.manifest["stats"]["clipped"] == 1
    inspect = _run("inspect", spec.output, cwd=tmp_path)
    assert "1 clipped to int16's range" in inspect.stdout, inspect.stderr
    rows = {Path(m["uri"]).name: i for i, m in enumerate(dataset.metadata().to_pylist())}
    stored = dataset[rows["loud.wav"]]["audio"]
    np.testing.assert_allclose(stored, np.clip(loud[:, 0], -1, 1), atol=0.5 / 32767 + 1e-6)
    quiet = dataset[rows["quiet.wav"]]["audio"]
    np.testing.assert_allclose(quiet, loud[:, 0] / 4, atol=0.5 / 32767 + 1e-6)


class TestAudioCacheIsADataset(DatasetTests):
    @pytest.fixture
    def dataset(self, baked):
        return open_cache(baked[0].output, rngs=0)


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datakiln", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_cli_bakes_inspects_and_previews_audio(clips, tmp_path):
    result = _run(
        "bake",
        str(clips),
        "--modality",
        "audio",
        "--out",
        "cache",
        "--sample-rate",
        "8000",
        "--duration",
        "0.5",
        "--n-mels",
        "40",
        "--wave-dtype",
        "float16",
        "-q",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "inputs 9 = baked 5 + rejected 4" in result.stdout
    inspect = _run("inspect", "cache", cwd=tmp_path)
    assert inspect.returncode == 0, inspect.stderr
    assert "clip durations: min 0.500 s" in inspect.stdout
    assert "float16(4000,) (read as float32)" in inspect.stdout  # --wave-dtype
    assert "float16(40, 8) (read as float32)" in inspect.stdout
    info = json.loads(_run("inspect", "cache", "--json", cwd=tmp_path).stdout)
    assert info["durations"]["trimmed"] == 4
    assert info["featurizer"]["version"] >= 1
    preview = _run("preview", "cache", "-o", "a.png", cwd=tmp_path)
    assert preview.returncode == 0, preview.stderr
    assert (tmp_path / "a.png").stat().st_size > 1000
    # the modality also follows from a glob's file ending
    glob = _run(
        "bake", str(clips / "*.flac"), "--out", "flac", "--duration", "0.25", "-q", cwd=tmp_path
    )
    assert glob.returncode == 0, glob.stderr
    assert "inputs 1 = baked 1 + rejected 0" in glob.stdout
