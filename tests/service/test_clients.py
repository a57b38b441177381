"""``Client`` against a real service, and ``ensure`` from several processes with no service."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from tests.conftest import write_small_images
from tests.service.conftest import TOKEN, image_spec

import datakiln
from datakiln.cache.manifest import read_manifest
from datakiln.errors import SpecError
from datakiln.service.client import JobFailedError, ServiceError


def test_client_submit_status_wait_ensure(service, raw_images):
    client = datakiln.Client(service.url, token=TOKEN)
    assert TOKEN not in repr(client)
    job = client.submit(image_spec(raw_images, output="pets"))
    assert job["state"] in ("queued", "running")
    seen: list[str] = []
    done = client.wait(job["id"], progress=lambda j: seen.append(j["state"]), poll_s=0.1)
    assert done["state"] == "succeeded"
    assert seen[-1] == "succeeded"
    assert client.status(job["id"])["report"]["baked"] == done["report"]["baked"]
    url = client.ensure(image_spec(raw_images, output="pets"))
    assert url == done["cache"]
    dataset = datakiln.open_cache(url)
    assert len(dataset) == done["report"]["baked"]
    assert next(j["id"] for j in client.jobs()) == job["id"]

    with pytest.raises(SpecError, match="did you mean 'image'"):
        client.submit({**image_spec(raw_images), "imgae": {}})
    with pytest.raises(ServiceError, match="401"):
        datakiln.Client(service.url, token="wrong").submit(image_spec(raw_images))


def test_client_cancel(service, tmp_path):
    raw = tmp_path / "many"
    write_small_images(raw, [f"c/{k:04d}.png" for k in range(600)])
    client = datakiln.Client(service.url, token=TOKEN)
    job = client.submit(image_spec(raw, shard_size=4))
    cancelled = client.cancel(job["id"])
    assert cancelled["id"] == job["id"]
    with pytest.raises(JobFailedError, match="cancelled"):
        client.wait(job["id"], timeout_s=120, poll_s=0.1)
    assert not (Path(job["cache"]) / "manifest.json").exists()


def _ensure_in_process(spec: dict, root: str, queue: multiprocessing.Queue) -> None:
    from datakiln.service.ensure import ensure_report

    report = ensure_report(spec, root=root)
    queue.put((report.url, report.up_to_date))


def test_ensure_from_4_processes_bakes_once(tmp_path, raw_images):
    spec = image_spec(raw_images)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    root = str(tmp_path / "caches")
    procs = [context.Process(target=_ensure_in_process, args=(spec, root, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    urls = {url for url, _ in results}
    assert len(urls) == 1
    assert sorted(up for _, up in results) == [False, True, True, True]
    url = urls.pop()
    assert Path(url).parent == Path(root)
    assert read_manifest(url)["version"] == 1  # one commit: one bake
    assert datakiln.ensure(spec, root=root) == url
    assert len(datakiln.open_cache(datakiln.ensure(spec, root=root))) == 40


def test_ensure_needs_a_root_without_output(raw_images):
    with pytest.raises(SpecError, match="root="):
        datakiln.ensure(image_spec(raw_images))
