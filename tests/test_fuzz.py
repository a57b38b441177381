"""Mutation fuzzing of the readers' inputs: image bytes, WAV/FLAC headers, text in mixed
encodings, Parquet footers.

Hypothesis mutates valid seed files (flipped and overwritten bytes, cuts, insertions, spliced
headers). The rule checked: no crash (only datakiln's own errors), no hang (a deadline per
example), and in a bake every input accounted for as baked or rejected. CI runs a bounded
number of examples; run longer by hand with ``DATAKILN_FUZZ_EXAMPLES=5000``.
"""

from __future__ import annotations

import io
import os
import uuid

import fsspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datakiln.errors import DatakilnError

EXAMPLES = int(os.environ.get("DATAKILN_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=10_000,  # ms: far above any honest decode of these small inputs
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=os.environ.get("DATAKILN_FUZZ_EXAMPLES") is None,  # CI: the same examples
)


def _image_seeds() -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    seeds = []
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"):
        buf = io.BytesIO()
        pixels.save(buf, fmt)
        seeds.append(buf.getvalue())
    return seeds


def _audio_seeds() -> list[bytes]:
    import soundfile

    tone = (0.3 * np.sin(np.arange(1600) / 5.0)).astype(np.float32)
    seeds = []
    kinds = (("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_16"), ("WAV", "PCM_24"))
    for fmt, subtype in kinds:
        buf = io.BytesIO()
        soundfile.write(buf, tone, 8000, subtype=subtype, format=fmt)
        seeds.append(buf.getvalue())
    return seeds


def _parquet_seed() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"text": ["alpha", "beta gamma", "delta"] * 4}), buf)
    return buf.getvalue()


IMAGE_SEEDS = _image_seeds()
AUDIO_SEEDS = _audio_seeds()
PARQUET_SEED = _parquet_seed()


@st.composite
def mutated(draw, seeds: list[bytes], *, head: int | None = None) -> bytes:
    """A seed with a few mutations, by default anywhere, or within its first ``head`` bytes."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        span = min(len(data), head or len(data)) or 1
        kind = draw(st.sampled_from(["flip", "overwrite", "cut", "insert", "tail"]))
        pos = draw(st.integers(0, span - 1))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos : pos + len(chunk)] = chunk
        elif kind == "cut":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@FUZZ
@given(data=mutated(IMAGE_SEEDS))
def test_image_decoder_never_crashes(data):
    from datakiln.readers.image import ImageDecodeError, decode_image

    try:
        decoded = decode_image(data, representation="rgb", height=8, width=8, fit="pad")
    except ImageDecodeError as err:
        stage = err.stage
    else:
        stage = "decoded"
        assert decoded.pixels.dtype == np.uint8
        assert decoded.pixels.ndim == 3
    assert stage in ("open", "limit", "decode", "convert", "decoded")


@FUZZ
@given(data=mutated(AUDIO_SEEDS, head=96))
def test_audio_decoder_never_crashes_on_damaged_headers(data):
    from datakiln.readers.audio import AudioDecodeError, decode_audio

    try:
        samples, rate, info = decode_audio(data)
    except AudioDecodeError as err:
        stage = err.stage
    else:
        stage = "decoded"
        assert rate > 0
        assert samples.shape == (info.frames, info.channels)
        assert np.isfinite(samples).all()
    assert stage in ("decode", "validate", "decoded")


@FUZZ
@given(data=mutated(AUDIO_SEEDS), align=st.sampled_from(["start", "center"]))
def test_windowed_audio_decodes_never_crash(data, align):
    """Only the frames a 50 ms clip needs (a seek into the file for ``"center"``), of a file
    damaged anywhere: a clip within the file's frames, or a rejection."""
    from datakiln.etl.kernels.audio import DecodeWindow
    from datakiln.readers.audio import AudioDecodeError, decode_audio_native

    try:
        samples, rate, info = decode_audio_native(data, window=DecodeWindow(16000, 0.05, align))
    except AudioDecodeError as err:
        stage = err.stage
    else:
        stage = "decoded"
        assert rate > 0
        assert samples.shape[0] >= 1
        assert info.first_frame + samples.shape[0] <= info.frames
        assert samples.dtype == np.int16 or np.isfinite(samples).all()
    assert stage in ("decode", "validate", "decoded")


ENCODINGS = ["utf-8", "latin-1", "utf-16", "cp1252", "shift_jis"]


@FUZZ
@given(
    lines=st.lists(
        st.tuples(st.text(max_size=40).filter(lambda s: "\n" not in s), st.sampled_from(ENCODINGS)),
        min_size=1,
        max_size=12,
    ),
    fmt=st.sampled_from(["txt", "jsonl"]),
)
def test_text_reader_accounts_for_every_line_in_mixed_encodings(lines, fmt):
    """Lines each in its own encoding, read as UTF-8: every line is a record or a rejection."""
    import json

    from datakiln.readers.text import TextRecord

    raw = bytearray()
    for text, encoding in lines:
        body = json.dumps({"text": text}) if fmt == "jsonl" else text
        raw += body.encode(encoding, errors="replace").replace(b"\n", b" ").replace(b"\r", b" ")
        raw += b"\n"
    url = f"memory://fuzz-{uuid.uuid4().hex}/input.{fmt}"
    fsspec.filesystem("memory").pipe_file(url.removeprefix("memory://"), bytes(raw))
    try:
        records, rejections = _read_text_file(url, fmt, "text" if fmt == "jsonl" else None)
        items = [*records, *rejections]
    finally:
        fsspec.filesystem("memory").rm(url.removeprefix("memory://"))
    # each record is one line; a rejection may cover several (a binary block is skipped
    # whole, its byte count in the message), so the text never vanishes without a record
    assert all(isinstance(i, TextRecord) or i.stage for i in items)
    records = [i for i in items if isinstance(i, TextRecord)]
    nonblank = sum(1 for line in bytes(raw).split(b"\n")[:-1] if line.strip())
    assert len(records) <= nonblank
    assert (len(items) > 0) == (nonblank > 0) or fmt == "txt"


def _read_text_file(url: str, fmt: str, field: str | None) -> tuple[list, list]:
    """Every sample of one file, planned into ranges and read range by range as a bake does."""
    from datakiln.readers import text as rt

    size = fsspec.filesystem("memory").size(url.removeprefix("memory://"))
    records, rejections = [], []
    for start, end in rt.plan_text_ranges(url, size, rt.DEFAULT_TARGET_BYTES, fmt=fmt):
        got, rejected = rt.read_text_range(url, start, end, fmt=fmt, field=field)
        records += got
        rejections += rejected
    return records, rejections


@FUZZ
@given(data=mutated([PARQUET_SEED], head=None))
def test_parquet_reader_refuses_damaged_parts_cleanly(data):
    from datakiln.cache.manifest import read_parquet
    from datakiln.errors import CacheFormatError

    root = f"memory://fuzz-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    fs.pipe_file(f"{root.removeprefix('memory://')}/part.parquet", data)
    try:
        table = read_parquet(root, "part.parquet")
    except CacheFormatError:
        pass
    else:
        assert table.num_columns >= 0
    finally:
        fs.rm(root.removeprefix("memory://"), recursive=True)


@FUZZ
@given(data=mutated([PARQUET_SEED]))
def test_text_reader_on_a_damaged_parquet_source_never_crashes(data):
    url = f"memory://fuzz-{uuid.uuid4().hex}/input.parquet"
    fsspec.filesystem("memory").pipe_file(url.removeprefix("memory://"), data)
    try:
        records, rejections = _read_text_file(url, "parquet", "text")
        assert len(records) + len(rejections) >= 0
    except DatakilnError:
        pass
    finally:
        fsspec.filesystem("memory").rm(url.removeprefix("memory://"))


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow on damaged TIFF tags
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(files=st.lists(mutated(IMAGE_SEEDS), min_size=3, max_size=6))
def test_a_bake_of_mutated_images_accounts_for_every_input(files, tmp_path_factory):
    from datakiln.etl.bake import bake
    from datakiln.etl.spec import BakeSpec, ImageParams

    root = tmp_path_factory.mktemp("fuzzbake")
    for k, data in enumerate(files):
        (root / "raw").mkdir(exist_ok=True)
        (root / "raw" / f"{k:02d}.jpg").write_bytes(data)
    report = bake(
        BakeSpec(
            sources=(str(root / "raw"),),
            output=str(root / "cache"),
            scheduler="synchronous",
            image=ImageParams(height=8, width=8),
        )
    )
    assert report.inputs == len(files) == report.baked + report.rejected
