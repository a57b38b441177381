"""A real ``datakiln serve`` process per test, on a free loopback port, with its own folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the service needs the datakiln[service] extra")

from tests.conftest import _free_port, write_small_images

TOKEN = "s3cret-token-for-tests-7f1c9a"


@dataclass
class Service:
    """A running service process and how to talk to it."""

    root: Path
    state_dir: Path
    log: Path
    port: int = field(default_factory=_free_port)
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Service:
        env = {**os.environ, "DATAKILN_TOKEN": TOKEN, "DATAKILN_JAX_CACHE": ""}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "datakiln",
                    "serve",
                    "--root",
                    str(self.root),
                    "--state-dir",
                    str(self.state_dir),
                    "--port",
                    str(self.port),
                    "--scheduler",
                    "threads",
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.call("GET", "/health")
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"service did not start:\n{self.log.read_text()}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = TOKEN
    ) -> tuple[int, Any]:
        """(status, decoded JSON or bytes) of one request."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw, kind = response.status, response.read(), response.headers
        except urllib.error.HTTPError as err:
            status, raw, kind = err.code, err.read(), err.headers
        if kind.get("content-type", "").startswith("application/json"):
            return status, json.loads(raw)
        return status, raw

    def wait_job(self, job_id: str, timeout_s: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            status, job = self.call("GET", f"/jobs/{job_id}")
            assert status == 200, job
            if job["state"] not in ("queued", "running"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job still {job['state']}: {job}")
            time.sleep(0.2)


@pytest.fixture
def raw_images(tmp_path: Path) -> Path:
    """40 small PNGs in two class folders, plus one broken file."""
    raw = tmp_path / "raw"
    write_small_images(raw, [f"c{k % 2}/{k:03d}.png" for k in range(40)])
    (raw / "c0" / "broken.png").write_bytes(b"not a png at all")
    return raw


@pytest.fixture
def service(tmp_path: Path):
    svc = Service(root=tmp_path / "caches", state_dir=tmp_path / "state", log=tmp_path / "log")
    yield svc.start()
    svc.stop()


def image_spec(raw: Path, **extra: Any) -> dict[str, Any]:
    return {
        "sources": [str(raw)],
        "shard_size": 8,
        "image": {"height": 16, "width": 16, "labels": "parent"},
        **extra,
    }
