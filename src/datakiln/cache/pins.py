"""Read pins: a reader marks the version it opened, so ``gc`` keeps what that version uses.

Opening a cache writes ``_readers/v<version>.json`` (a few hundred bytes: the time, the
generation, the shard markers and the rejected table of that version). ``gc`` keeps every
object a version pinned within its grace period (default one hour) references, and removes
pins older than that. A reader that cannot write to the store (read-only credentials) still
reads; it is then not protected, which is logged once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any, TypedDict

from datakiln.cache.layout import store_fs

logger = logging.getLogger(__name__)

PINS_DIR = "_readers"
DEFAULT_GRACE_S = 3600.0


class PinRecord(TypedDict):
    """A reader's pin, as JSON in the store: when it opened the version, and what that uses."""

    touched: float  # time.time() of the open
    version: int
    generation: str
    rejected: str
    markers: list[str]


def pin_path(version: int) -> str:
    """Store-relative path of the pin that keeps ``version`` from ``gc`` for a while."""
    return f"{PINS_DIR}/v{version:06d}.json"


def pin_version(
    url: str, storage_options: Mapping[str, Any] | None, manifest: Mapping[str, Any]
) -> None:
    """Mark ``manifest``'s version as read now; never fails the reader."""
    record: PinRecord = {
        "touched": time.time(),
        "version": manifest["version"],
        "generation": manifest["generation"],
        "rejected": manifest["rejected"],
        "markers": [shard["marker"] for shard in manifest["shards"]],
    }
    try:
        fs, root = store_fs(url, storage_options)
        fs.pipe_file(f"{root}/{pin_path(manifest['version'])}", json.dumps(record).encode())
    except Exception as err:  # a read-only store: reading must still work
        logger.info(
            "could not pin version %s of %s (%s); gc will not see this reader",
            manifest.get("version"),
            url,
            err,
        )


def live_pins(fs: Any, root: str, grace_s: float, *, drop_stale: bool) -> list[PinRecord]:
    """Pins touched within ``grace_s``; with ``drop_stale``, older ones are deleted."""
    live: list[PinRecord] = []  # as pin_version writes them; only ``touched`` is checked
    for path in fs.glob(f"{root}/{PINS_DIR}/v*.json"):
        try:
            record = json.loads(fs.cat_file(path))
            fresh = time.time() - float(record["touched"]) <= grace_s
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            record, fresh = None, False
        if fresh and record is not None:
            live.append(record)
        elif drop_stale:
            fs.rm_file(path)
    return live
