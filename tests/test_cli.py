"""The ``datakiln`` command, run as users run it: in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datakiln", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("datakiln:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_bake_prints_the_totals_and_reads_back(image_corpus, tmp_path):
    out = tmp_path / "cache"
    result = _run(
        "bake",
        str(image_corpus.root),
        "--out",
        str(out),
        "--size",
        "16",
        "--labels",
        "parent",
        "--shard-size",
        "100",
        "-q",
    )
    assert result.returncode == 0, result.stderr
    total = len(image_corpus.good) + len(image_corpus.broken)
    assert f"inputs {total} = baked {len(image_corpus.good)} + rejected 3" in result.stdout
    again = _run(
        "bake",
        str(image_corpus.root),
        "--out",
        str(out),
        "--size",
        "16",
        "--labels",
        "parent",
        "--shard-size",
        "100",
        "-q",
    )
    assert again.returncode == 0
    assert "up to date" in again.stdout
    inspect = _run("inspect", str(out))
    assert inspect.returncode == 0
    assert "uint8(16, 16, 3)" in inspect.stdout
    info = json.loads(_run("inspect", str(out), "--json").stdout)
    assert sum(info["classes"].values()) == len(image_corpus.good)
    assert sum(r["count"] for r in info["rejected"].values()) == 3
    assert info["fields"]["images"]["on_disk_bytes"] > 0
    assert len(info["statistics"]["mean"]) == 3
    verify = _run("verify", str(out))
    assert verify.returncode == 0
    assert "ok" in verify.stdout


def test_bake_from_a_spec_file(image_corpus, tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(
        f'sources = ["{image_corpus.root}/*/*.png"]\noutput = "out"\n'
        '[image]\nheight = 8\nwidth = 8\nrepresentation = "grayscale"\n'
    )
    result = _run("bake", str(spec), "-q")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["bake", "{tmp}/nothing/*.jpg", "--out", "{tmp}/c"], "matched no files"),
        (["bake", "{tmp}/missing-folder", "--out", "{tmp}/c"], "does not exist"),
        (["bake", "{corpus}", "--out", "{tmp}/blocker/c"], "cannot create the output"),
        (["bake", "{tmp}/bad.toml"], "did you mean 'shard_size'"),
        (["bake", "{corpus}"], "--out is required"),
        (["inspect", "{tmp}"], "no datakiln cache"),
        (["bake", "{corpus}", "--out", "{tmp}/c", "--image-codec", "png:3"], "jpeg:QUALITY"),
        (["bake", "{corpus}", "--out", "{tmp}/c", "--image-codec", "gif"], "image.codec must"),
        (
            ["bake", "{tmp}/t.csv", "--out", "{tmp}/c", "--fields", "a=text:x,a=label:y"],
            "names the field 'a' twice",
        ),
        (
            [
                "bake",
                "{tmp}/t.csv",
                "--out",
                "{tmp}/c",
                "--fields",
                "a=text:x",
                "--fields",
                "a=text",
            ],
            "names the field 'a' twice",
        ),
    ],
)
def test_user_errors_give_one_line_and_exit_2(image_corpus, tmp_path, args, expected):
    (tmp_path / "blocker").write_text("a file, not a folder")
    (tmp_path / "bad.toml").write_text('sources = ["x"]\noutput = "o"\nshard_sise = 4\n')
    args = [a.format(tmp=tmp_path, corpus=image_corpus.root) for a in args]
    result = _run(*args)
    assert result.returncode == 2, result.stderr
    assert expected in _one_error_line(result)


def test_fields_given_once_per_field_add_up(tmp_path):
    """``--fields`` repeated bakes every field named, as one comma-separated list does."""
    import datakiln

    (tmp_path / "t.csv").write_text("caption,label\na red fox,fox\na grey owl,owl\n")
    result = _run(
        "bake",
        str(tmp_path / "t.csv"),
        "--out",
        str(tmp_path / "c"),
        "--fields",
        "captions=text:caption",
        "--fields",
        "labels=label:label",
        "-q",
    )
    assert result.returncode == 0, result.stderr
    batch = datakiln.open_cache(str(tmp_path / "c")).get_batch(indices=[0, 1])
    assert {"captions", "labels"} <= set(batch)
    assert batch["labels"].tolist() == [0, 1]


def test_max_rejected_exits_1(image_corpus, tmp_path):
    result = _run(
        "bake",
        str(image_corpus.root),
        "--out",
        str(tmp_path / "c"),
        "--size",
        "8",
        "--max-rejected",
        "0",
        "-q",
    )
    assert result.returncode == 1
    assert "max_rejected=0" in _one_error_line(result)


def test_image_codec_flag_bakes_jpeg_and_inspect_shows_the_disk_ratio(image_corpus, tmp_path):
    out = tmp_path / "cache"
    args = ["--out", str(out), "--size", "24", "--image-codec", "jpeg:80", "-q"]
    result = _run("bake", f"{image_corpus.root}/*/*.png", *args)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spec"]["image"]["codec"] == "jpeg"
    assert manifest["spec"]["image"]["quality"] == 80
    assert manifest["fields"]["images"]["codec"] == "jpeg"
    info = json.loads(_run("inspect", str(out), "--json").stdout)
    field = info["fields"]["images"]
    assert 0 < field["disk_ratio"] < 1
    inspect = _run("inspect", str(out))
    assert "codec jpeg" in inspect.stdout
    assert f"disk/raw {field['disk_ratio']:.3f}" in inspect.stdout
    assert _run("verify", str(out)).returncode == 0


def test_every_command_has_help_with_an_example():
    for command in ("bake", "plan", "demo", "inspect", "verify", "ls", "gc"):
        result = _run(command, "--help")
        assert result.returncode == 0
        assert "example" in result.stdout


def test_modality_flag_gets_that_modalitys_default_shard_size(tmp_path):
    (tmp_path / "lines.txt").write_text("".join(f"line {k} of text\n" for k in range(30)))
    out = tmp_path / "t"
    result = _run(
        "bake",
        str(tmp_path / "lines.txt"),
        "--modality",
        "text",
        "--out",
        str(out),
        "--max-length",
        "8",
        "-q",
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spec"]["shard_size"] == 16384
