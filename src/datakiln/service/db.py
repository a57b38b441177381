"""The service's job database: one SQLite file under the state directory.

Jobs must outlive the service process: after a crash or a ``kill -9`` the restarted service
lists every job with its last state and resumes the ones that were running. SQLite in WAL
mode gives that with one file and no server. The schema is versioned (``schema_version``
table); ``MIGRATIONS`` holds one SQL script per version, applied in order at open.

The spec stored is ``BakeSpec.to_dict()`` plus the service's own fields: it never holds
storage options (credentials) and the service never writes its token here.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NotRequired, TypedDict

DB_FILE = "jobs.sqlite3"
STATES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE_STATES = ("queued", "running")

# One script per schema version; version N is reached by running scripts 1..N.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        spec TEXT NOT NULL,
        output TEXT NOT NULL,
        cache_key TEXT NOT NULL,
        created REAL NOT NULL,
        started REAL,
        finished REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        progress TEXT NOT NULL DEFAULT '{}',
        report TEXT,
        error TEXT,
        watch_interval_s REAL,
        next_check REAL
    );
    CREATE INDEX jobs_by_state ON jobs (state);
    CREATE INDEX jobs_by_output ON jobs (output);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class JobWatch(TypedDict):
    """A watched job's schedule: seconds between listings, and when the next one is due."""

    interval_s: float
    next_check: float | None


class JobView(TypedDict):
    """A job as the service's API shows it (``GET /jobs/{id}``, ``Client.status``)."""

    id: str
    state: str
    spec: dict[str, Any]
    cache: str  # the cache's URL
    cache_key: str
    created: float
    started: float | None
    finished: float | None
    attempts: int
    progress: dict[str, Any]
    report: dict[str, Any] | None
    error: str | None
    watch: JobWatch | None
    eta_s: NotRequired[float | None]  # added by the API: seconds left at the rate so far


@dataclass(frozen=True, kw_only=True)
class JobRecord:
    """One job as stored: what to bake, where, and how far it got."""

    id: str
    state: str
    spec: Mapping[str, Any]
    output: str
    cache_key: str
    created: float
    started: float | None = None
    finished: float | None = None
    attempts: int = 0
    progress: Mapping[str, Any] = field(default_factory=dict)
    report: Mapping[str, Any] | None = None
    error: str | None = None
    watch_interval_s: float | None = None
    next_check: float | None = None

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"job state must be one of {STATES}; got {self.state!r}")

    def evolve(self, **changes: Any) -> JobRecord:
        return replace(self, **changes)

    def to_dict(self) -> JobView:
        return {
            "id": self.id,
            "state": self.state,
            "spec": dict(self.spec),
            "cache": self.output,
            "cache_key": self.cache_key,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "attempts": self.attempts,
            "progress": dict(self.progress),
            "report": dict(self.report) if self.report is not None else None,
            "error": self.error,
            "watch": {"interval_s": self.watch_interval_s, "next_check": self.next_check}
            if self.watch_interval_s is not None
            else None,
        }


_COLUMNS = (
    "id",
    "state",
    "spec",
    "output",
    "cache_key",
    "created",
    "started",
    "finished",
    "attempts",
    "progress",
    "report",
    "error",
    "watch_interval_s",
    "next_check",
)
_JSON_COLUMNS = ("spec", "progress", "report")


def _row(record: JobRecord) -> tuple[Any, ...]:
    values = []
    for name in _COLUMNS:
        value = getattr(record, name)
        if name in _JSON_COLUMNS:
            value = json.dumps(dict(value)) if value is not None else None
        values.append(value)
    return tuple(values)


def _record(row: sqlite3.Row) -> JobRecord:
    values = {name: row[name] for name in _COLUMNS}
    for name in _JSON_COLUMNS:
        if values[name] is not None:
            values[name] = json.loads(values[name])
    return JobRecord(**values)


class JobDB:
    """Thread-safe access to the job table (one connection, serialised by a lock).

    Args:
        state_dir: folder of the database file; created when missing.
    """

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / DB_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            self._conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
            row = self._conn.execute("SELECT version FROM schema_version").fetchone()
            current = row[0] if row else 0
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has job schema version {current}, newer than this datakiln "
                    f"({SCHEMA_VERSION}); upgrade datakiln or use another --state-dir"
                )
            for version in range(current, SCHEMA_VERSION):
                # one transaction per step: a crash mid-migration leaves the old version
                self._conn.executescript(
                    f"BEGIN; {MIGRATIONS[version]}; DELETE FROM schema_version; "
                    f"INSERT INTO schema_version VALUES ({version + 1}); COMMIT;"
                )

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT version FROM schema_version").fetchone()[0])

    def put(self, record: JobRecord) -> None:
        """Insert or replace ``record`` (one atomic statement)."""
        marks = ", ".join("?" for _ in _COLUMNS)
        with self._lock:
            self._conn.execute(
                f"INSERT OR REPLACE INTO jobs ({', '.join(_COLUMNS)}) VALUES ({marks})",
                _row(record),
            )

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _record(row) if row is not None else None

    def all(self) -> list[JobRecord]:
        """Every job, oldest first."""
        with self._lock:
            rows = self._conn.execute("SELECT * FROM jobs ORDER BY created, id").fetchall()
        return [_record(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
