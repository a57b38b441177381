"""Sources and field codecs are registered parts: a toy source and a toy field, defined here,
bake end to end; and speech + transcript pairs from a TSV bake to aligned audio, mel and
tokens."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import soundfile as sf

import datakiln
from datakiln.etl.bake import bake
from datakiln.etl.fields import register_codec
from datakiln.etl.fields.base import Context, Encoded, FieldError
from datakiln.etl.spec import BakeSpec, FieldSpec
from datakiln.readers.listing import InputFile
from datakiln.readers.sources import ReadResult, Record, RecordUnit, register_source
from datakiln.writers.zarr_region import FieldLayout


class CountdownSource:
    """A ``.countdown`` file holds one integer n: its records are n, n-1, ..., 1."""

    name = "countdown"
    extensions = (".countdown",)

    def columns(self, inp: InputFile, storage_options: Mapping[str, Any]) -> Sequence[str]:
        return ["n"]

    def plan(self, inp, storage_options, *, records_per_unit, path_columns):
        with open(inp.uri.removeprefix("file://")) as f:
            count = int(f.read())
        return [
            RecordUnit(self.name, inp, a, min(count, a + records_per_unit))
            for a in range(0, count, records_per_unit)
        ]

    def read(self, unit: RecordUnit, storage_options: Mapping[str, Any]) -> ReadResult:
        with open(unit.input.uri.removeprefix("file://")) as f:
            count = int(f.read())
        return ReadResult(
            records=[
                Record(key=f"#{i}", position=i, values={"n": count - i})
                for i in range(unit.start, unit.end)
            ]
        )


@dataclass(frozen=True, kw_only=True)
class ParityParams:
    modulus: int = 2

    def to_dict(self) -> dict[str, Any]:
        return {"modulus": self.modulus}


class ParityCodec:
    """Stores ``value % modulus`` as uint8, and rejects multiples of 7."""

    modality = "parity"
    media = False
    params_type = ParityParams
    worker_modules: tuple[str, ...] = ()

    def layouts(self, spec: FieldSpec, generation: str, shard_rows: int) -> list[FieldLayout]:
        path = f"{generation}/{spec.name}"
        return [FieldLayout(spec.name, path, "uint8", (), shard_rows, sharded=False)]

    def transforms(self, spec):
        return {spec.name: None}

    def sample_bytes(self, spec):
        return 1

    def identity(self, spec):
        return {"toy": 1}

    def decode(self, value, spec, context: Context):
        if value % 7 == 0:
            raise FieldError("validate", "Unlucky", f"{value} is a multiple of 7")
        return value % spec.params.modulus

    def encode(self, decoded, spec, capacity, context) -> Encoded:
        out = np.zeros(capacity, np.uint8)
        out[: len(decoded)] = decoded
        return Encoded(arrays={spec.name: out}, stats={"n": len(decoded)})

    def merge_stats(self, spec, stats):
        return {"n": sum(s["n"] for s in stats)}


@pytest.fixture
def toy_parts():
    register_source(CountdownSource())
    register_codec(ParityCodec())


def test_toy_source_and_field_bake_end_to_end(toy_parts, tmp_path):
    (tmp_path / "a.countdown").write_text("30")
    spec = BakeSpec(
        sources=(str(tmp_path / "a.countdown"),),
        output=str(tmp_path / "out"),
        shard_size=8,
        scheduler="threads",
        fields={
            "n": {"modality": "scalar", "column": "n", "dtype": "int64"},
            "mod3": {"modality": "parity", "column": "n", "modulus": 3},
        },
    )
    report = bake(spec)
    expected = [v for v in range(30, 0, -1) if v % 7]
    assert (
        report.summary_line()
        == f"inputs 30 = baked {len(expected)} + rejected {30 - len(expected)}"
    )
    dataset = datakiln.open_cache(str(tmp_path / "out"))
    batch = dataset.get_batch(indices=list(range(len(dataset))))
    assert batch["n"].tolist() == expected
    assert batch["mod3"].tolist() == [v % 3 for v in expected]
    assert dataset.manifest["stats"]["mod3"] == {"n": len(expected)}
    assert dataset.manifest["record_fields"]["mod3"]["identity"] == {"toy": 1}


def _speech(rate: int, seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write_clips(clips, count: int, first_s: float, step_s: float) -> list[str]:
    """``count`` tones at 16, 22.05 and 8 kHz in turn, as WAV and FLAC in turn; their names."""
    clips.mkdir()
    names = []
    for i in range(count):
        rate = (16000, 22050, 8000)[i % 3]
        names.append(f"u{i}.{'flac' if i % 2 else 'wav'}")
        sf.write(clips / names[-1], _speech(rate, first_s + step_s * i, 200 + 50 * i), rate)
    return names


def test_speech_tsv_bakes_aligned_audio_mel_and_transcripts(tmp_path):
    from datakiln.datasets.tokenize import word_hash_tokenize
    from datakiln.etl.kernels.audio import featurize_audio
    from datakiln.etl.modalities.audio import _kernel_params
    from datakiln.etl.spec import AudioParams
    from datakiln.readers.audio import decode_audio_native

    clips = tmp_path / "clips"
    rows = [
        {
            "path": f"clips/{name}",
            "sentence": f"utterance number {i} is here",
            "speaker": f"s{i % 2}",
        }
        for i, name in enumerate(_write_clips(clips, 6, 0.3, 0.1))
    ]
    with (tmp_path / "train.tsv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "sentence", "speaker"], delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    audio = {"sample_rate": 16000, "duration": 0.5, "n_mels": 32, "n_fft": 512, "hop_length": 160}
    spec = BakeSpec(
        sources=(str(tmp_path / "train.tsv"),),
        output=str(tmp_path / "out"),
        fields={
            "audio": {"modality": "audio", "column": "path", **audio},
            "transcripts": {"modality": "text", "column": "sentence", "max_length": 16},
            "speaker": {"modality": "label", "column": "speaker"},
        },
    )
    report = bake(spec)
    assert report.baked == 6
    # the featurizer's (rate, rows, channels) signatures: 16, 22.05 and 8 kHz, mono
    assert report.kernel_shapes == 3
    dataset = datakiln.open_cache(str(tmp_path / "out"))
    batch = dataset.get_batch(indices=list(range(6)))
    assert batch["audio"].shape == (6, 8000)
    assert batch["mel"].shape == (6, 32, 1 + 8000 // 160)
    params = AudioParams(**audio)
    meta = dataset.metadata().to_pylist()
    for k, row in enumerate(meta):
        i = row["position"]
        samples, rate, _ = decode_audio_native((clips / rows[i]["path"].split("/")[1]).read_bytes())
        wave = np.zeros((1, params.samples), params.wave_dtype)
        mel = np.zeros((1, params.n_mels, params.frames), params.mel_dtype)
        featurize_audio([(samples, rate)], out=(wave, mel), **_kernel_params(params))
        np.testing.assert_allclose(batch["audio"][k], wave[0] / 32767, atol=1e-6)
        np.testing.assert_allclose(batch["mel"][k], mel[0].astype(np.float32), atol=1e-6)
        tokens, _ = word_hash_tokenize(rows[i]["sentence"], vocab_size=10000, max_length=16)
        assert np.array_equal(batch["transcripts"][k], tokens)
        assert (
            dataset.manifest["label_classes"]["speaker"][batch["speaker"][k]] == rows[i]["speaker"]
        )


def test_speech_records_bake_batch_by_batch_as_in_one_go(tmp_path, monkeypatch):
    """Audio fields bound a shard's decoded clips to batches (``batch_rows``): with batches of
    3 the shard stores what one batch stores, rows, fill, masks, metadata, rejections and
    stats alike, with broken records and an optional field's gaps falling across batches."""
    import json

    import pyarrow.parquet as pq

    from datakiln.etl.modalities import audio as audio_modality

    clips = tmp_path / "clips"
    rows = [
        [f"clips/{name}", f"utterance {i}", f"s{i % 3}", f"clips/{name}"]
        for i, name in enumerate(_write_clips(clips, 11, 0.2, 0.05))
    ]
    (clips / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot audio")
    rows[2][0] = "clips/missing.wav"  # rejected: a missing file
    rows[5][0] = "clips/broken.wav"  # rejected: undecodable
    rows[7][3] = ""  # the optional field: a gap
    rows[8][3] = "clips/broken.wav"  # and one that does not decode
    with (tmp_path / "train.tsv").open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["path", "sentence", "speaker", "echo"])
        writer.writerows(rows)
    audio = {"sample_rate": 8000, "duration": 0.4, "n_mels": 16, "n_fft": 256, "hop_length": 80}

    def run(name: str, rows_per_batch: int) -> Any:
        monkeypatch.setattr(audio_modality, "DECODE_BATCH", rows_per_batch)
        spec = BakeSpec(
            sources=(str(tmp_path / "train.tsv"),),
            output=str(tmp_path / name),
            scheduler="synchronous",
            fields={
                "audio": {"modality": "audio", "column": "path", **audio},
                "echo": {"modality": "audio", "column": "echo", "required": False, **audio},
                "transcripts": {"modality": "text", "column": "sentence", "max_length": 8},
                "speaker": {"modality": "label", "column": "speaker"},
            },
        )
        return bake(spec)

    whole, batched = run("whole", 64), run("batched", 3)
    assert (whole.baked, whole.rejected) == (batched.baked, batched.rejected) == (9, 2)
    caches = [datakiln.open_cache(str(tmp_path / n)) for n in ("whole", "batched")]
    batches = [c.get_batch(indices=list(range(9))) for c in caches]
    assert set(batches[0]) == set(batches[1])
    for key in batches[0]:
        np.testing.assert_array_equal(batches[0][key], batches[1][key], err_msg=key)
    assert caches[0].metadata().to_pylist() == caches[1].metadata().to_pylist()
    assert batches[0]["echo_valid"].tolist().count(False) == 2
    manifests = [
        json.loads((tmp_path / n / "manifest.json").read_text()) for n in ("whole", "batched")
    ]
    # the same stats, up to the order of float sums (duration totals)
    stats = [_flat(m["stats"]) for m in manifests]
    assert stats[0].keys() == stats[1].keys()
    for key, value in stats[0].items():
        if isinstance(value, float):
            assert value == pytest.approx(stats[1][key], rel=1e-12), key
        else:
            assert value == stats[1][key], key
    rejected = [
        pq.read_table(tmp_path / n / m["rejected"]).to_pylist()
        for n, m in zip(("whole", "batched"), manifests, strict=True)
    ]
    assert [(r["record"], r["field"], r["stage"]) for r in rejected[0]] == [
        (r["record"], r["field"], r["stage"]) for r in rejected[1]
    ]


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict of numbers and lists as one flat dict (what ``pytest.approx`` compares)."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}/").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _flat(sub, f"{prefix}{i}/").items()}
    return {prefix: tree}
