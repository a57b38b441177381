"""Huge inputs stay within a bounded RSS: a 3-hour FLAC and WAV cut to 2-second clips (from
the start or the middle), as files of an audio bake or named by a table of records, and a
108-megapixel JPEG accepted with a raised ``max_pixels`` (drafted, not decoded whole).

Each bake runs in a fresh process, after a bake of a small input of the same kind in that
process; the process's peak RSS (``ru_maxrss``) after each is compared. Decoding the huge
inputs whole would add what the comments say; the bounds leave room for allocator noise.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

MB = 2**20
RATE = 8000
HOURS = 3

PROBE = """
import json, resource, sys
from datakiln.etl.bake import bake
from datakiln.etl.spec import AudioParams, BakeSpec, ImageParams

kind, small, huge, out, align = sys.argv[1:6]
def spec(src, name):
    if kind.startswith("records"):  # a TSV naming the file, or a tar holding it
        clip = {"modality": "audio", "column": "path", "sample_rate": 8000, "duration": 2.0,
                "n_mels": 32, "align": align}
        container = f"{out}/{name}.tsv"
        if kind == "records-tar":
            import tarfile
            container = f"{out}/{name}.tar"
            with tarfile.open(container, "w") as archive:
                archive.add(src, arcname="k0.path")
        else:
            with open(container, "w") as f:
                f.write(f"path\\n{src}\\n")
        return BakeSpec(sources=(container,), output=f"{out}/{name}", scheduler="synchronous",
                        fields={"clip": clip})
    if kind == "audio":
        return BakeSpec(sources=(src,), output=f"{out}/{name}", modality="audio",
                        scheduler="synchronous",
                        audio=AudioParams(sample_rate=8000, duration=2.0, n_mels=32, align=align))
    return BakeSpec(sources=(src,), output=f"{out}/{name}", scheduler="synchronous",
                    image=ImageParams(height=64, width=64, max_pixels=200_000_000))
peaks = []
for name, src in (("small", small), ("huge", huge)):
    report = bake(spec(src, name))
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    assert report.baked == 1, report
print(json.dumps({"small": peaks[0], "huge": peaks[1]}))
"""


def _peaks(kind: str, small: Path, huge: Path, out: Path, align: str = "start") -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-c", PROBE, kind, str(small), str(huge), str(out), align],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _write_audio(path: Path, seconds: int, fmt: str) -> None:
    import soundfile

    minute = np.round(3000 * np.sin(2 * np.pi * 440 * np.arange(RATE * 60) / RATE))
    with soundfile.SoundFile(path, "w", RATE, 1, "PCM_16", format=fmt) as f:
        if seconds < 60:
            f.write(minute[: RATE * seconds].astype(np.int16))
        for _ in range(seconds // 60):
            f.write(minute.astype(np.int16))


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audio")
    files = {}
    for fmt in ("FLAC", "WAV"):
        for name, seconds in (("small", 2), ("huge", HOURS * 3600)):
            (root / f"{name}-{fmt}").mkdir()
            path = root / f"{name}-{fmt}" / f"clip.{fmt.lower()}"
            _write_audio(path, seconds, fmt)
            files[f"{name}-{fmt}"] = path
    return files


@pytest.mark.parametrize("align", ["start", "center"])
def test_three_hour_flac_decodes_only_the_clip(audio_files, tmp_path, align):
    peaks = _peaks("audio", audio_files["small-FLAC"], audio_files["huge-FLAC"], tmp_path, align)
    # decoded whole: 86.4 M frames, int16 then float32, about 520 MB more

    assert peaks["huge"] - peaks["small"] < 120 * MB, peaks


@pytest.mark.parametrize("align", ["start", "center"])
def test_three_hour_wav_is_read_through_not_fetched(audio_files, tmp_path, align):
    peaks = _peaks("audio", audio_files["small-WAV"], audio_files["huge-WAV"], tmp_path, align)
    # fetched whole for its hash: the file's 173 MB more; a float32 decode twice that again
    assert audio_files["huge-WAV"].stat().st_size > 150 * MB
    assert peaks["huge"] - peaks["small"] < 60 * MB, peaks


@pytest.mark.parametrize(
    ("kind", "fmt"), [("records", "WAV"), ("records", "FLAC"), ("records-tar", "WAV")]
)
def test_a_record_of_a_three_hour_file_reads_only_its_clip(audio_files, tmp_path, kind, fmt):
    """Named by a TSV, or a member of a tar shard."""
    align = "center" if fmt == "WAV" else "start"
    small, huge = (audio_files[f"{n}-{fmt}"] for n in ("small", "huge"))
    peaks = _peaks(kind, small, huge, tmp_path, align)
    # fetched whole: the WAV's 173 MB more (the FLAC's ~60 MB); decoded whole, ~520 MB more
    assert peaks["huge"] - peaks["small"] < 60 * MB, peaks


def test_108_megapixel_jpeg_is_accepted_and_drafted(tmp_path):
    from PIL import Image

    for name, size in (("small", (1200, 900)), ("huge", (12000, 9000))):
        (tmp_path / name).mkdir()
        im = Image.new("RGB", size, (120, 30, 200))
        im.paste((10, 200, 40), (0, 0, size[0] // 2, size[1] // 2))
        im.save(tmp_path / name / "photo.jpg", quality=80)
        del im
    peaks = _peaks("image", tmp_path / "small", tmp_path / "huge", tmp_path / "out")
    # decoded whole: 108 M pixels x 3 bytes, about 310 MB more

    assert peaks["huge"] - peaks["small"] < 120 * MB, peaks


def test_decoding_only_the_needed_frames_changes_no_output(tmp_path):
    """A windowed decode gives the clip the kernel gave for the whole file, and the file's
    length; a FLAC cut short is still caught (its last frame is read)."""
    import functools

    from datakiln.etl.kernels.audio import _input_frames, featurize_audio
    from datakiln.readers.audio import AudioDecodeError, decode_audio_native

    path = tmp_path / "minute.flac"
    _write_audio(path, 60, "FLAC")
    data = path.read_bytes()
    needed = functools.partial(_input_frames, sample_rate=16000, duration=2.0)
    whole, rate, info = decode_audio_native(data)
    window, rate_w, info_w = decode_audio_native(data, frames_needed=needed)
    assert info_w == info
    assert info.frames == 60 * RATE
    assert window.shape[0] == needed(RATE) < whole.shape[0]
    params = {"sample_rate": 16000, "duration": 2.0, "n_mels": 32}
    for a, b in zip(
        featurize_audio([(whole, rate)], **params),
        featurize_audio([(window, rate_w)], **params),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(AudioDecodeError, match="truncated"):
        decode_audio_native(data[: len(data) * 2 // 3], frames_needed=needed)


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_a_streamed_decode_equals_the_in_memory_one(tmp_path, fmt):
    """Read through a file object: the same clip and length as from the bytes; a file cut
    short is still caught."""
    import functools

    from datakiln.etl.kernels.audio import _input_frames
    from datakiln.readers.audio import AudioDecodeError, decode_audio_native

    path = tmp_path / f"minute.{fmt.lower()}"
    _write_audio(path, 60, fmt)
    needed = functools.partial(_input_frames, sample_rate=16000, duration=2.0)
    data = path.read_bytes()
    in_memory, rate, info = decode_audio_native(data, frames_needed=needed)
    with path.open("rb") as f:
        streamed, rate_s, info_s = decode_audio_native(f, frames_needed=needed)
    assert (rate_s, info_s) == (rate, info)
    scale = np.float32(2.0**-15) if in_memory.dtype == np.int16 else np.float32(1)
    np.testing.assert_array_equal(streamed, in_memory[: streamed.shape[0]] * scale)
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with cut.open("rb") as f, pytest.raises(AudioDecodeError, match="truncated"):
        decode_audio_native(f, frames_needed=needed)


def test_a_bake_reading_through_large_inputs_stores_what_a_fetching_one_does(tmp_path, monkeypatch):
    """Every input streamed (threshold 0) against none: identical arrays and content hashes,
    and a truncated WAV rejected either way."""
    import pyarrow.parquet as pq

    import datakiln
    from datakiln.etl import bake as bake_module
    from datakiln.etl.modalities import audio as audio_modality
    from datakiln.etl.spec import AudioParams, BakeSpec

    src = tmp_path / "src"
    src.mkdir()
    for k, (seconds, fmt) in enumerate([(3, "WAV"), (1, "FLAC"), (5, "WAV")]):
        _write_audio(src / f"clip{k}.{fmt.lower()}", seconds, fmt)
    whole = (src / "clip2.wav").read_bytes()
    (src / "cut.wav").write_bytes(whole[: len(whole) // 2])

    def run(name: str, threshold: int):
        monkeypatch.setattr(audio_modality, "STREAM_BYTES", threshold)
        spec = BakeSpec(
            sources=(str(src),),
            output=str(tmp_path / name),
            modality="audio",
            scheduler="synchronous",
            audio=AudioParams(sample_rate=8000, duration=2.0, n_mels=32),
        )
        return bake_module.bake(spec)

    fetched, streamed = run("fetched", 1 << 40), run("streamed", 0)
    assert (fetched.baked, fetched.rejected) == (streamed.baked, streamed.rejected) == (3, 1)
    caches = [datakiln.open_cache(str(tmp_path / name)) for name in ("fetched", "streamed")]
    batches = [cache.read_batch(np.arange(len(cache))) for cache in caches]
    assert set(batches[0]) >= {"audio", "mel"}
    for field in ("audio", "mel"):
        np.testing.assert_array_equal(batches[0][field], batches[1][field])
    hashes = [
        sorted(
            pq.read_table(next((tmp_path / name).glob("g-*/meta")))
            .column("content_hash")
            .to_pylist()
        )
        for name in ("fetched", "streamed")
    ]
    assert hashes[0] == hashes[1]


@pytest.mark.parametrize("container", ["tsv", "tar", "tar on s3"])
def test_records_reading_through_large_files_store_what_fetching_ones_do(
    tmp_path, monkeypatch, request, container
):
    """Clips named by a TSV or held by a tar (local, and on S3 through moto), every one read
    through (threshold 0) against none: identical arrays and hashes; a truncated WAV and a
    record without its clip (a missing file, a key with no audio member) rejected either way,
    at the same stages."""
    import tarfile

    import pyarrow.parquet as pq

    import datakiln
    from datakiln.etl import bake as bake_module
    from datakiln.etl.modalities import records
    from datakiln.etl.spec import BakeSpec

    src = tmp_path / "src"
    src.mkdir()
    names = []
    for k, (seconds, fmt) in enumerate([(3, "WAV"), (1, "FLAC"), (5, "WAV")]):
        names.append(f"clip{k}.{fmt.lower()}")
        _write_audio(src / names[-1], seconds, fmt)
    whole = (src / "clip2.wav").read_bytes()
    (src / "cut.wav").write_bytes(whole[: len(whole) // 2])
    if container == "tsv":
        source, column = src / "clips.tsv", "path"
        rows = [*names, "cut.wav", "gone.wav"]
        source.write_text("path\n" + "".join(f"{r}\n" for r in rows))
    else:
        source, column = src / "clips.tar", "wav;flac"
        with tarfile.open(source, "w") as archive:
            for k, name in enumerate([*names, "cut.wav"]):
                archive.add(src / name, arcname=f"k{k}.{name.rsplit('.', 1)[1]}")
            archive.add(src / "clip0.wav", arcname="k4.txt")  # a record with no audio member
    options: dict = {}
    if container == "tar on s3":
        import s3fs

        bucket, options = request.getfixturevalue("s3_options")
        s3fs.S3FileSystem(**options).put_file(str(source), f"{bucket}/clips.tar")
        source = f"{bucket}/clips.tar"

    def run(name: str, threshold: int):
        monkeypatch.setattr(records, "STREAM_BYTES", threshold)
        clip = {"modality": "audio", "column": column, "sample_rate": 8000, "duration": 2.0}
        spec = BakeSpec(
            sources=(str(source),),
            output=str(tmp_path / name),
            scheduler="synchronous",
            fields={"clip": {**clip, "n_mels": 32}},
            storage_options=options,
        )
        return bake_module.bake(spec)

    fetched, streamed = run("fetched", 1 << 40), run("streamed", 0)
    assert (fetched.baked, fetched.rejected) == (streamed.baked, streamed.rejected) == (3, 2)
    assert fetched.bytes_in == streamed.bytes_in
    caches = [datakiln.open_cache(str(tmp_path / name)) for name in ("fetched", "streamed")]
    batches = [cache.read_batch(np.arange(len(cache))) for cache in caches]
    for field in ("clip", "clip_mel"):
        np.testing.assert_array_equal(batches[0][field], batches[1][field])
    metas = [cache.metadata().to_pydict() for cache in caches]
    assert metas[0]["clip_sha256"] == metas[1]["clip_sha256"]
    assert metas[0]["clip_sha256"][0] == hashlib.sha256((src / names[0]).read_bytes()).hexdigest()
    rejected = []
    for name in ("fetched", "streamed"):
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        table = pq.read_table(tmp_path / name / manifest["rejected"]).to_pylist()
        rejected.append(sorted((r["record"], r["stage"], r["error_type"]) for r in table))
    assert rejected[0] == rejected[1]
    # the cut WAV fails its decode; a missing file fails its fetch, a missing member its parse
    assert [r[1] for r in rejected[0]] == ["decode", "fetch" if container == "tsv" else "parse"]
