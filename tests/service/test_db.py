"""The job database: versioned schema, round trips, and what a restart reads back."""

from __future__ import annotations

import sqlite3

import pytest

from datakiln.service.db import DB_FILE, SCHEMA_VERSION, JobDB, JobRecord


def _record(**changes) -> JobRecord:
    base = JobRecord(
        id="abc123",
        state="running",
        spec={"sources": ["/data/x"], "output": "/caches/k"},
        output="/caches/k",
        cache_key="k" * 64,
        created=1.5,
        progress={"inputs_done": 3, "inputs_total": 9},
        watch_interval_s=60.0,
    )
    return base.evolve(**changes)


def test_jobs_round_trip_and_survive_reopening(tmp_path):
    db = JobDB(tmp_path)
    assert db.schema_version == SCHEMA_VERSION
    db.put(_record())
    db.put(_record(id="def456", state="succeeded", created=2.0, report={"baked": 9}))
    db.put(_record(state="failed", error="BakeError: boom"))  # replaces abc123
    db.close()
    again = JobDB(tmp_path)
    jobs = again.all()
    assert [j.id for j in jobs] == ["abc123", "def456"]
    assert jobs[0] == _record(state="failed", error="BakeError: boom")
    assert jobs[1].report == {"baked": 9}
    assert again.get("nope") is None
    again.close()


def test_a_newer_schema_is_refused(tmp_path):
    JobDB(tmp_path).close()
    with sqlite3.connect(tmp_path / DB_FILE) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(RuntimeError, match="upgrade datakiln"):
        JobDB(tmp_path)


def test_states_are_checked():
    with pytest.raises(ValueError, match="job state"):
        _record(state="done")
