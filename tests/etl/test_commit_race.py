"""Racing commits: compare-and-swap on S3, a lost race fails cleanly and overwrites nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from tests.conftest import write_small_images

import datakiln.etl.bake as bake_module
from datakiln.cache.manifest import commit_manifest, read_manifest
from datakiln.cache.open import open_cache
from datakiln.cache.verify import verify_cache
from datakiln.errors import CommitConflictError
from datakiln.etl.bake import bake
from datakiln.etl.spec import BakeSpec, ImageParams


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    write_small_images(root, [f"k{k % 2}/{k:03d}.png" for k in range(20)])
    (root / "k0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


def _spec(raw: Path, url: str, options: dict | None, size: int = 8) -> BakeSpec:
    return BakeSpec(
        sources=(str(raw),),
        output=url,
        output_storage_options=options or {},
        shard_size=4,
        scheduler="threads",
        image=ImageParams(height=size, width=size, labels="parent"),
    )


def _store(kind: str, tmp_path: Path, request) -> tuple[str, dict | None]:
    if kind == "local":
        return str(tmp_path / "store"), None
    url, options = request.getfixturevalue("s3_options")
    return f"{url}/store", options


@pytest.mark.parametrize("store", ["local", "s3"])
def test_a_lost_commit_race_fails_cleanly(store, raw, tmp_path, request, monkeypatch):
    """Bake A is about to commit when bake B (forcing the lease) commits first."""
    url, options = _store(store, tmp_path, request)
    real_commit = bake_module.commit_manifest
    calls = []

    def commit_after_a_rival(url_, manifest, storage_options=None):
        calls.append(manifest["cache_key"])
        if len(calls) == 1:  # bake A, before its commit: B runs to the end
            assert bake(_spec(raw, url, options, size=6), force_unlock=True).baked == 20
        real_commit(url_, manifest, storage_options)

    monkeypatch.setattr(bake_module, "commit_manifest", commit_after_a_rival)
    with pytest.raises(CommitConflictError, match="nothing was overwritten"):
        bake(_spec(raw, url, options))
    rival = read_manifest(url, options)
    assert rival["version"] == 1
    assert rival["cache_key"] == calls[1] != calls[0]
    assert verify_cache(url, options).ok
    monkeypatch.setattr(bake_module, "commit_manifest", real_commit)
    again = bake(_spec(raw, url, options))  # the same command again bakes on top
    assert again.baked == 20
    assert read_manifest(url, options)["version"] == 2
    assert verify_cache(url, options).ok


def test_racing_commits_on_s3_have_one_winner(raw, s3_serial_options):
    url, options = s3_serial_options
    url = f"{url}/store"
    bake(_spec(raw, url, options))
    base = read_manifest(url, options)
    outcomes: list[str] = []
    barrier = threading.Barrier(20)

    def commit(k: int) -> None:
        manifest = {**base, "version": base["version"] + 1, "created": f"racer-{k}"}
        barrier.wait()
        try:
            commit_manifest(url, manifest, options)
            outcomes.append(f"racer-{k}")
        except CommitConflictError:
            outcomes.append("lost")

    threads = [threading.Thread(target=commit, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o != "lost"]
    assert len(outcomes) == 20
    assert len(winners) == 1
    assert read_manifest(url, options)["created"] == winners[0]


def test_twenty_racing_bakes_on_one_s3_store(raw, s3_serial_options):
    url, options = s3_serial_options
    url = f"{url}/store"
    reports, errors = [], []
    barrier = threading.Barrier(20)

    def run() -> None:
        barrier.wait()
        try:
            reports.append(bake(_spec(raw, url, options), lease_wait_s=300))
        except Exception as err:  # every bake must succeed: record, then fail below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r.up_to_date for r in reports) == [False] + [True] * 19
    manifest = read_manifest(url, options)
    assert manifest["version"] == 1
    assert manifest["counts"] == {"inputs": 21, "baked": 20, "rejected": 1, "blank": 0}
    assert verify_cache(url, options).ok
    uris = open_cache(url, storage_options=options).metadata().column("uri").to_pylist()
    assert len(uris) == len(set(uris)) == 20
