"""benchmarks/harness.py: turns, medians, the JSON record, fresh processes, launch settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import harness

    return harness


def test_alternate_takes_turns_and_rotates(harness):
    calls: list[str] = []

    def variant(name: str, value: float):
        def run() -> float:
            calls.append(name)
            return value

        return run

    variants = {"a": variant("a", 1.0), "b": variant("b", 2.0), "c": variant("c", 3.0)}
    figures = harness.alternate(variants, 2, warmup=True)
    assert calls == ["a", "b", "c"] + ["a", "b", "c"] * 2
    assert figures == {"a": [1.0, 1.0], "b": [2.0, 2.0], "c": [3.0, 3.0]}

    calls.clear()
    harness.alternate(variants, 3, rotate=True)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_recorder_writes_runs_medians_ratios_and_the_machine(harness, tmp_path: Path):
    record = harness.Recorder("bench_example")
    record.extend({"ours": [10.0, 30.0, 20.0], "theirs": [5.0, 10.0, 20.0]}, "items/s")
    record.add("memory", float("nan"), "MiB")
    record.ratio("ours_vs_theirs", "ours", "theirs")
    record.ratio("missing", "ours", "nobody")
    record.facts["size"] = 64
    path = record.write(tmp_path, also=str(tmp_path / "copy.json"))

    assert path == tmp_path / "bench_example.json"
    written = json.loads(path.read_text())
    assert written == json.loads((tmp_path / "copy.json").read_text())
    assert written["runs"]["ours"] == [10.0, 30.0, 20.0]
    assert written["medians"]["ours"] == 20.0
    assert written["units"] == {"ours": "items/s", "theirs": "items/s", "memory": "MiB"}
    assert written["ratios"] == {"ours_vs_theirs": 2.0}  # no ratio for a missing figure
    assert written["paired_ratios"]["ours_vs_theirs"] == [2.0, 3.0, 1.0]
    assert written["runs"]["memory"] == [None]  # NaN is not JSON
    assert written["facts"] == {"size": 64}
    machine = written["machine"]
    assert machine["cpus"] == os.cpu_count()
    assert len(machine["load_before"]) == len(machine["load_after"]) == 3
    assert machine["versions"]["numpy"]
    assert written["command"].startswith("python ")


def _module(tmp_path: Path) -> Path:
    source = textwrap.dedent(
        """
        import os
        import sys


        def answer(a, b):
            print("noise on stdout")
            return {"sum": a + b, "setting": os.environ.get("HARNESS_TEST_SETTING")}


        def fail():
            print("it went wrong", file=sys.stderr)
            raise SystemExit(3)
        """
    )
    module = tmp_path / "spawned_module.py"
    module.write_text(source)
    return module


def test_spawn_runs_a_function_in_a_fresh_process(harness, tmp_path: Path, monkeypatch):
    monkeypatch.syspath_prepend(str(_module(tmp_path).parent))
    import spawned_module

    env = {**os.environ, "HARNESS_TEST_SETTING": "on"}
    assert harness.spawn(spawned_module.answer, 2, 3, env=env) == {"sum": 5, "setting": "on"}
    with pytest.raises(RuntimeError, match="it went wrong"):
        harness.spawn(spawned_module.fail)


def test_require_env_restarts_the_process_with_the_settings(tmp_path: Path):
    script = tmp_path / "launch.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys
            sys.path.insert(0, {str(ROOT / "benchmarks")!r})
            import harness
            print("start", os.environ.get("HARNESS_TEST_THREADS"), flush=True)
            harness.require_env({{"HARNESS_TEST_THREADS": "1"}})
            print("running with", os.environ["HARNESS_TEST_THREADS"], sys.argv[1:])
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_TEST_THREADS"}
    out = subprocess.run(
        [sys.executable, str(script), "--flag"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["start None", "start 1", "running with 1 ['--flag']"]
