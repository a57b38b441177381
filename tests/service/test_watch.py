"""Watch: new files become an incremental version, from Python, the CLI and the service."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from tests.conftest import write_small_images
from tests.service.conftest import Service, image_spec

import datakiln
from datakiln.cache.manifest import read_manifest
from datakiln.etl.spec import BakeSpec, ImageParams
from datakiln.service.watch import watch


def _wait_until(check, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError("condition not met")


def _version(url: str) -> int:
    try:
        return read_manifest(url)["version"]
    except FileNotFoundError:
        return 0


def test_watch_bakes_new_files_as_a_new_version(tmp_path):
    raw = tmp_path / "raw"
    write_small_images(raw, [f"c0/{k:03d}.png" for k in range(12)])
    out = str(tmp_path / "cache")
    spec = BakeSpec(
        sources=(str(raw),),
        output=out,
        shard_size=8,
        scheduler="threads",
        image=ImageParams(height=8, width=8),
    )
    stop = threading.Event()
    reports = []
    thread = threading.Thread(
        target=watch,
        args=(spec,),
        kwargs={"interval_s": 0.2, "stop": stop, "on_bake": reports.append},
    )
    thread.start()
    try:
        _wait_until(lambda: _version(out) == 1)
        pinned = datakiln.open_cache(out)
        assert len(pinned) == 12
        write_small_images(raw, [f"c1/{k:03d}.png" for k in range(5)], seed=1)
        _wait_until(lambda: _version(out) == 2)
        time.sleep(0.6)  # a few more rounds: nothing new, no more bakes
    finally:
        stop.set()
        thread.join()
    assert len(reports) == 2
    assert reports[1].baked == 17
    assert reports[1].shards_skipped == 2  # both shards of version 1 kept: incremental
    assert len(pinned) == 12  # an open dataset keeps its version
    assert len(datakiln.open_cache(out)) == 17  # a re-open sees the new one
    assert _version(out) == 2


def test_watch_command(tmp_path):
    raw = tmp_path / "raw"
    write_small_images(raw, [f"c0/{k:03d}.png" for k in range(6)])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "datakiln",
            "watch",
            str(raw),
            "--out",
            str(tmp_path / "c"),
            "--size",
            "8",
            "--interval",
            "0.1",
            "--rounds",
            "3",
            "--scheduler",
            "threads",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "watch: 1 bakes" in result.stdout
    assert "inputs 6 = baked 6 + rejected 0" in result.stdout


def test_service_watch_picks_up_new_files_and_survives_a_restart(tmp_path):
    raw = tmp_path / "raw"
    write_small_images(raw, [f"c0/{k:03d}.png" for k in range(10)])
    svc = Service(root=tmp_path / "caches", state_dir=tmp_path / "state", log=tmp_path / "log")
    svc.start()
    try:
        body = {"spec": image_spec(raw, output="watched"), "watch": {"interval_s": 1}}
        job = svc.call("POST", "/jobs", body)[1]
        assert job["watch"]["interval_s"] == 1
        first = svc.wait_job(job["id"])
        assert (first["state"], first["report"]["baked"]) == ("succeeded", 10)
        write_small_images(raw, [f"c1/{k:03d}.png" for k in range(4)], seed=2)
        second = _wait_until(
            lambda: (
                (j := svc.call("GET", f"/jobs/{job['id']}")[1])["attempts"] == 2
                and j["state"] == "succeeded"
                and j
            )
        )
        assert second["report"]["baked"] == 14
    finally:
        svc.stop()
    svc.start()
    try:
        write_small_images(raw, [f"c2/{k:03d}.png" for k in range(3)], seed=3)
        third = _wait_until(
            lambda: (
                (j := svc.call("GET", f"/jobs/{job['id']}")[1])["attempts"] == 3
                and j["state"] == "succeeded"
                and j
            )
        )
        assert third["report"]["baked"] == 17
        assert read_manifest(str(tmp_path / "caches" / "watched"))["version"] == 3
        cancelled = svc.call("DELETE", f"/jobs/{job['id']}")[1]
        assert cancelled["watch"] is None
    finally:
        svc.stop()
