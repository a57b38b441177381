"""Tests of the audio kernels against librosa (mel) and soxr (resampling), with tolerances.

Tolerances, measured on this machine and set with margin:
* log-mel vs ``librosa.power_to_db(librosa.feature.melspectrogram(...), ref=1.0)`` on the same
  waveform: max |difference| <= 1e-3 dB (seen: ~1e-5 dB); mel power without log: relative
  1e-4 of the clip's max.
* resampler vs ``soxr.resample(..., "HQ")`` (librosa's default ``soxr_hq``) on linear sine
  sweeps inside 80% of the lower Nyquist: signal-to-error ratio >= 70 dB away from the clip
  edges (first and last 25 ms; seen 82-100 dB) and >= 50 dB over the whole clip (seen 59-66
  dB; the filters differ where the sweep stops abruptly).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import soxr

from datakiln.errors import SpecError
from datakiln.etl.kernels import audio as ka

SR = 16000


@pytest.fixture(autouse=True)
def _strict_jax():
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        yield


def sweep(rate: int, seconds: float, f0: float, f1: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * (f0 * t + 0.5 * (f1 - f0) / seconds * t * t))).astype(
        np.float32
    )


def snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((got - ref) ** 2)))


def noisy_sweep(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = 0.05 * rng.standard_normal(round(SR * seconds)).astype(np.float32)
    return sweep(SR, seconds, 60, 7000) + noise


# -- log-mel ---------------------------------------------------------------------------------

MEL_CASES = [
    {},
    {"n_fft": 512, "hop_length": 160, "n_mels": 40, "fmin": 300.0, "fmax": 6000.0},
    {"mel_scale": "htk", "mel_norm": None, "n_mels": 64},
    {"top_db": None, "amin": 1e-5},
]


@pytest.mark.parametrize("params", MEL_CASES)
def test_log_mel_matches_librosa(params):
    x = np.stack([noisy_sweep(0.7, 0), 0.01 * noisy_sweep(0.7, 1)])  # 11200 samples
    x[1, 6000:] = 0.0  # a quiet clip with trailing silence: exercises amin and top_db
    kernel = jax.jit(functools.partial(ka.log_mel_spectrogram, sample_rate=SR, **params))
    got = np.asarray(kernel(jnp.asarray(x)))
    kw = {
        "n_fft": params.get("n_fft", 1024),
        "hop_length": params.get("hop_length", 512),
        "n_mels": params.get("n_mels", 80),
        "fmin": params.get("fmin", 0.0),
        "fmax": params.get("fmax"),
        "htk": params.get("mel_scale", "slaney") == "htk",
        "norm": params.get("mel_norm", "slaney"),
    }
    for i in range(len(x)):
        power = librosa.feature.melspectrogram(y=x[i], sr=SR, **kw)  # center=True, "constant"
        want = librosa.power_to_db(
            power, ref=1.0, amin=params.get("amin", 1e-10), top_db=params.get("top_db", 80.0)
        )
        assert got[i].shape == want.shape == (kw["n_mels"], 1 + x.shape[1] // kw["hop_length"])
        assert got.dtype == np.float32
        np.testing.assert_allclose(got[i], want, rtol=0, atol=1e-3)


def test_mel_power_without_log_matches_librosa():
    x = noisy_sweep(0.5)
    got = np.asarray(
        jax.jit(functools.partial(ka.log_mel_spectrogram, sample_rate=SR, log=None))(
            jnp.asarray(x[None])
        )
    )[0]
    want = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=1024, hop_length=512, n_mels=80)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * want.max())


@pytest.mark.parametrize(
    ("params", "librosa_kw"),
    [
        ({}, {}),
        ({"mel_scale": "htk", "mel_norm": None, "fmin": 20.0, "fmax": 4000.0}, {"htk": True}),
    ],
)
def test_mel_filterbank_matches_librosa(params, librosa_kw):
    kw = {"fmin": params.get("fmin", 0.0), "fmax": params.get("fmax"), **librosa_kw}
    if "mel_norm" in params:
        kw["norm"] = params["mel_norm"]
    want = librosa.filters.mel(sr=22050, n_fft=2048, n_mels=128, **kw)
    got = ka.mel_filterbank(sample_rate=22050, n_fft=2048, n_mels=128, **params)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)


# -- resampling ------------------------------------------------------------------------------


def _resample(x: np.ndarray, lengths: np.ndarray, orig: int, **kw):
    fn = jax.jit(functools.partial(ka.resample, orig_sr=orig, target_sr=SR, **kw))
    y, new_lengths = fn(jnp.asarray(x), jnp.asarray(lengths, dtype=jnp.int32))
    return np.asarray(y), np.asarray(new_lengths)


@pytest.mark.parametrize("orig", [44100, 22050, 48000, 8000])
def test_resampler_matches_soxr_on_sweeps(orig):
    x = sweep(orig, 1.0, 50, 0.8 * min(orig, SR) / 2)
    y, new_lengths = _resample(x[None], np.array([len(x)]), orig)
    want = soxr.resample(x, orig, SR, "HQ")
    assert new_lengths.tolist() == [SR]
    assert y.shape == (1, SR) == (1, len(want))
    edge = SR // 40
    assert snr_db(want[edge:-edge], y[0, edge:-edge]) >= 70
    assert snr_db(want, y[0]) >= 50


@pytest.mark.parametrize("orig", [44100, 22050, 48000, 8000, 11025])
def test_polyphase_groups_agree_with_the_direct_resampler(orig):
    """Rates with many phases split them into groups with their own windows; rates with few
    treat several outputs as one block. Both must give the per-tap (direct) result."""
    x = sweep(orig, 0.25, 50, 0.4 * min(orig, SR))[None]
    lengths = np.array([x.shape[1]])
    poly, _ = _resample(x, lengths, orig, method="polyphase")
    direct, _ = _resample(x, lengths, orig, method="direct")
    np.testing.assert_allclose(poly, direct, atol=3e-6)


def test_resample_filter_groups_cover_the_phases():
    whole, offset = ka.resample_filter(44100, SR)
    assert (whole.shape[0], offset) == (160, 0)
    low, low_offset = ka.resample_filter(44100, SR, first=0, count=80)
    high, high_offset = ka.resample_filter(44100, SR, first=80, count=80)
    assert (low_offset, high_offset) == (0, 80 * 441 // 160)
    assert low.shape[-1] < whole.shape[-1]  # shorter windows: the point of the groups
    # the same weights, at the taps shifted by the group's offset
    np.testing.assert_array_equal(low[:, :, : low.shape[-1]], whole[:80, :, : low.shape[-1]])
    shifted = whole[80:, :, high_offset : high_offset + high.shape[-1]]
    np.testing.assert_allclose(high, shifted, atol=1e-7)
    with pytest.raises(SpecError, match="not within"):
        ka.resample_filter(44100, SR, first=150, count=20)


def test_direct_and_polyphase_resamplers_agree():
    x = sweep(22050, 0.3, 50, 6000)[None]
    lengths = np.array([x.shape[1]])
    poly, _ = _resample(x, lengths, 22050, method="polyphase")
    direct, _ = _resample(x, lengths, 22050, method="direct")
    np.testing.assert_allclose(poly, direct, atol=2e-6)


def test_resampler_rejects_frequencies_above_the_new_nyquist():
    # A 9 kHz tone cannot exist at 16 kHz: at least 70 dB down (the Kaiser stopband).
    t = np.arange(44100) / 44100
    x = np.sin(2 * np.pi * 9000 * t).astype(np.float32)
    y, _ = _resample(x[None], np.array([44100]), 44100)
    inner = y[0, 800:-800]
    assert 20 * np.log10(np.sqrt(np.mean(inner**2)) / np.sqrt(0.5)) < -70


def test_resampler_ignores_padding_and_zeroes_past_new_length():
    clip = sweep(44100, 0.2, 100, 3000)  # 8820 frames -> ceil(8820 * 160 / 441) = 3200
    padded = np.full((2, 12000), 7.0, dtype=np.float32)  # garbage past the true lengths
    padded[0, :8820] = clip
    padded[1, :100] = clip[:100]
    y, new_lengths = _resample(padded, np.array([8820, 100]), 44100)
    assert new_lengths.tolist() == [3200, 37]  # ceil(100 * 160 / 441) = 37
    alone, _ = _resample(clip[None], np.array([8820]), 44100)
    np.testing.assert_allclose(y[0, :3200], alone[0, :3200], atol=1e-6)
    assert not y[0, 3200:].any()
    assert not y[1, 37:].any()
    assert np.abs(y[1]).max() < 1.0


# -- small steps -----------------------------------------------------------------------------


def test_mix_to_mono_averages_true_channels_only():
    waves = np.zeros((2, 4, 2), dtype=np.float32)
    waves[0, :, 0], waves[0, :, 1] = [1, 2, 3, 4], [3, 2, 1, 0]
    waves[1, :, 0] = [1, -1, 1, -1]  # mono clip padded to two channels
    mono = np.asarray(ka.mix_to_mono(jnp.asarray(waves), jnp.asarray([2, 1], jnp.int32)))
    assert mono.tolist() == [[2, 2, 2, 2], [1, -1, 1, -1]]


def test_fit_length_pads_and_trims_start_and_center():
    x = jnp.asarray(np.arange(1, 11, dtype=np.float32)[None].repeat(2, 0))
    lengths = jnp.asarray([10, 3], jnp.int32)
    start = np.asarray(ka.fit_length(x, lengths, n_samples=6, align="start"))
    assert start.tolist() == [[1, 2, 3, 4, 5, 6], [1, 2, 3, 0, 0, 0]]
    center = np.asarray(ka.fit_length(x, lengths, n_samples=6, align="center"))
    assert center.tolist() == [[3, 4, 5, 6, 7, 8], [0, 1, 2, 3, 0, 0]]
    odd = np.asarray(ka.fit_length(x, jnp.asarray([9, 4], jnp.int32), n_samples=6, align="center"))
    assert odd.tolist() == [[2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 0]]
    longer = np.asarray(ka.fit_length(x, lengths, n_samples=12, align="start"))
    assert longer[0].tolist() == [*range(1, 11), 0, 0]


def test_peak_normalize_scales_to_one_and_leaves_silence():
    x = jnp.asarray([[0.1, -0.4, 0.2], [0.0, 0.0, 0.0], [1e-8, 0.0, 0.0]], jnp.float32)
    y = np.asarray(ka.peak_normalize(x))
    np.testing.assert_allclose(y[0], [0.25, -1.0, 0.5], rtol=1e-6)
    assert not y[1].any()
    assert y[2, 0] == np.float32(1e-8)


# -- the shard kernel ------------------------------------------------------------------------


def test_audio_features_end_to_end_against_references():
    # Two stereo clips at 44.1 kHz, one longer and one shorter than the 0.5 s wanted.
    left, right = sweep(44100, 0.8, 100, 5000), sweep(44100, 0.8, 200, 3000, amp=0.3)
    waves = np.zeros((2, 35280, 2), dtype=np.float32)
    waves[0, :, 0], waves[0, :, 1] = left, right
    waves[1, :8820, 0] = left[:8820]  # 0.2 s mono clip in a stereo batch
    audio, mel = ka.audio_features(
        waves, [35280, 8820], [2, 1], orig_sr=44100, sample_rate=SR, duration=0.5, normalize=True
    )
    audio, mel = np.asarray(audio), np.asarray(mel)
    assert audio.shape == (2, 8000)
    assert mel.shape == (2, 80, 16)
    assert audio.dtype == mel.dtype == np.float32
    mono0 = soxr.resample((left + right) / 2, 44100, SR, "HQ")[:8000]
    edge = SR // 40
    peak0 = np.abs(mono0).max()
    assert snr_db(mono0[edge:-edge] / peak0, audio[0, edge:-edge]) >= 60
    assert np.abs(audio).max(axis=1) == pytest.approx([1.0, 1.0], abs=1e-6)
    assert not audio[1, 3200:].any()  # 0.2 s of signal, then zero padding
    for i in range(2):
        want = librosa.power_to_db(
            librosa.feature.melspectrogram(
                y=audio[i], sr=SR, n_fft=1024, hop_length=512, n_mels=80
            ),
            ref=1.0,
        )
        np.testing.assert_allclose(mel[i], want, rtol=0, atol=1e-3)


def test_featurize_audio_buckets_rates_and_keeps_order():
    clips = [
        (sweep(22050, 0.3, 100, 2000)[:, None], 22050),
        (np.stack([sweep(SR, 0.4, 300, 900), sweep(SR, 0.4, 50, 60)], axis=1), SR),
        (sweep(22050, 0.1, 500, 600), 22050),
    ]
    # numpy integers (as from a decoded header) are fine as rates
    audio, mel = ka.featurize_audio(
        clips, sample_rate=np.int64(SR), duration=0.25, batch_size=2, n_mels=40
    )
    assert audio.shape == (3, 4000)
    assert mel.shape == (3, 40, 8)
    for i, (samples, rate) in enumerate(clips):
        samples = samples if samples.ndim == 2 else samples[:, None]
        a, m = ka.audio_features(
            samples[None], [len(samples)], orig_sr=rate, sample_rate=SR, duration=0.25, n_mels=40
        )
        np.testing.assert_allclose(audio[i], np.asarray(a)[0], atol=1e-6)
        np.testing.assert_allclose(mel[i], np.asarray(m)[0], atol=1e-3)
    # Same rate: no resampling, mono mix is the mean of the two channels.
    want = clips[1][0].mean(axis=1)[:4000]
    np.testing.assert_allclose(audio[1], want, atol=1e-7)


def test_featurize_audio_takes_int16_pcm_and_encodes_its_outputs():
    rng = np.random.default_rng(4)
    pcm = [rng.integers(-32768, 32768, (n, c), dtype=np.int16) for n, c in ((9000, 1), (30000, 2))]
    rates = (SR, 44100)
    as_float = [(p.astype(np.float32) / 32768, r) for p, r in zip(pcm, rates, strict=True)]
    kwargs = {"sample_rate": SR, "duration": 0.5, "normalize": True}
    audio, mel = ka.featurize_audio(as_float, **kwargs)
    same_audio, same_mel = ka.featurize_audio(list(zip(pcm, rates, strict=True)), **kwargs)
    np.testing.assert_array_equal(same_audio, audio)
    np.testing.assert_array_equal(same_mel, mel)
    # outputs encoded inside the kernel, written into caller-provided arrays
    out = (np.zeros((2, 8000), np.int16), np.zeros((2, 80, 16), np.float16))
    peaks = np.zeros(2, np.float32)
    ka.featurize_audio(
        as_float, wave_dtype="int16", mel_dtype="float16", out=out, peaks=peaks, **kwargs
    )
    np.testing.assert_array_equal(out[0], np.round(np.clip(audio, -1, 1) * 32767))
    np.testing.assert_array_equal(out[1], mel.astype(np.float16))
    np.testing.assert_allclose(peaks, 1.0)  # peak-normalised before encoding


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"sample_rate": 0}, "sample_rate"),
        ({"duration": 0.0}, "duration"),
        ({"fmax": 9000.0}, "fmin/fmax"),
        ({"mel_scale": "bark"}, "mel_scale"),
        ({"mel_norm": "l2"}, "mel_norm"),
        ({"log": "ln"}, "log"),
        ({"align": "end"}, "align"),
        ({"top_db": -1.0}, "top_db"),
    ],
)
def test_bad_parameters_raise_spec_error(overrides, match):
    kwargs = {"orig_sr": SR, "sample_rate": SR, "duration": 0.1, **overrides}
    with pytest.raises(SpecError, match=match):
        ka.audio_features(np.zeros((1, 10), np.float32), [10], **kwargs)
