from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from datakiln.cache.verify import verify_cache
from datakiln.etl.bake import bake
from datakiln.etl.spec import BakeSpec, ImageParams


@pytest.fixture
def cache(image_corpus, tmp_path) -> Path:
    out = tmp_path / "cache"
    bake(
        BakeSpec(
            sources=(f"{image_corpus.root}/*/*.png",),
            output=str(out),
            shard_size=16,
            image=ImageParams(height=8, width=8, labels="parent"),
        )
    )
    return out


def _first_shard_object(cache: Path) -> Path:
    manifest = json.loads((cache / "manifest.json").read_text())
    marker = json.loads((cache / manifest["shards"][0]["marker"]).read_text())
    key = next(k for k, v in marker["checksums"].items() if "/images/" in k and v)
    return cache / key


def test_intact_cache_verifies(cache):
    report = verify_cache(str(cache))
    assert report.ok, report.problems
    assert report.objects_checked >= 3


def test_flipped_byte_is_reported(cache):
    target = _first_shard_object(cache)
    data = bytearray(target.read_bytes())
    data[len(data) // 3] ^= 0x01
    target.write_bytes(bytes(data))
    report = verify_cache(str(cache))
    assert not report.ok
    assert any("does not match its checksum" in p for p in report.problems)


def test_missing_chunk_and_truncated_parquet_are_reported(cache):
    _first_shard_object(cache).unlink()
    manifest = json.loads((cache / "manifest.json").read_text())
    part = cache / manifest["shards"][0]["meta"]
    part.write_bytes(part.read_bytes()[:-10])
    problems = verify_cache(str(cache)).problems
    assert any("is missing" in p for p in problems)
    assert any("part-00000.parquet does not match" in p for p in problems)


def test_manifest_that_does_not_match_the_arrays(cache):
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["fields"]["images"]["shape"] = [9, 9, 3]
    (cache / "manifest.json").write_text(json.dumps(manifest))
    problems = verify_cache(str(cache)).problems
    assert any("manifest says uint8" in p for p in problems)


def test_verify_command_exits_nonzero_on_damage(cache):
    run = [sys.executable, "-m", "datakiln", "verify", str(cache)]
    assert subprocess.run(run, capture_output=True).returncode == 0
    _first_shard_object(cache).write_bytes(b"garbage")
    result = subprocess.run(run, capture_output=True, text=True)
    assert result.returncode == 1
    assert "DAMAGED" in result.stdout


def test_malformed_parquet_part_is_a_clear_error(cache):
    from datakiln.cache.open import open_cache
    from datakiln.errors import CacheFormatError

    manifest = json.loads((cache / "manifest.json").read_text())
    (cache / manifest["shards"][0]["meta"]).write_bytes(b"PAR1 not really parquet PAR1")
    with pytest.raises(CacheFormatError, match="not a readable Parquet file"):
        open_cache(str(cache)).metadata()


def _rewrite_markers(cache: Path, algorithm: str | None) -> None:
    """Re-sign every marker's objects with ``algorithm`` (None: a marker that names none)."""
    from datakiln.cache.fingerprint import LEGACY_CHECKSUM_ALGORITHM, content_hash

    manifest = json.loads((cache / "manifest.json").read_text())
    for shard in manifest["shards"]:
        path = cache / shard["marker"]
        marker = json.loads(path.read_text())
        used = algorithm or LEGACY_CHECKSUM_ALGORITHM
        marker["checksums"] = {
            key: None if value is None else content_hash((cache / key).read_bytes(), used)
            for key, value in marker["checksums"].items()
        }
        marker.pop("checksum_algorithm")
        if algorithm:
            marker["checksum_algorithm"] = algorithm
        path.write_text(json.dumps(marker))


def test_markers_name_their_algorithm_and_legacy_markers_still_verify(cache):
    manifest = json.loads((cache / "manifest.json").read_text())
    marker = json.loads((cache / manifest["shards"][0]["marker"]).read_text())
    assert marker["checksum_algorithm"] == "sha256"
    assert all(v is None or len(v) == 64 for v in marker["checksums"].values())
    _rewrite_markers(cache, None)  # as written before markers named the algorithm
    assert verify_cache(str(cache)).ok
    target = _first_shard_object(cache)
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01
    target.write_bytes(bytes(data))
    assert any("does not match its checksum" in p for p in verify_cache(str(cache)).problems)


def test_unknown_checksum_algorithm_is_reported(cache):
    manifest = json.loads((cache / "manifest.json").read_text())
    path = cache / manifest["shards"][0]["marker"]
    marker = json.loads(path.read_text())
    marker["checksum_algorithm"] = "md4"
    path.write_text(json.dumps(marker))
    assert any("unknown checksum algorithm 'md4'" in p for p in verify_cache(str(cache)).problems)
