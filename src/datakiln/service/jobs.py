"""Bake jobs: submit, share, queue, run in child processes, cancel, resume, watch.

``JobManager`` owns every job of one service. Its rules:

* **Bake once.** A job's identity is its output and cache key. A submission whose output and
  key match a queued or running job joins that job (same id); one whose committed cache
  already has the key succeeds at once, without a bake.
* **Queue.** At most ``max_concurrent`` bakes run at once, and never two on one output; the
  rest wait in submission order. The store lease still keeps a CLI bake of the same store
  apart from ours (a job then waits ``lease_wait_s`` for it).
* **Survive.** Each change of state is written to the ``JobDB`` first. A restarted service
  queues again the jobs that were running; their bakes resume from their finished shards.
* **Watch.** A job with ``watch_interval_s`` lists its sources every interval after it
  succeeds and bakes again, incrementally, when the cache key changed.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datakiln.errors import CacheFormatError, CacheNotFoundError, DatakilnError, SpecError
from datakiln.service.db import ACTIVE_STATES, STATES, JobDB, JobRecord
from datakiln.service.specs import SourcePolicy, cache_url, job_spec, listed_cache_key

logger = logging.getLogger(__name__)

# Seconds between a cancel's SIGTERM and a SIGKILL of a bake that has not stopped.
_KILL_AFTER_S = 20.0
# Progress reaches the database at most this often per job (it is in memory at once).
_PROGRESS_WRITE_S = 1.0
# Environment variables a bake process must not inherit.
_PRIVATE_ENV = ("DATAKILN_TOKEN",)


@dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    """How a service bakes: where caches go, where jobs are kept, on what, how many at once."""

    root: str
    state_dir: str
    scheduler: str = "auto"
    workers: int | None = None
    max_concurrent: int = 2
    allow_sources: tuple[str, ...] = ()
    jax_cache_dir: str | None = None
    lease_wait_s: float = 300.0
    min_watch_interval_s: float = 1.0
    # Niceness of the bake processes: the API answers first, bakes take the rest of the CPUs.
    bake_nice: int = 10
    source_policy: SourcePolicy = field(init=False)

    def __post_init__(self) -> None:
        if self.max_concurrent < 1:
            raise SpecError(f"max_concurrent must be >= 1; got {self.max_concurrent}")
        object.__setattr__(
            self, "source_policy", SourcePolicy(root=self.root, allow_prefixes=self.allow_sources)
        )


def _committed_key(url: str, storage_options: Mapping[str, Any]) -> dict[str, Any] | None:
    from datakiln.cache.manifest import read_manifest

    try:
        return read_manifest(url, storage_options)
    except (CacheNotFoundError, CacheFormatError):
        return None


def _report_of(manifest: Mapping[str, Any], url: str) -> dict[str, Any]:
    counts = manifest["counts"]
    return {
        "url": url,
        "cache_key": manifest["cache_key"],
        "inputs": counts["inputs"],
        "baked": counts["baked"],
        "rejected": counts["rejected"],
        "rejected_by_reason": manifest.get("rejected_by_reason", {}),
        "shards": len(manifest.get("shards", [])),
        "up_to_date": True,
        "version": manifest.get("version"),
    }


def eta_s(record: JobRecord, now: float | None = None) -> float | None:
    """Seconds left at the rate so far, once a shard has finished; else ``None``."""
    p = record.progress
    done, total = p.get("inputs_done", 0), p.get("inputs_total", 0)
    if record.state != "running" or not done or not total or record.started is None:
        return None
    elapsed = (now or time.time()) - record.started
    return max(0.0, float(elapsed / done * (total - done)))


class JobManager:
    """Every job of one service: the in-memory view, the database, the bake processes."""

    def __init__(self, config: ServiceConfig, db: JobDB | None = None) -> None:
        self.config = config
        self.db = db or JobDB(config.state_dir)
        self._lock = threading.RLock()
        self._jobs: dict[str, JobRecord] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        # Storage options of jobs submitted to this process: kept in memory only.
        self._options: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._cancelling: set[str] = set()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_write: dict[str, float] = {}
        self.bakes_started = 0
        self._log_dir = Path(config.state_dir) / "logs"
        self._log_dir.mkdir(parents=True, exist_ok=True)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Load every job from the database, queue again those that were running, start."""
        resumed = 0
        with self._lock:
            for record in self.db.all():
                if record.state == "running":
                    record = record.evolve(state="queued")
                    self.db.put(record)
                    resumed += 1
                self._jobs[record.id] = record
        if resumed:
            logger.info("resuming %d jobs that were running when the service stopped", resumed)
        self._thread = threading.Thread(target=self._loop, name="datakiln-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the bakes (they stay ``running`` in the database, to resume on restart)."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=_KILL_AFTER_S)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.db.close()

    # -- queries -----------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self) -> list[JobRecord]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda r: (r.created, r.id))

    def counts(self) -> dict[str, int]:
        counter = collections.Counter(r.state for r in self.jobs())
        return {state: counter.get(state, 0) for state in STATES}

    # -- submit and cancel -------------------------------------------------------------------

    def submit(self, spec_data: Any, *, watch_interval_s: float | None = None) -> JobRecord:
        """Check ``spec_data`` (a spec table) and return the job that bakes it.

        Raises:
            SpecError: the spec is malformed or reads or writes where it may not.
            SourceError: a source names nothing readable.
        """
        c = self.config
        if watch_interval_s is not None and not (
            isinstance(watch_interval_s, int | float) and watch_interval_s >= c.min_watch_interval_s
        ):
            raise SpecError(
                f"watch.interval_s must be a number >= {c.min_watch_interval_s}; "
                f"got {watch_interval_s!r}"
            )
        spec, name = job_spec(
            spec_data,
            root=c.root,
            policy=c.source_policy,
            scheduler=c.scheduler,
            workers=c.workers,
        )
        key = listed_cache_key(spec)
        output = cache_url(c.root, name or key)
        spec_dict = {**spec.to_dict(), "output": output}
        options = (dict(spec.storage_options), dict(spec.output_storage_options))
        now = time.time()
        with self._lock:
            for record in self._jobs.values():
                same = record.output == output and record.cache_key == key
                if same and record.state in ACTIVE_STATES:
                    logger.info("job for %s joins job %s (same cache key)", output, record.id)
                    return record
            manifest = _committed_key(output, spec.output_storage_options)
            job_id = uuid.uuid4().hex[:12]
            record = JobRecord(
                id=job_id,
                state="queued",
                spec=spec_dict,
                output=output,
                cache_key=key,
                created=now,
                watch_interval_s=watch_interval_s,
            )
            if manifest is not None and manifest.get("cache_key") == key:
                record = record.evolve(
                    state="succeeded",
                    started=now,
                    finished=now,
                    report=_report_of(manifest, output),
                    next_check=now + watch_interval_s if watch_interval_s else None,
                )
            self._options[job_id] = options
            self._jobs[job_id] = record
            self.db.put(record)
        logger.info("job %s: %s for %s", job_id, record.state, output)
        self._wake.set()
        return record

    def cancel(self, job_id: str) -> JobRecord | None:
        """Cancel a job: a queued one at once, a running one by stopping its bake.

        Nothing is committed, and the finished shards stay, so a later job resumes the bake.
        A watch stops watching. Returns the record (``None`` for an unknown id).
        """
        with self._lock:
            record = self._jobs.get(job_id)
            if record is None:
                return None
            proc = self._procs.get(job_id)
            if proc is None:
                if record.state in ACTIVE_STATES:
                    record = record.evolve(state="cancelled", finished=time.time())
                # a watch between two bakes keeps its state and stops watching
                self._set(record.evolve(watch_interval_s=None, next_check=None))
                return self._jobs[job_id]
            self._cancelling.add(job_id)
        logger.info("job %s: cancelling its bake", job_id)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        timer = threading.Timer(_KILL_AFTER_S, self._kill_if_alive, (proc,))
        timer.daemon = True  # never holds up the service's exit
        timer.start()
        return self.get(job_id)

    @staticmethod
    def _kill_if_alive(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.kill()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no job is queued or running (for tests and benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not any(r.state in ACTIVE_STATES for r in self.jobs()):
                return True
            time.sleep(0.05)
        return False

    # -- the scheduling loop -----------------------------------------------------------------

    def _set(self, record: JobRecord, *, write: bool = True) -> None:
        with self._lock:
            self._jobs[record.id] = record
            if write:
                self.db.put(record)
                self._last_write[record.id] = time.monotonic()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._check_watches()
                self._start_queued()
            except Exception:  # the loop must outlive any one job's trouble
                logger.exception("job scheduling failed; retrying")

    def _start_queued(self) -> None:
        with self._lock:
            running = [r for r in self._jobs.values() if r.state == "running"]
            busy = {r.output for r in running}
            queued = sorted(
                (r for r in self._jobs.values() if r.state == "queued"), key=lambda r: r.created
            )
            for record in queued:
                if len(running) >= self.config.max_concurrent:
                    return
                if record.output in busy:
                    continue
                self._launch(record)
                running.append(record)
                busy.add(record.output)

    def _check_watches(self) -> None:
        now = time.time()
        due = [
            r
            for r in self.jobs()
            if r.watch_interval_s is not None
            and r.state == "succeeded"
            and (r.next_check or 0) <= now
        ]
        for record in due:
            try:
                spec = self._bake_spec(record)
                key = listed_cache_key(spec)
            except DatakilnError as err:
                logger.warning("watch %s: cannot list its sources: %s", record.id, err)
                key = record.cache_key
            with self._lock:
                current = self._jobs[record.id]
                if current.state != "succeeded" or current.watch_interval_s is None:
                    continue
                if key != current.cache_key:
                    logger.info("watch %s: the inputs changed; baking again", record.id)
                    self._set(current.evolve(state="queued", cache_key=key, next_check=None))
                else:
                    interval = current.watch_interval_s
                    self._set(current.evolve(next_check=now + interval))

    def _bake_spec(self, record: JobRecord) -> Any:
        from datakiln.etl.spec import BakeSpec

        source_options, output_options = self._options.get(record.id, ({}, {}))
        return BakeSpec.from_dict(
            {
                **record.spec,
                "storage_options": source_options,
                "output_storage_options": output_options,
            }
        )

    def _launch(self, record: JobRecord) -> None:
        """Start the bake process of ``record`` (under the lock)."""
        spec = self._bake_spec(record)
        job = {
            "spec": {
                **spec.to_dict(),
                "storage_options": dict(spec.storage_options),
                "output_storage_options": dict(spec.output_storage_options),
            },
            "jax_cache_dir": self.config.jax_cache_dir,
            "lease_wait_s": self.config.lease_wait_s,
            "nice": self.config.bake_nice,
        }
        env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
        log = open(self._log_dir / f"{record.id}.log", "ab")  # noqa: SIM115 (the child's)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "datakiln.service.runner"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
            )
        finally:
            log.close()
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()
        self.bakes_started += 1
        self._procs[record.id] = proc
        started = record.evolve(
            state="running",
            started=time.time(),
            finished=None,
            attempts=record.attempts + 1,
            progress={},
            error=None,
        )
        self._set(started)
        logger.info("job %s: baking %s (attempt %d)", record.id, record.output, started.attempts)
        threading.Thread(
            target=self._follow, args=(record.id, proc), name=f"datakiln-job-{record.id}"
        ).start()

    def _follow(self, job_id: str, proc: subprocess.Popen[bytes]) -> None:
        """Read the bake process's events until it exits; record how it ended."""
        final: dict[str, Any] | None = None
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "progress":
                progress = {k: v for k, v in event.items() if k != "event"}
                with self._lock:
                    due = time.monotonic() - self._last_write.get(job_id, 0) > _PROGRESS_WRITE_S
                    self._set(self._jobs[job_id].evolve(progress=progress), write=due)
            elif event.get("event") in ("done", "error"):
                final = event
        code = proc.wait()
        with self._lock:
            self._procs.pop(job_id, None)
            record = self._jobs[job_id]
            cancelled = job_id in self._cancelling
            self._cancelling.discard(job_id)
            if self._stopping.is_set() and not cancelled:
                return  # the service is stopping: the job stays running, to resume
            now = time.time()
            if final is not None and final["event"] == "done":
                report = final["report"]
                interval = record.watch_interval_s
                record = record.evolve(
                    state="succeeded",
                    finished=now,
                    report=report,
                    cache_key=report["cache_key"],
                    next_check=now + interval if interval else None,
                )
            elif cancelled:
                record = record.evolve(state="cancelled", finished=now, watch_interval_s=None)
            else:
                error = (
                    f"{final['type']}: {final['message']}"
                    if final is not None
                    else f"the bake process exited with code {code}; see its log"
                )
                record = record.evolve(state="failed", finished=now, error=error)
            self._set(record)
        logger.info("job %s: %s", job_id, record.state)
        self._wake.set()
