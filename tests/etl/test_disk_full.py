"""A full disk stops a bake with one line naming the store; nothing is committed, and once
space is freed the same command resumes to the content of an uninterrupted bake."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from tests.conftest import write_small_images

from datakiln.cache.verify import verify_cache

ARGS = ["--size", "32", "--shard-size", "16", "-q"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    write_small_images(root, [f"k{k % 3}/{k:03d}.png" for k in range(160)])
    return root


def _bake(raw: Path, out: Path, **kwargs) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "datakiln", "bake", str(raw), "--out", str(out), *ARGS]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)


def _contents(out: Path) -> dict[str, str]:
    manifest = json.loads((out / "manifest.json").read_text())
    sums = {"cache_key": manifest["cache_key"]}
    for shard in manifest["shards"]:
        sums.update(json.loads((out / shard["marker"]).read_text())["checksums"])
    return sums


def _one_line_naming(result: subprocess.CompletedProcess, out: Path) -> None:
    assert result.returncode == 2  # the environment, not the inputs or the spec
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "out of space writing" in lines[0]
    assert str(out) in lines[0]
    assert "Traceback" not in result.stderr


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 320 KiB tmpfs (the bake needs about 700 KiB); skipped where mounting is not allowed."""
    mnt = tmp_path / f"tiny-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(mnt)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_stops_the_bake_and_a_rerun_resumes(raw, tmp_path, tiny_tmpfs):
    reference = tmp_path / "ref"
    assert _bake(raw, reference).returncode == 0
    out = tiny_tmpfs / "cache"
    _one_line_naming(_bake(raw, out), out)
    assert not (out / "manifest.json").exists()
    subprocess.run(["mount", "-o", "remount,size=8m", str(tiny_tmpfs)], check=True)
    result = _bake(raw, out)
    assert result.returncode == 0, result.stderr
    assert _contents(out) == _contents(reference)
    assert verify_cache(str(out)).ok


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (24 * 1024, 24 * 1024))


def test_file_size_limit_stops_the_bake_and_a_rerun_resumes(raw, tmp_path):
    reference = tmp_path / "ref"
    assert _bake(raw, reference).returncode == 0
    out = tmp_path / "cache"
    _one_line_naming(_bake(raw, out, preexec_fn=_limit_file_size), out)
    assert not (out / "manifest.json").exists()
    result = _bake(raw, out)
    assert result.returncode == 0, result.stderr
    assert _contents(out) == _contents(reference)
    assert verify_cache(str(out)).ok
