"""``watch``: list a bake's sources every interval and bake what is new, incrementally.

Each round compares the cache key of the sources as listed now with the committed cache's;
when they differ it runs ``bake``, which appends new inputs as new shards of a new version
(incremental bakes, docs/format.md), so readers of the old version keep reading it and
``open_cache`` on re-open sees the new one. ``datakiln watch`` runs this loop; the service runs
the same check for jobs submitted with ``"watch": {"interval_s": ...}``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from datakiln.errors import CacheFormatError, CacheNotFoundError

logger = logging.getLogger(__name__)


def needs_bake(spec: Any) -> bool:
    """Whether the inputs listed now differ from what the committed cache holds."""
    from datakiln.cache.manifest import read_manifest
    from datakiln.service.specs import listed_cache_key

    try:
        committed = read_manifest(spec.output, spec.output_storage_options).get("cache_key")
    except (CacheNotFoundError, CacheFormatError):
        return True
    return committed != listed_cache_key(spec)


def watch(
    spec: Any,
    *,
    interval_s: float,
    rounds: int | None = None,
    stop: threading.Event | None = None,
    on_bake: Callable[[Any], None] | None = None,
    lease_wait_s: float = 0.0,
    jax_cache_dir: str | None = None,
) -> int:
    """Check every ``interval_s`` seconds, ``rounds`` times (forever when ``None``).

    Returns how many bakes ran. ``on_bake`` gets each ``BakeReport``. ``stop`` ends the loop
    between rounds.
    """
    from datakiln.etl.bake import bake

    stop = stop or threading.Event()
    baked = 0
    done = 0
    while rounds is None or done < rounds:
        if needs_bake(spec):
            report = bake(spec, lease_wait_s=lease_wait_s, jax_cache_dir=jax_cache_dir)
            baked += 1
            logger.info("watch: baked %s: %s", spec.output, report.summary_line())
            if on_bake is not None:
                on_bake(report)
        done += 1
        if (rounds is not None and done >= rounds) or stop.wait(interval_s):
            break
    return baked
