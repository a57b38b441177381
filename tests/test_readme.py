"""Every example of the README's walkthrough runs, top to bottom, in one folder.

``sh`` blocks run line by line (``.venv/bin/datakiln`` becomes this interpreter's
``python -m datakiln``; ``make`` lines are the quick start, which CI runs itself); ``python``
blocks run in one namespace; a ``toml`` block is written to the file its first comment names.
``console`` blocks (Docker) are run by ``docker/smoke-test.sh`` instead. The S3 example runs
against the moto server with the standard AWS environment variables.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    walkthrough = text.split("## Five minutes with datakiln", 1)[1].split("\n## More", 1)[0]
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(walkthrough)]


@pytest.fixture
def photos(tmp_path, monkeypatch):
    from datakiln.testing.image_corpus import write_image_corpus

    write_image_corpus(tmp_path / "photos", n=207, seed=3, broken=3)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def aws_env(s3_options, photos, monkeypatch):
    """The README's bucket on the moto server, holding photos/ under raw/."""
    import s3fs

    _, options = s3_options
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("my-bucket")
    for path in (photos / "photos").rglob("*"):
        if path.is_file():
            fs.pipe_file(f"my-bucket/raw/{path.relative_to(photos / 'photos')}", path.read_bytes())
    env = {
        "AWS_ACCESS_KEY_ID": options["key"],
        "AWS_SECRET_ACCESS_KEY": options["secret"],
        "AWS_ENDPOINT_URL": options["endpoint_url"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    return env


def _run_sh(line: str, cwd: Path) -> None:
    words = shlex.split(line)
    if words[0] in (".venv/bin/datakiln", "datakiln"):
        words = [sys.executable, "-m", "datakiln", *words[1:]]
    result = subprocess.run(
        words, cwd=cwd, capture_output=True, text=True, timeout=600, env=os.environ.copy()
    )
    assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr


def test_readme_walkthrough_runs(photos, aws_env):
    blocks = _blocks()
    assert {kind for kind, _ in blocks} >= {"sh", "python", "toml", "console"}
    namespace: dict[str, object] = {}
    ran = 0
    for kind, body in blocks:
        if kind == "sh":
            for line in body.splitlines():
                line = line.split("  #", 1)[0].strip()
                if line and not line.startswith(("#", "make ")):
                    _run_sh(line, photos)
                    ran += 1
        elif kind == "python":
            exec(compile(body, "README.md", "exec"), namespace)  # the README's own example
            ran += 1
        elif kind == "toml":
            name = body.splitlines()[0].lstrip("# ").split(":", 1)[0]
            (photos / name).write_text(body)
    assert ran >= 14
    assert (photos / "preview.png").stat().st_size > 10_000
    assert namespace["report"].baked == 207
    assert len(namespace["next_batch"]["images"]) == 32
