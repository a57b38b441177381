"""Fault injection: killed bakes, concurrent bakes, hostile manifests, planted secrets."""

from __future__ import annotations

import json
import logging
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import write_small_images

from datakiln.cache.manifest import read_manifest
from datakiln.cache.open import open_cache
from datakiln.cache.verify import verify_cache
from datakiln.errors import CacheFormatError, LeaseHeldError
from datakiln.etl.bake import bake
from datakiln.etl.lease import StoreLease
from datakiln.etl.spec import BakeSpec, ImageParams

BAKE_ARGS = ["--size", "8", "--shard-size", "4", "--workers", "1", "-q"]


def _bake_cmd(raw: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "datakiln", "bake", str(raw), "--out", str(out), *BAKE_ARGS]


def _checksums(out: Path) -> dict[str, str]:
    manifest = read_manifest(str(out))
    sums = {}
    for shard in manifest["shards"]:
        marker = json.loads((out / shard["marker"]).read_text())
        sums.update(marker["checksums"])
    return sums


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    write_small_images(root, [f"k{k % 3}/{k:03d}.png" for k in range(48)])
    (root / "k0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


@pytest.fixture(scope="module")
def reference(raw, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("ref") / "cache"
    subprocess.run(_bake_cmd(raw, out), check=True, timeout=300)
    return _checksums(out)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_killed_bake_resumes_to_identical_content(raw, reference, tmp_path, seed):
    out = tmp_path / "cache"
    proc = subprocess.Popen(
        _bake_cmd(raw, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(random.Random(seed).uniform(0.5, 3.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the killed bake's lease record is still there, its lock gone: the same command at once
    subprocess.run(_bake_cmd(raw, out), check=True, timeout=300)
    assert _checksums(out) == reference
    assert verify_cache(str(out)).ok


def test_second_bake_fails_naming_the_lease_holder(raw, tmp_path):
    out = tmp_path / "cache"
    out.mkdir()
    with StoreLease(str(out)) as held:
        spec = BakeSpec(sources=(str(raw),), output=str(out), image=ImageParams(height=8, width=8))
        with pytest.raises(LeaseHeldError, match=held.owner):
            bake(spec)
        result = subprocess.run(_bake_cmd(raw, out), capture_output=True, text=True, timeout=300)
        assert result.returncode == 1
        assert held.owner in result.stderr
        assert "Traceback" not in result.stderr


def test_expired_lease_is_taken_over(tmp_path):
    stale = {"owner": "deadhost:1:abc", "started": time.time() - 100, "expires": time.time() - 1}
    (tmp_path / "_lease.json").write_text(json.dumps(stale))
    with StoreLease(str(tmp_path)) as lease:
        assert json.loads((tmp_path / "_lease.json").read_text())["owner"] == lease.owner
    assert not (tmp_path / "_lease.json").exists()


def test_waiting_bake_gets_the_lease_when_released(tmp_path):
    first = StoreLease(str(tmp_path))
    first.acquire()
    second = StoreLease(str(tmp_path), wait_s=10, poll_s=0.05)
    import threading

    threading.Timer(0.3, first.release).start()
    second.acquire()
    assert json.loads((tmp_path / "_lease.json").read_text())["owner"] == second.owner
    second.release()


def test_two_stores_bake_in_parallel(raw, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    procs = [subprocess.Popen(_bake_cmd(raw, out)) for out in (a, b)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert verify_cache(str(a)).ok
    assert verify_cache(str(b)).ok


@pytest.mark.parametrize(
    "path", ["../outside", "/etc/passwd", "s3://bucket/x", "g-1/../../x", "a\\b", ""]
)
def test_manifest_paths_must_stay_inside_the_store(raw, tmp_path, path):
    out = tmp_path / "cache"
    bake(BakeSpec(sources=(str(raw),), output=str(out), image=ImageParams(height=8, width=8)))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["shards"][0]["meta"] = path
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheFormatError, match="relative path inside the store"):
        open_cache(str(out))


def test_oversized_and_malformed_manifests_are_refused(tmp_path):
    (tmp_path / "manifest.json").write_bytes(b"{" + b" " * (65 * 2**20))
    with pytest.raises(CacheFormatError, match="too large"):
        read_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text('{"format": "datakiln-cache", "format_version": 1}')
    with pytest.raises(CacheFormatError, match="lacks"):
        read_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text('{"format": "datakiln-cache", "format_version": 9}')
    with pytest.raises(CacheFormatError, match="version 9"):
        read_manifest(str(tmp_path))


def test_planted_secret_never_leaves_memory(raw, tmp_path, caplog, capfd):
    secret = "SECRET-d41d8cd98f00b204"
    fs_root = f"memory://secret-{tmp_path.name}"
    import fsspec

    mem = fsspec.filesystem("memory")
    for p in sorted(raw.rglob("*.png"))[:6]:
        mem.pipe_file(f"{fs_root.removeprefix('memory://')}/raw/{p.name}", p.read_bytes())
    spec = BakeSpec(
        sources=(f"{fs_root}/raw/*.png",),
        output=str(tmp_path / "cache"),
        storage_options={"secret_token": secret},
        image=ImageParams(height=8, width=8),
    )
    with caplog.at_level(logging.DEBUG):
        bake(spec)
    stored = b"".join(p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert secret.encode() not in stored
    assert secret not in caplog.text
    out, err = capfd.readouterr()
    assert secret not in out + err
    assert secret not in repr(spec)
