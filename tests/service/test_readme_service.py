"""The README's "Run it as a service" section runs: its two lines start a service, the
Client example gets a cache from it, and ``datakiln.ensure`` finds the same cache baked."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import _free_port

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def _section() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    body = text.split("\n## Run it as a service\n", 1)[1].split("\n## ", 1)[0]
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(body)]


def test_readme_service_section_runs(tmp_path, monkeypatch):
    from datakiln.testing.image_corpus import write_image_corpus

    write_image_corpus(tmp_path / "photos", n=30, seed=4, broken=1)
    monkeypatch.chdir(tmp_path)
    port = str(_free_port())
    blocks = _section()
    assert [kind for kind, _ in blocks] == ["sh", "python", "python"]
    env = {**os.environ, "DATAKILN_JAX_CACHE": ""}
    server = None
    try:
        for line in blocks[0][1].strip().splitlines():
            words = shlex.split(line.replace("8765", port))
            if words[0] == "export":
                name, value = words[1].split("=", 1)
                env[name] = value
                monkeypatch.setenv(name, value)
                continue
            assert words[:2] == [".venv/bin/datakiln", "serve"]
            log = (tmp_path / "serve.log").open("wb")
            server = subprocess.Popen(
                [sys.executable, "-m", "datakiln", *words[1:]], env=env, stdout=log, stderr=log
            )
        url = f"http://127.0.0.1:{port}/health"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline
                time.sleep(0.2)
        namespace: dict[str, object] = {}
        code = blocks[1][1].replace("8765", port)
        exec(compile(code, "README.md", "exec"), namespace)  # the README's own example
        assert len(namespace["dataset"]) == 30
        assert Path(namespace["url"]).parent == tmp_path / "caches"
        exec(compile(blocks[2][1], "README.md", "exec"), namespace)
        assert len(namespace["dataset"]) == 30
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    assert env["DATAKILN_TOKEN"] not in (tmp_path / "serve.log").read_text()
