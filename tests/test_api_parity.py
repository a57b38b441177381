"""Each command of ``datakiln`` and its Python function give the same result.

The command runs as users run it (a subprocess) with ``--json``, which prints the function's
result; the function runs here. A new command goes into ``datakiln.cli.FUNCTIONS`` with its
function, or into ``NOT_API`` below saying why it has none.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import write_small_images

import datakiln
from datakiln.cli import FUNCTIONS, _parser

# Commands that are not functions of the public API, and why.
NOT_API = {
    "preview": "draws a PNG: datakiln.preview.render_preview",
    "watch": "runs until stopped: datakiln.service.watch.watch",
    "serve": "a long-running server: datakiln.service.server.serve",
    "demo": "bakes a generated corpus with datakiln.bake",
}
# Fields of a bake report that differ between two bakes of the same inputs and spec.
_RUN_FIELDS = ("url", "wall_s", "stage_s", "retries", "bytes_out")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datakiln", *args, "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _json(*args: str, returncode: int = 0) -> object:
    result = _run(*args, "--json")
    assert result.returncode == returncode, result.stderr
    return json.loads(result.stdout)


def _spec(raw: Path, out: Path, size: int) -> datakiln.BakeSpec:
    return datakiln.BakeSpec(
        sources=(str(raw),),
        output=str(out),
        shard_size=4,
        image=datakiln.ImageParams(height=size, width=size),
    )


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``caches/small``: 12 images baked at 8x8, then at 10x10 (the first version is garbage)."""
    root = tmp_path_factory.mktemp("parity")
    write_small_images(root / "raw", [f"{k:02d}.png" for k in range(12)])
    for size in (8, 10):
        datakiln.bake(_spec(root / "raw", root / "caches" / "small", size))
    return root


def test_every_command_is_listed_with_its_function():
    sub = next(a for a in _parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(FUNCTIONS) | set(NOT_API)
    assert not set(FUNCTIONS) & set(NOT_API)
    for command, function in FUNCTIONS.items():
        name = function.removeprefix("datakiln.")
        assert name in datakiln.__all__, command
        assert callable(getattr(datakiln, name)), command


def test_bake(caches, tmp_path):
    out = tmp_path / "cache"
    printed = _json(
        "bake", str(caches / "raw"), "--out", str(out), "--size", "10", "--shard-size", "4"
    )
    assert printed == json.loads((out / "report.json").read_text())  # what bake() returned
    report = datakiln.bake(_spec(caches / "raw", tmp_path / "again", 10))
    assert isinstance(report, datakiln.BakeReport)
    expected = {k: v for k, v in report.to_dict().items() if k not in _RUN_FIELDS}
    assert {k: v for k, v in printed.items() if k not in _RUN_FIELDS} == expected
    assert printed["inputs"] == 12


def test_plan(caches):
    spec = _spec(caches / "raw", caches / "caches" / "small", 12)
    summary = datakiln.plan(spec)
    assert isinstance(summary, datakiln.PlanSummary)
    assert not summary.up_to_date
    args = (str(caches / "raw"), "--out", spec.output, "--size", "12", "--shard-size", "4")
    assert _json("plan", *args) == json.loads(json.dumps(dataclasses.asdict(summary)))
    assert _json("bake", *args, "--dry-run") == _json("plan", *args)
    text = _run("plan", *args).stdout.splitlines()
    assert text == summary.lines()


def test_inspect(caches):
    url = str(caches / "caches" / "small")
    assert _json("inspect", url) == json.loads(json.dumps(datakiln.inspect(url)))


def test_verify(caches, tmp_path):
    url = str(caches / "caches" / "small")
    report = datakiln.verify(url)
    assert isinstance(report, datakiln.VerifyReport)
    assert report.ok
    assert _json("verify", url) == {
        **json.loads(json.dumps(dataclasses.asdict(report))),
        "ok": True,
    }
    assert f"{report.objects_checked} objects checked, ok" in _run("verify", url).stdout

    damaged = tmp_path / "damaged"
    datakiln.bake(_spec(caches / "raw", damaged, 8))
    shard = next(p for p in sorted(damaged.rglob("*")) if p.is_file() and "/c/" in str(p))
    shard.write_bytes(b"\x00" + shard.read_bytes()[1:])
    report = datakiln.verify(str(damaged))
    assert not report.ok
    printed = _json("verify", str(damaged), returncode=1)
    assert printed["problems"] == list(report.problems)
    assert printed["ok"] is False


def test_ls(caches):
    entries = datakiln.ls(str(caches / "caches"))
    assert [Path(e.url).name for e in entries] == ["small"]
    assert all(isinstance(e, datakiln.CacheEntry) for e in entries)
    printed = _json("ls", str(caches / "caches"))
    assert printed == [dataclasses.asdict(e) for e in entries]
    row = next(line for line in _run("ls", str(caches / "caches")).stdout.splitlines()[1:])
    assert f"  {entries[0].rows}  " in row


def test_gc(caches):
    url = str(caches / "caches" / "small")
    doomed = datakiln.gc(url, dry_run=True, grace_s=0)
    assert doomed
    assert _json("gc", url, "--dry-run", "--grace", "0") == doomed
    lines = _run("gc", url, "--dry-run", "--grace", "0").stdout.splitlines()
    assert [line.removeprefix("would remove ") for line in lines[:-1]] == doomed
    assert _json("gc", url, "--grace", "0") == doomed  # removes them
    assert datakiln.gc(url, dry_run=True, grace_s=0) == []
    assert datakiln.verify(url).ok
