"""Bakes on a real ``distributed`` cluster of worker processes, including losing a worker."""

from __future__ import annotations

import os
import signal

import pytest
from distributed import Client, LocalCluster
from tests.conftest import write_small_images

from datakiln.cache.open import open_cache
from datakiln.cache.verify import verify_cache
from datakiln.etl.bake import bake
from datakiln.etl.spec import BakeSpec, ImageParams


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    write_small_images(root, [f"c{k % 2}/{k:03d}.png" for k in range(40)])
    (root / "c0" / "bad.png").write_bytes(b"nope")
    return root


def test_bake_on_a_cluster_matches_the_local_bake(cluster, raw, tmp_path):
    image = ImageParams(height=8, width=8, labels="parent")
    remote = bake(
        BakeSpec(
            sources=(str(raw),),
            output=str(tmp_path / "a"),
            shard_size=4,
            image=image,
            scheduler=cluster.scheduler_address,
        )
    )
    local = bake(
        BakeSpec(sources=(str(raw),), output=str(tmp_path / "b"), shard_size=4, image=image)
    )
    assert remote.summary_line() == local.summary_line() == "inputs 41 = baked 40 + rejected 1"
    a, b = open_cache(str(tmp_path / "a")), open_cache(str(tmp_path / "b"))
    idx = list(range(len(a)))
    assert (a.get_batch(indices=idx)["images"] == b.get_batch(indices=idx)["images"]).all()


def test_killed_worker_neither_fails_nor_duplicates(cluster, raw, tmp_path):
    killed = []

    def kill_one_worker(event):
        if killed or event["shards_done"] < 2:
            return
        with Client(cluster.scheduler_address) as client:
            pids = client.run(os.getpid)
        victim = sorted(pids.values())[0]
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)

    spec = BakeSpec(
        sources=(str(raw),),
        output=str(tmp_path / "c"),
        shard_size=2,
        image=ImageParams(height=8, width=8),
        scheduler=cluster.scheduler_address,
    )
    report = bake(spec, progress=kill_one_worker)
    assert killed
    assert report.summary_line() == "inputs 41 = baked 40 + rejected 1"
    assert verify_cache(spec.output).ok
    uris = open_cache(spec.output).metadata().column("uri").to_pylist()
    assert len(uris) == len(set(uris)) == 40


def test_workers_flag_starts_a_local_cluster(raw, tmp_path):
    spec = BakeSpec(
        sources=(str(raw),),
        output=str(tmp_path / "d"),
        shard_size=8,
        image=ImageParams(height=8, width=8),
        workers=2,
    )
    assert bake(spec).baked == 40
