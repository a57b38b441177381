"""Text bakes of files in legacy codecs (``encoding = "auto"``), and blank inputs in the counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datakiln.cache.inspect import describe_cache
from datakiln.cache.open import open_cache
from datakiln.etl.bake import bake, plan_only
from datakiln.etl.modalities import get_modality
from datakiln.etl.plan import generation_key, plan_files
from datakiln.etl.spec import BakeSpec
from datakiln.etl.task import ShardPlan
from datakiln.readers.encoding import detector_identity

FRENCH = [
    "Le château est très beau à la fin de l'été.",
    "Où est la bibliothèque ? Près de l'église, derrière le marché.",
    "Les élèves étudient le français et l'histoire de la région.",
    "Il a reçu une lettre de sa cousine, qui habite à Genève.",
]
SPANISH = [
    "El niño comió una manzana en el jardín.",
    "Mañana iremos a la montaña con mi compañero.",
    "¿Dónde está la estación de autobuses?",
]
JAPANESE = [
    "東京は日本の首都です。",
    "今日はいい天気ですね。散歩に行きましょう。",
    "カタカナとひらがなと漢字を使って書きます。",
    "この本はとても面白かったです。",
]
ENGLISH = ["plain ascii text", "more of it"]
PARAMS = {"max_length": 16, "vocab_size": 5000, "field": "text", "target_bytes": 64}


def _write_corpus(root: Path) -> dict[str, tuple[list[str], str]]:
    """Files in several codecs, with blank lines; returns name -> (texts, codec written)."""
    root.mkdir(parents=True)
    # Latin-1 with a blank and a whitespace line, long enough to be cut into several ranges
    latin = FRENCH * 3
    (root / "a_latin1.txt").write_bytes(
        ("\n".join(latin[:5]) + "\n\n   \n" + "\n".join(latin[5:]) + "\n").encode("latin-1")
    )
    rows = "".join(f'{i},"{line}"\r\n' for i, line in enumerate(JAPANESE))
    (root / "b_sjis.csv").write_bytes(f"id,text\r\n{rows}\r\n".encode("shift_jis"))
    (root / "c_utf8.txt").write_bytes(("\n".join(ENGLISH) + "\n").encode())
    jsonl = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in SPANISH)
    (root / "d_latin1.jsonl").write_bytes(jsonl.encode("latin-1"))
    raw = [t.encode("latin-1") for t in SPANISH]
    pq.write_table(pa.table({"text": raw}), root / "e_binary.parquet", row_group_size=2)
    return {
        "a_latin1.txt": (latin, "latin-1"),
        "b_sjis.csv": (JAPANESE, "shift_jis"),
        "c_utf8.txt": (ENGLISH, "utf-8"),
        "d_latin1.jsonl": (SPANISH, "latin-1"),
        "e_binary.parquet": (SPANISH, "latin-1"),
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("encodings") / "src"
    return root, _write_corpus(root)


def _spec(root: Path, out: Path, **text) -> BakeSpec:
    return BakeSpec(
        sources=(str(root),),
        output=str(out),
        modality="text",
        text={**PARAMS, **text},
        shard_size=4,
    )


@pytest.fixture(scope="module")
def auto_bake(corpus, tmp_path_factory):
    root, files = corpus
    spec = _spec(root, tmp_path_factory.mktemp("auto") / "cache", encoding="auto")
    return spec, bake(spec), files


def test_legacy_files_bake_to_their_original_strings(auto_bake):
    spec, report, files = auto_bake
    expected = [t for name in sorted(files) for t in files[name][0]]
    dataset = open_cache(spec.output)
    assert dataset.read_batch(np.arange(len(dataset)))["texts"] == expected
    assert report.baked == len(expected)
    # the Shift_JIS CSV's trailing empty line and the Latin-1 blank lines: 3 blank, none broken
    assert (report.rejected, report.blank) == (3, 3)
    assert report.inputs == report.baked + report.rejected
    assert dict(report.rejected_by_reason) == {"validate: EmptySample": 3}


def test_the_detected_codec_is_recorded_per_sample_and_per_codec(auto_bake):
    spec, _, files = auto_bake
    meta = open_cache(spec.output).metadata().to_pylist()
    for row in meta:
        codec = files[Path(row["uri"]).name][1]
        raw = row["text"].encode(codec)
        assert raw.decode(row["encoding"]) == row["text"]  # the recorded codec reads the bytes
    codecs_of = {Path(m["uri"]).name: m["encoding"] for m in meta}
    assert codecs_of == {
        "a_latin1.txt": "cp1252",
        "b_sjis.csv": "cp932",
        "c_utf8.txt": "utf-8",
        "d_latin1.jsonl": "cp1252",
        "e_binary.parquet": "cp1252",
    }
    manifest = json.loads((Path(spec.output) / "manifest.json").read_text())
    assert manifest["stats"]["encodings"] == {
        "cp1252": {"files": 3, "samples": len(FRENCH) * 3 + 2 * len(SPANISH)},
        "cp932": {"files": 1, "samples": len(JAPANESE)},
        "utf-8": {"files": 1, "samples": len(ENGLISH)},
    }
    assert manifest["encoding_detector"] == detector_identity()
    info = describe_cache(spec.output)
    assert info["encodings"] == manifest["stats"]["encodings"]
    assert info["encoding_detector"]["name"] == "charset-normalizer"
    assert info["counts"]["blank"] == 3


def test_detection_is_planned_once_per_file_and_keyed(auto_bake, monkeypatch):
    spec, _, _ = auto_bake
    plan = plan_files(spec)
    latin = [s for s in plan.shards if any(i.uri.endswith("a_latin1.txt") for i in s.inputs)]
    assert len(latin) > 1  # the file is cut into several shards, all read with one codec
    assert {e for s in latin for e in s.encodings} == {"cp1252"}
    for shard in plan.shards:
        assert len(shard.encodings or ()) == len(shard.inputs)
        assert ShardPlan.from_dict(json.loads(json.dumps(shard.to_dict()))) == shard
    # the same files plan to the same fingerprints: the committed markers all match
    again = plan_files(spec)
    assert [s.fingerprint for s in again.shards] == [s.fingerprint for s in plan.shards]
    summary = plan_only(spec)
    assert summary.up_to_date
    assert summary.shards_done == summary.shards
    assert bake(spec).up_to_date
    # another codec for one input is another shard: its marker no longer matches
    shard = plan.shards[0]
    other = ShardPlan.from_dict({**shard.to_dict(), "encodings": ["utf-8"] * len(shard.inputs)})
    assert other.fingerprint != shard.fingerprint
    # the detector's identity is in the generation key, and `plan` says when it changed
    assert generation_key(spec) != generation_key(_spec(Path("x"), Path("y")))
    newer = {**detector_identity(), "version": "99.0.0"}
    monkeypatch.setattr("datakiln.etl.modalities.text.detector_identity", lambda: newer)
    summary = plan_only(spec)
    assert not summary.up_to_date
    assert any(r.startswith("encoding_detector:") and "99.0.0" in r for r in summary.key_changes), (
        summary.key_changes
    )


def test_default_utf8_bake_is_unchanged(corpus, tmp_path):
    root, files = corpus
    spec = _spec(root, tmp_path / "cache")
    plan = plan_files(spec)
    assert all(s.encodings is None for s in plan.shards)
    assert all("encodings" not in s.to_dict() for s in plan.shards)  # fingerprints as before
    assert "encoding_detector" not in get_modality("text").manifest_entries(spec)
    report = bake(spec)
    dataset = open_cache(spec.output)
    texts = dataset.read_batch(np.arange(len(dataset)))["texts"]
    # every non-ASCII line of the legacy files is rejected, as before; the rest bakes
    assert texts == [t for t in files["c_utf8.txt"][0]]
    assert report.rejected_by_reason["decode: UnicodeDecodeError"] == (
        len(FRENCH) * 3 + len(JAPANESE) + 2 * len(SPANISH)
    )
    assert report.blank == 3
    assert report.inputs == report.baked + report.rejected
    assert {m["encoding"] for m in dataset.metadata().to_pylist()} == {"utf-8"}


def _text_folder(tmp_path: Path, files: dict[str, bytes], **text) -> BakeSpec:
    """A text bake's spec of a folder holding ``files`` (name: bytes), into ``cache``."""
    src = tmp_path / "src"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    return BakeSpec(sources=(str(src),), output=str(tmp_path / "cache"), modality="text", text=text)


def test_blank_lines_are_counted_apart_from_broken_ones(tmp_path):
    files = {
        "a.txt": b"one\n\n  \t\ntwo\nbad \xff line\n\r\nthree\n",
        "b.jsonl": b'{"text": "four"}\n{"text": null}\n{broken\n\n',
    }
    spec = _text_folder(tmp_path, files, field="text", max_length=8)
    report = bake(spec)
    # blank: an empty, a whitespace and a CRLF-only line in a.txt, a null and an empty line in
    # b.jsonl; broken: the undecodable line and the bad JSON
    assert (report.inputs, report.baked, report.rejected, report.blank) == (11, 4, 7, 5)
    assert report.inputs == report.baked + report.rejected
    assert report.summary_line() == "inputs 11 = baked 4 + rejected 7 (5 blank, 2 broken)"
    assert sum(report.rejected_by_reason.values()) == report.rejected
    assert report.rejected_by_reason["validate: EmptySample"] == report.blank
    saved = json.loads((tmp_path / "cache" / "report.json").read_text())
    assert (saved["rejected"], saved["blank"]) == (7, 5)
    again = bake(spec)
    assert again.up_to_date
    assert again.summary_line() == report.summary_line()


def test_a_latin1_file_with_classic_mac_line_endings_bakes_line_by_line(tmp_path):
    """CR alone ends each line (such files used to bake as one truncated line)."""
    import datakiln

    lines = ["caf\u00e9 au lait", "cr\u00e8me br\u00fbl\u00e9e", "", "na\u00efve"]
    menu = "\r".join(lines).encode("latin-1") + b"\r"
    report = bake(_text_folder(tmp_path, {"menu.txt": menu}, encoding="auto", max_length=8))
    assert (report.inputs, report.baked, report.blank) == (4, 3, 1)
    texts = datakiln.open_cache(str(tmp_path / "cache")).metadata().column("text").to_pylist()
    assert texts == [line for line in lines if line]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "datakiln", *args], cwd=cwd, capture_output=True, text=True
    )


def test_cli_encoding_auto_and_the_summary(tmp_path):
    (tmp_path / "ja.txt").write_bytes(("\n".join(JAPANESE) + "\n\n").encode("shift_jis"))
    result = _run(
        "bake",
        "ja.txt",
        "--encoding",
        "auto",
        "--out",
        "cache",
        "--max-length",
        "8",
        "-q",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "inputs 5 = baked 4 + rejected 1 (1 blank, 0 broken)" in result.stdout
    inspect = _run("inspect", "cache", cwd=tmp_path)
    assert inspect.returncode == 0, inspect.stderr
    assert "encodings (detected): cp932 (1 file, 4 samples)" in inspect.stdout
    assert "(1 blank, 0 broken)" in inspect.stdout
    texts = open_cache(str(tmp_path / "cache")).read_batch(np.arange(4))["texts"]
    assert texts == JAPANESE


def test_a_given_codec_is_recorded_by_its_canonical_name(corpus, tmp_path):
    root, files = corpus
    spec = BakeSpec(
        sources=(str(root / "a_latin1.txt"),),
        output=str(tmp_path / "cache"),
        modality="text",
        text={"encoding": "latin-1", "max_length": 16},
    )
    report = bake(spec)
    dataset = open_cache(spec.output)
    assert dataset.read_batch(np.arange(report.baked))["texts"] == files["a_latin1.txt"][0]
    assert {m["encoding"] for m in dataset.metadata().to_pylist()} == {"iso8859-1"}
    assert describe_cache(spec.output)["encodings"] == {
        "iso8859-1": {"files": 1, "samples": report.baked}
    }
