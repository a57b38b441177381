"""The HTTP API against a real ``datakiln serve`` process: safety, bake once, cancel, restart."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from tests.conftest import write_small_images
from tests.service.conftest import TOKEN, Service, image_spec

from datakiln.cache.manifest import read_manifest
from datakiln.errors import SpecError
from datakiln.etl.spec import BakeSpec
from datakiln.service.db import JobDB
from datakiln.service.specs import SourcePolicy, check_cache_name


def _metric(svc: Service, name: str) -> float:
    status, text = svc.call("GET", "/metrics")
    assert status == 200
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_mutating_endpoints_need_the_token(service, raw_images):
    spec = {"spec": image_spec(raw_images)}
    assert service.call("POST", "/jobs", spec, token=None)[0] == 401
    assert service.call("POST", "/jobs", spec, token="wrong")[0] == 401
    assert service.call("POST", "/jobs", spec, token=TOKEN + "x")[0] == 401
    assert service.call("DELETE", "/jobs/abc", token=None)[0] == 401
    assert service.call("GET", "/health", token=None)[0] == 200
    assert service.call("GET", "/jobs", token=None) == (200, [])
    status, schema = service.call("GET", "/openapi.json", token=None)
    assert status == 200
    assert {"/jobs", "/jobs/{job_id}", "/caches", "/metrics"} <= set(schema["paths"])


def test_bad_spec_gets_422_with_the_cli_message(service, raw_images):
    bad = {**image_spec(raw_images), "imgae": {"height": 8}}
    status, body = service.call("POST", "/jobs", {"spec": bad})
    assert status == 422
    with pytest.raises(SpecError) as err:
        BakeSpec.from_dict({**bad, "output": "x"})
    assert body["detail"] == str(err.value)
    assert body["detail"] == "unknown field 'imgae' in the bake spec; did you mean 'image'?"
    status, body = service.call("POST", "/jobs", {"spec": image_spec(raw_images, shard_size=-1)})
    assert (status, "shard_size" in body["detail"]) == (422, True)
    status, body = service.call("POST", "/jobs", {"spec": image_spec(raw_images / "nothing")})
    assert status == 422


@pytest.mark.parametrize("name", ["../evil", "/etc/x", "a/../../b", "a//b", "s3://b/c", "a/./b"])
def test_cache_names_that_leave_the_root_are_refused(service, raw_images, name):
    status, body = service.call("POST", "/jobs", {"spec": image_spec(raw_images, output=name)})
    assert status == 422
    assert "cache name" in body["detail"]
    with pytest.raises(SpecError):
        check_cache_name(name)


def test_cache_paths_in_urls_are_checked(service):
    assert service.call("GET", "/caches/a%2F..%2F..%2Fetc")[0] == 400
    assert service.call("GET", "/caches/nothing-here")[0] == 404


def test_sources_outside_the_allowed_prefixes_are_refused(service, raw_images):
    for source in ("http://127.0.0.1:9/data", "memory://x/y", "relative/path"):
        status, body = service.call("POST", "/jobs", {"spec": {"sources": [source]}})
        assert status == 422, source
        assert source in body["detail"]
    status, body = service.call("POST", "/jobs", {"spec": {"sources": ["http://127.0.0.1:9/d"]}})
    assert "--allow-source" in body["detail"]
    status, body = service.call(
        "POST", "/jobs", {"spec": image_spec(raw_images, scheduler="tcp://x:1")}
    )
    assert (status, "service's to choose" in body["detail"]) == (422, True)


def test_source_policy_prefixes():
    policy = SourcePolicy(root="s3://caches/root", allow_prefixes=("http://h/allowed", "/data/raw"))
    policy.check(["s3://other-bucket/x", "http://h/allowed/a.png", "/data/raw/x"])
    for bad in ("http://h/allowedx/a.png", "http://h/allowed/../x", "/data/rawx", "gs://b/x"):
        with pytest.raises(SpecError):
            policy.check([bad])
    local = SourcePolicy(root="/srv/caches", root_filesystem=False)
    with pytest.raises(SpecError, match="outside the allowed prefixes"):
        local.check(["/srv/raw"])


def test_body_size_is_capped(service, raw_images):
    import http.client

    body = json.dumps({"spec": image_spec(raw_images, padding="x" * (2 << 20))}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    # the service may answer and close before reading it all
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        conn.request("POST", "/jobs", body=body, headers=headers)
    assert conn.getresponse().status == 413
    assert service.call("GET", "/jobs") == (200, [])


def test_identical_jobs_share_one_bake_and_one_url(service, raw_images):
    spec = {"spec": image_spec(raw_images)}
    answers: list[dict] = []

    def submit() -> None:
        status, job = service.call("POST", "/jobs", spec)
        assert status == 200, job
        answers.append(job)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({a["id"] for a in answers}) == 1
    assert len({a["cache"] for a in answers}) == 1
    job = service.wait_job(answers[0]["id"])
    assert job["state"] == "succeeded", job
    assert job["report"]["inputs"] == 41
    assert job["report"]["baked"] + job["report"]["rejected"] == 41
    assert job["cache"] == str(service.root / job["cache_key"])
    assert _metric(service, "datakiln_bakes_started_total") == 1
    assert read_manifest(job["cache"])["version"] == 1

    # an up-to-date cache: a new job succeeds at once, without a bake
    status, again = service.call("POST", "/jobs", spec)
    assert (status, again["state"], again["cache"]) == (200, "succeeded", job["cache"])
    assert again["report"]["up_to_date"] is True
    assert _metric(service, "datakiln_bakes_started_total") == 1

    name = job["cache_key"]
    status, info = service.call("GET", f"/caches/{name}")
    assert (status, info["counts"]["baked"]) == (200, job["report"]["baked"])
    status, listed = service.call("GET", "/caches")
    assert [c["name"] for c in listed] == [name]
    status, png = service.call("GET", f"/caches/{name}/preview.png")
    assert status == 200
    assert png.startswith(b"\x89PNG")
    assert _metric(service, 'datakiln_jobs{state="succeeded"}') == 2


def _big_corpus(root: Path, n: int = 1200) -> Path:
    raw = root / "big"
    write_small_images(raw, [f"c{k % 3}/{k:04d}.png" for k in range(n)])
    return raw


def _wait_progress(svc: Service, job_id: str, shards: int = 1) -> dict:
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = svc.call("GET", f"/jobs/{job_id}")[1]
        if job["progress"].get("shards_done", 0) >= shards or job["state"] not in (
            "queued",
            "running",
        ):
            return job
        time.sleep(0.05)
    raise TimeoutError(job)


@pytest.mark.slow
def test_cancel_stops_the_bake_commits_nothing_and_resumes(service, tmp_path):
    raw = _big_corpus(tmp_path)
    spec = {"spec": image_spec(raw, shard_size=4, output="big")}
    job = service.call("POST", "/jobs", spec)[1]
    running = _wait_progress(service, job["id"])
    assert running["state"] == "running", running
    assert running["progress"]["shards_total"] == 300
    status, _cancelled = service.call("DELETE", f"/jobs/{job['id']}")
    assert status == 200
    final = service.wait_job(job["id"])
    assert final["state"] == "cancelled", final
    store = service.root / "big"
    assert not (store / "manifest.json").exists()
    assert not (store / "_lease.json").exists()  # released: the next bake need not wait
    # resumable: the same spec again skips the shards the cancelled bake finished
    again = service.call("POST", "/jobs", spec)[1]
    assert again["id"] != job["id"]
    done = service.wait_job(again["id"])
    assert done["state"] == "succeeded", done
    assert done["report"]["shards_skipped"] >= 1
    assert done["report"]["baked"] == 1200


@pytest.mark.slow
def test_kill_9_then_restart_keeps_every_job_and_resumes_the_running_one(tmp_path, raw_images):
    svc = Service(root=tmp_path / "caches", state_dir=tmp_path / "state", log=tmp_path / "log")
    svc.start()
    try:
        small = svc.call("POST", "/jobs", {"spec": image_spec(raw_images, output="small")})[1]
        assert svc.wait_job(small["id"])["state"] == "succeeded"
        raw = _big_corpus(tmp_path)
        big = svc.call("POST", "/jobs", {"spec": image_spec(raw, shard_size=4, output="big")})[1]
        assert _wait_progress(svc, big["id"])["state"] == "running"
        queued = svc.call("POST", "/jobs", {"spec": image_spec(raw_images, output="after")})[1]
        doomed = svc.call("POST", "/jobs", {"spec": image_spec(raw, shard_size=4, output="big")})
        assert doomed[1]["id"] == big["id"]  # shared with the running job
        os.kill(svc.proc.pid, signal.SIGKILL)
        svc.proc.wait()
    finally:
        svc.stop()

    svc.start()
    try:
        jobs = {j["id"]: j for j in svc.call("GET", "/jobs")[1]}
        assert set(jobs) == {small["id"], big["id"], queued["id"]}
        assert jobs[small["id"]]["state"] == "succeeded"
        assert jobs[big["id"]]["state"] in ("queued", "running")
        resumed = svc.wait_job(big["id"])
        assert resumed["state"] == "succeeded", resumed
        assert resumed["attempts"] == 2
        assert resumed["report"]["shards_skipped"] >= 1
        assert resumed["report"]["baked"] == 1200
        assert svc.wait_job(queued["id"])["state"] == "succeeded"
    finally:
        svc.stop()
    _assert_token_nowhere(tmp_path)


def _assert_token_nowhere(tmp_path: Path) -> None:
    """The token reaches neither the logs nor the job database nor any file the service wrote."""
    checked = 0
    for path in tmp_path.rglob("*"):
        if path.is_file() and "big" not in path.parts and "raw" not in path.parts:
            assert TOKEN.encode() not in path.read_bytes(), path
            checked += 1
    assert (tmp_path / "state" / "jobs.sqlite3").exists()
    assert checked >= 3


def test_token_is_not_in_logs_or_database(service, raw_images, tmp_path):
    job = service.call("POST", "/jobs", {"spec": image_spec(raw_images)})[1]
    assert service.wait_job(job["id"])["state"] == "succeeded"
    assert service.call("POST", "/jobs", {"spec": {"imgae": 1}}, token="wrong-guess")[0] == 401
    service.stop()
    _assert_token_nowhere(tmp_path)
    logs = list((tmp_path / "state" / "logs").glob("*.log"))
    assert logs, "each bake keeps a log"
    assert "wrong-guess" not in (tmp_path / "log").read_text()
    rows = json.dumps([r.to_dict() for r in JobDB(tmp_path / "state").all()])
    assert TOKEN not in rows
    assert job["id"] in rows


def test_jobs_queue_beyond_the_concurrency_limit(tmp_path, raw_images):
    svc = Service(
        root=tmp_path / "caches",
        state_dir=tmp_path / "state",
        log=tmp_path / "log",
        extra=("--max-concurrent", "1"),
    )
    svc.start()
    try:
        ids = [
            svc.call("POST", "/jobs", {"spec": image_spec(raw_images, output=f"c{k}")})[1]["id"]
            for k in range(3)
        ]
        most = 0
        while True:
            jobs = svc.call("GET", "/jobs")[1]
            states = [j["state"] for j in jobs]
            most = max(most, states.count("running"))
            if all(s == "succeeded" for s in states):
                break
            assert "failed" not in states, jobs
            time.sleep(0.05)
        assert most == 1
        assert [j["id"] for j in jobs] == ids
        finished = [j["finished"] for j in jobs]
        started = [j["started"] for j in jobs]
        assert started[1] >= finished[0]
        assert started[2] >= finished[1]
    finally:
        svc.stop()


def test_the_lease_keeps_a_cli_bake_and_a_service_bake_apart(service, raw_images):
    from datakiln.etl.lease import StoreLease

    store = service.root / "leased"
    store.mkdir(parents=True)
    with StoreLease(str(store)):  # what a CLI bake of the same store holds while it runs
        job = service.call("POST", "/jobs", {"spec": image_spec(raw_images, output="leased")})[1]
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            now = service.call("GET", f"/jobs/{job['id']}")[1]
            assert now["state"] in ("queued", "running")
            assert not (store / "manifest.json").exists()
            time.sleep(0.2)
    done = service.wait_job(job["id"])
    assert done["state"] == "succeeded", done
    assert done["report"]["baked"] == 40
