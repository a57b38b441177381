"""Centre-aligned clips decoded from a window of their source give the whole decode's rows.

``DecodeWindow`` tells the reader which source frames an output clip depends on; the reader
decodes only those and says where they start (``AudioInfo.first_frame``); ``featurize_audio``
is given that span and keeps what the whole source's alignment keeps. Tolerance: the rows
are compared as float32 with ``WAVE_ATOL`` (waveform, full scale 1) and ``MEL_ATOL_DB``
(log-mel). The window starts at a multiple of the resampler's block, so both decodes run the
same filter rows over the same samples; the only freedom left is XLA's summation order for
inputs of different lengths (measured: bit-identical on CPU) and, for lossy formats, the
decoder's state after a seek (MP3: 8.9e-8).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from datakiln.etl.kernels.audio import DecodeWindow, featurize_audio
from datakiln.readers.audio import AudioDecodeError, decode_audio_native

WAVE_ATOL = 1e-6
MEL_ATOL_DB = 1e-3
OUT_SR = 16000


def _source(rate: int, frames: int, channels: int, seed: int) -> np.ndarray:
    """Tones, a chirp and noise under a rising envelope: every window of it is different."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / rate
    ramp = np.linspace(0.2, 1.0, frames)
    cols = [
        ramp
        * (
            0.3 * np.sin(2 * np.pi * (440 + 150 * c) * t)
            + 0.2 * np.sin(2 * np.pi * (100 + 300 * t) * t)
            + 0.05 * rng.standard_normal(frames)
        )
        for c in range(channels)
    ]
    return np.stack(cols, axis=1)


def _encode(x: np.ndarray, rate: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, subtype, format=fmt)
    return buf.getvalue()


# (source rate, source frames, channels, container, subtype): odd and even lengths, mono and
# stereo; 16-bit WAV from bytes takes the reader's own parser, the rest libsndfile's seek.
CASES = [
    (44100, 44100 * 6 + 7, 1, "WAV", "PCM_16"),
    (44100, 44100 * 5 + 10, 2, "FLAC", "PCM_16"),
    (8000, 8000 * 9 + 1, 2, "FLAC", "PCM_24"),
    (8000, 8000 * 7 + 4, 1, "WAV", "PCM_24"),
    (48000, 48000 * 5 + 3, 2, "WAV", "PCM_16"),
    (48000, 48000 * 4 + 6, 1, "FLAC", "PCM_16"),
    (22050, 22050 * 4 + 1, 1, "WAV", "FLOAT"),
]


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("duration", [2.0, 1.03125])  # 32000 and 16500 output samples
def test_centre_windows_give_the_whole_decodes_rows(normalize, duration):
    """All the cases in one featurize call each way (different offsets in one batch), plus a
    short clip that is decoded whole either way."""
    window = DecodeWindow(OUT_SR, duration, "center")
    whole, parts, spans = [], [], []
    for seed, (rate, frames, channels, fmt, subtype) in enumerate(CASES):
        data = _encode(_source(rate, frames, channels, seed), rate, fmt, subtype)
        samples, r, info = decode_audio_native(data)
        part, r_w, info_w = decode_audio_native(data, window=window)
        start, stop = window.frames(rate, frames)
        assert (info.first_frame, info.frames) == (0, frames)
        assert (info_w.first_frame, info_w.frames, r_w) == (start, frames, r)
        assert part.shape == (stop - start, channels)
        assert start > 0
        assert part.shape[0] < 0.6 * frames  # far fewer frames read
        np.testing.assert_array_equal(part, samples[start:stop])
        assert info_w.to_dict() == info.to_dict()  # the metadata is the source's
        whole.append((samples, r))
        parts.append((part, r_w))
        spans.append((info_w.first_frame, info_w.frames))
    short = _encode(_source(44100, 30001, 1, 99), 44100, "WAV", "PCM_16")
    samples, r, info = decode_audio_native(short, window=window)
    assert (info.first_frame, samples.shape[0]) == (0, 30001)
    whole.append((samples, r))
    parts.append((samples, r))
    spans.append((0, info.frames))
    params = {"sample_rate": OUT_SR, "duration": duration, "n_mels": 40, "align": "center"}
    audio, mel = featurize_audio(whole, normalize=normalize, **params)
    audio_w, mel_w = featurize_audio(parts, spans=spans, normalize=normalize, **params)
    assert np.abs(audio).max(axis=1).min() > 0.1  # real signal in every row
    np.testing.assert_allclose(audio_w, audio, rtol=0, atol=WAVE_ATOL)
    np.testing.assert_allclose(mel_w, mel, rtol=0, atol=MEL_ATOL_DB)


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate", "seconds", "seed"),
    [
        ("OGG", "VORBIS", 44100, 8, 11),
        ("MP3", "MPEG_LAYER_III", 44100, 8, 11),
        # windows whose first frames lean on the bit reservoir of frames before them: without
        # the reader's pre-roll they differed from the whole decode's by 0.027 and 0.032
        ("MP3", "MPEG_LAYER_III", 22050, 3, 1),
        ("MP3", "MPEG_LAYER_III", 22050, 3, 2),
        ("OGG", "OPUS", 48000, 5, 11),
    ],
)
def test_lossy_formats_seek_close_enough(fmt, subtype, rate, seconds, seed):
    """Decoders with state are started a few frames before the window (``_PREROLL_FRAMES``)
    and those are dropped: MP3's window then differs from the whole decode's frames by about
    1e-7 (measured 8.9e-8; Vorbis: 0), well inside the tolerance."""
    if subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"this libsndfile does not write {fmt}/{subtype}")
    frames = rate * seconds + 5
    data = _encode(_source(rate, frames, 1, seed), rate, fmt, subtype)
    window = DecodeWindow(OUT_SR, 2.0, "center")
    whole, _, info = decode_audio_native(data)
    part, _, info_w = decode_audio_native(data, window=window)
    start = info_w.first_frame
    assert start > 0
    assert info_w.frames == info.frames
    np.testing.assert_allclose(part, whole[start : start + part.shape[0]], rtol=0, atol=WAVE_ATOL)
    params = {"sample_rate": OUT_SR, "duration": 2.0, "n_mels": 40, "align": "center"}
    audio, mel = featurize_audio([(whole, rate)], **params)
    audio_w, mel_w = featurize_audio([(part, rate)], spans=[(start, info.frames)], **params)
    np.testing.assert_allclose(audio_w, audio, rtol=0, atol=WAVE_ATOL)
    np.testing.assert_allclose(mel_w, mel, rtol=0, atol=MEL_ATOL_DB)


def test_a_window_without_its_span_is_not_the_centre():
    """The span matters: the same samples taken as a whole clip centre differently."""
    rate, frames = 48000, 48000 * 5
    data = _encode(_source(rate, frames, 1, 3), rate, "WAV", "PCM_16")
    window = DecodeWindow(OUT_SR, 2.0, "center")
    whole, _, _ = decode_audio_native(data)
    part, _, info = decode_audio_native(data, window=window)
    params = {"sample_rate": OUT_SR, "duration": 2.0, "n_mels": 40, "align": "center"}
    reference, _ = featurize_audio([(whole, rate)], **params)
    spanned, _ = featurize_audio([(part, rate)], spans=[(info.first_frame, frames)], **params)
    bare, _ = featurize_audio([(part, rate)], **params)
    np.testing.assert_allclose(spanned, reference, rtol=0, atol=WAVE_ATOL)
    assert np.abs(bare - reference).max() > 0.01
    with pytest.raises(ValueError, match="multiple of 3"):
        featurize_audio([(part, rate)], spans=[(info.first_frame + 1, frames)], **params)
    with pytest.raises(ValueError, match="first frame"):
        featurize_audio(
            [(part, rate)], spans=[(info.first_frame, frames)], sample_rate=OUT_SR, duration=2.0
        )


@pytest.mark.parametrize("duration", [2.0, 1.03125])
def test_window_bounds(duration):
    """Starts on a resampler block, covers the filter's reach around the kept outputs, fits
    the fixed time padding of its rate, and is the whole source when the output is not
    shorter than it."""
    from datakiln.etl.kernels.audio import _center_frames, _rates, _window_period

    n_samples = round(duration * OUT_SR)
    window = DecodeWindow(OUT_SR, duration, "center")
    for rate in (8000, 11025, 16000, 22050, 44100, 48000, 96000):
        up, down, _, pad = _rates(rate, OUT_SR)
        period = _window_period(rate, OUT_SR)
        cap = _center_frames(rate, OUT_SR, duration)
        for total in [rate * 60 + k for k in range(7)] + [rate * 3600, 3 * n_samples * down]:
            start, stop = window.frames(rate, total)
            length = -(-total * up // down)
            first = (length - n_samples) // 2
            assert start % period == 0
            assert start <= first * down / up - pad - 1
            assert stop >= (first + n_samples - 1) * down / up + pad + 1
            assert stop - start <= cap
        short = n_samples * down // up
        assert window.frames(rate, short) == (0, short)
        assert short <= cap
        assert window.frames(rate, 100) == (0, 100)
    assert DecodeWindow(OUT_SR, duration).frames(44100, 10**7)[0] == 0  # "start": leading


def test_centre_windows_of_any_source_length_share_one_batch_shape(monkeypatch):
    """The time padding stays bucketed: windows of sources from 1 s to an hour (and short
    clips decoded whole) pad to one frame count per rate, so one compile per rate here."""
    from datakiln.etl.kernels import audio as kernel

    shapes = set()
    real = kernel._audio_kernel

    def spy(*args, **kwargs):
        shapes.add((kwargs["orig_sr"], args[0].shape))
        return real(*args, **kwargs)

    monkeypatch.setattr(kernel, "_audio_kernel", spy)
    window = DecodeWindow(OUT_SR, 2.0, "center")
    clips, spans = [], []
    for rate in (44100, 8000):
        for seconds in (1, 2.5, 3, 7.3, 60, 3600):
            total = round(rate * seconds)
            start, stop = window.frames(rate, total)
            clips.append((np.ones((stop - start, 1), np.float32), rate))
            spans.append((start, total))
    audio, _ = featurize_audio(
        clips, spans=spans, batch_size=4, sample_rate=OUT_SR, duration=2.0, align="center"
    )
    assert sorted(r for r, _ in shapes) == [8000, 44100]
    assert np.count_nonzero(audio[0]) == 16000  # 1 s centred in 2 s
    assert np.count_nonzero(audio[-1]) == 32000


def test_unseekable_sources_are_decoded_whole(monkeypatch):
    rate, frames = 44100, 44100 * 6
    data = _encode(_source(rate, frames, 1, 5), rate, "FLAC", "PCM_16")
    window = DecodeWindow(OUT_SR, 2.0, "center")
    part, _, info = decode_audio_native(data, window=window)
    assert info.first_frame > 0
    monkeypatch.setattr(sf.SoundFile, "seekable", lambda self: False)
    samples, _, info = decode_audio_native(data, window=window)
    assert (info.first_frame, samples.shape[0], info.frames) == (0, frames, frames)
    start = window.frames(rate, frames)[0]
    np.testing.assert_array_equal(samples[start : start + part.shape[0]], part)


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_a_truncated_file_is_caught_by_a_centre_window(tmp_path, fmt):
    """From bytes and read through a file object: the middle is there, the end is not."""
    rate = 8000
    data = _encode(_source(rate, rate * 60, 1, 7), rate, fmt, "PCM_16")
    window = DecodeWindow(OUT_SR, 2.0, "center")
    cut = data[: len(data) * 2 // 3]
    with pytest.raises(AudioDecodeError, match="truncated"):
        decode_audio_native(cut, window=window)
    with pytest.raises(AudioDecodeError, match="truncated"):  # the window itself is missing
        decode_audio_native(data[: len(data) // 5], window=window)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(cut)
    with path.open("rb") as f, pytest.raises(AudioDecodeError, match="truncated"):
        decode_audio_native(f, window=window)
    path.write_bytes(data)
    with path.open("rb") as f:
        streamed, _, info = decode_audio_native(f, window=window)
    in_memory, _, info_m = decode_audio_native(data, window=window)
    assert info == info_m
    assert info.first_frame > 0
    scale = np.float32(2.0**-15) if in_memory.dtype == np.int16 else np.float32(1)
    np.testing.assert_array_equal(streamed, in_memory * scale)


def test_centre_bakes_store_the_whole_decodes_rows(tmp_path, monkeypatch):
    """A centre-aligned bake (inputs fetched, or all read through) against one with windows
    turned off: the same stored rows and metadata; the records field codec likewise."""
    import datakiln
    from datakiln.etl import bake as bake_module
    from datakiln.etl.kernels import audio as kernel
    from datakiln.etl.modalities import audio as audio_modality
    from datakiln.etl.spec import AudioParams, BakeSpec

    src = tmp_path / "src"
    src.mkdir()
    # lossy formats too: their decoders restart after a seek (see the module's tolerance)
    for k, (rate, seconds, channels, fmt, subtype) in enumerate(
        [
            (44100, 5, 2, "WAV", "PCM_16"),
            (8000, 7, 1, "FLAC", "PCM_16"),
            (48000, 1, 1, "WAV", "PCM_16"),
            (22050, 4, 1, "FLAC", "PCM_16"),
            (44100, 6, 2, "OGG", "VORBIS"),
            (48000, 5, 1, "MP3", "MPEG_LAYER_III"),
        ]
    ):
        x = _source(rate, rate * seconds + k, channels, k)
        sf.write(src / f"clip{k}.{fmt.lower()}", x, rate, subtype, format=fmt)
    audio = {"sample_rate": OUT_SR, "duration": 2.0, "n_mels": 32, "align": "center"}
    whole_frames = DecodeWindow.frames

    def run(name: str, threshold: int, windowed: bool, records: bool = False):
        monkeypatch.setattr(audio_modality, "STREAM_BYTES", threshold)
        if not windowed:
            monkeypatch.setattr(kernel.DecodeWindow, "frames", lambda self, sr, total: (0, total))
        else:
            monkeypatch.setattr(kernel.DecodeWindow, "frames", whole_frames)
        out = str(tmp_path / name)
        if records:
            (tmp_path / "list.csv").write_text(
                "path\n" + "".join(f"src/{p.name}\n" for p in sorted(src.iterdir()))
            )
            spec = BakeSpec(
                sources=(str(tmp_path / "list.csv"),),
                output=out,
                scheduler="synchronous",
                fields={"audio": {"modality": "audio", "column": "path", **audio}},
            )
        else:
            spec = BakeSpec(
                sources=(str(src),),
                output=out,
                modality="audio",
                scheduler="synchronous",
                audio=AudioParams(**audio),
            )
        assert bake_module.bake(spec).baked == 6
        cache = datakiln.open_cache(out)
        return cache.read_batch(np.arange(len(cache))), cache.metadata().to_pylist()

    reference, meta = run("whole", 1 << 40, windowed=False)
    for name, threshold in (("fetched", 1 << 40), ("streamed", 0)):
        batch, meta_w = run(name, threshold, windowed=True)
        assert meta_w == meta
        for field in ("audio", "mel"):
            np.testing.assert_allclose(batch[field], reference[field], rtol=0, atol=MEL_ATOL_DB)
    records, _ = run("records-whole", 1 << 40, windowed=False, records=True)
    records_w, _ = run("records", 1 << 40, windowed=True, records=True)
    for field in ("audio", "mel"):
        np.testing.assert_allclose(records_w[field], records[field], rtol=0, atol=MEL_ATOL_DB)
