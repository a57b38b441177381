"""One service bake in a process of its own: ``python -m datakiln.service.runner``.

The service runs each bake in a child process so that a bake's CPU work never slows the HTTP
server (one GIL), a crash in a bake cannot take the service down, and cancelling is a signal:
SIGTERM raises ``KeyboardInterrupt`` inside ``bake``, which unwinds without committing and
releases the store lease, so the same job resumes later from its finished shards. The child
also gets SIGTERM when the service dies (Linux ``PR_SET_PDEATHSIG``), so a killed service
leaves no orphan bake holding the lease.

Protocol: the job arrives as one JSON object on stdin (``{"spec": {...}, "jax_cache_dir":
...}``, storage options included, so credentials never appear in ``argv``); the child writes
JSON lines to stdout: ``{"event": "progress", ...}`` per finished shard, then one
``{"event": "done", "report": {...}}`` or ``{"event": "error", "type": ..., "message": ...}``.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

# prctl(2) option: the signal this process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # pragma: no cover - no prctl: the lease expiry still frees the store
        pass


def _emit(event: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(dict(event)) + "\n")
    sys.stdout.flush()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    """Run the job read from stdin, writing its events to stdout; the exit code."""
    _die_with_parent()
    signal.signal(signal.SIGTERM, _interrupt)
    from datakiln.errors import DatakilnError
    from datakiln.etl.bake import bake
    from datakiln.etl.spec import BakeSpec

    job = json.loads(sys.stdin.read())
    if job.get("nice"):
        # Below the service's priority (its workers inherit it), so the HTTP API stays
        # responsive while bakes use every core.
        os.nice(int(job["nice"]))
    try:
        spec = BakeSpec.from_dict(job["spec"])
        report = bake(
            spec,
            progress=lambda e: _emit({"event": "progress", **e}),
            lease_wait_s=float(job.get("lease_wait_s", 0.0)),
            jax_cache_dir=job.get("jax_cache_dir"),
        )
    except KeyboardInterrupt:
        _emit({"event": "error", "type": "Cancelled", "message": "the bake was stopped"})
        return 130
    except DatakilnError as err:
        _emit({"event": "error", "type": type(err).__name__, "message": str(err)})
        return 1
    except Exception as err:  # any other failure still reaches the job record, with its type
        _emit({"event": "error", "type": type(err).__name__, "message": str(err)})
        return 1
    _emit({"event": "done", "report": report.to_dict()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
