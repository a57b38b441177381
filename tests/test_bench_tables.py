"""BENCHMARKS.md's tables are what benchmarks/results/*.json say (benchmarks/tables.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT / "benchmarks" / "tables.py"


@pytest.fixture
def tables(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import tables

    return tables


def _result(bake: list[float]) -> dict:
    """A minimal bench_bake_images record, as harness.Recorder writes one."""
    runs = {"pillow_decode": [800.0, 820.0], "pillow_draft": [1500.0, 1600.0], "bake": bake}
    medians = {k: sum(v) / len(v) for k, v in runs.items()}
    return {
        "bench": "bench_bake_images",
        "command": "python benchmarks/bench_bake_images.py --runs 2",
        "date": "2026-12-06T20:00:00+00:00",
        "machine": {
            "cpus": 2,
            "load_before": [1.5, 1.0, 0.5],
            "load_after": [2.25, 1.0, 0.5],
            "git_commit": "0123456789abcdef",
        },
        "runs": runs,
        "medians": medians,
        "ratios": {
            "bake_vs_draft": medians["bake"] / medians["pillow_draft"],
            "bake_vs_decode": medians["bake"] / medians["pillow_decode"],
        },
        "paired_ratios": {},
        "facts": {"size": 64},
    }


def test_benchmarks_md_matches_its_json_results():
    check = subprocess.run(
        [sys.executable, str(TABLES), "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_tables_fill_markers_keep_prose_and_check_catches_edits(tables, tmp_path: Path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "bench_bake_images.json").write_text(json.dumps(_result([1200.0, 1300.0])))
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("Prose before.\n\n<!-- table:bench_bake_images -->\n<!-- /table -->\n\nAfter.\n")
    args = ["--doc", str(doc), "--results", str(results)]

    assert tables.main([*args, "--check"]) == 1  # the empty table differs from the JSON
    assert tables.main(args) == 0
    text = doc.read_text()
    assert text.startswith("Prose before.\n\n<!-- table:bench_bake_images -->\n| what |")
    assert text.endswith("<!-- /table -->\n\nAfter.\n")
    assert "| 1,250 | 1,200 / 1,300 |" in text  # median and every run of the bake
    assert "**0.81×**" in text  # 1,250 / 1,550
    assert "load average 1.50 before, 2.25 after" in text
    assert tables.main([*args, "--check"]) == 0

    doc.write_text(text.replace("1,200 / 1,300", "1,900 / 1,300"))  # a hand edit
    assert tables.main([*args, "--check"]) == 1
    (results / "bench_bake_images.json").write_text(json.dumps(_result([1250.0, 1250.0])))
    assert tables.main(args) == 0
    assert "| 1,250 | 1,250 / 1,250 |" in doc.read_text()


def test_a_table_without_results_names_the_benchmark_to_run(tables, tmp_path: Path):
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("<!-- table:bench_records -->\n<!-- /table -->\n")
    with pytest.raises(SystemExit, match=r"run benchmarks/bench_records\.py first"):
        tables.main(["--doc", str(doc), "--results", str(tmp_path), "--check"])


def test_an_unknown_table_is_an_error(tables, tmp_path: Path):
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("<!-- table:bench_nothing -->\n<!-- /table -->\n")
    with pytest.raises(SystemExit, match="bench_nothing"):
        tables.main(["--doc", str(doc), "--results", str(tmp_path), "--check"])
