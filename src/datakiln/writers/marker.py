"""Shard completion markers: written after a shard's data, they say it is whole.

A marker records the shard's input fingerprint, its row counts, its rejections and a content
hash of every object it wrote, so a resumed bake can skip it and ``verify`` can check it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from datakiln.cache.layout import shard_marker
from datakiln.cache.manifest import write_json_atomic


def write_marker(
    fs: Any, root: str, generation: str, shard_id: int, marker: Mapping[str, Any]
) -> None:
    """Write the marker of ``shard_id`` (atomically: a reader sees all of it or none)."""
    write_json_atomic(
        fs, f"{root}/{shard_marker(generation, shard_id)}", dict(marker), compact=True
    )


def read_marker(fs: Any, root: str, generation: str, shard_id: int) -> dict[str, Any] | None:
    """The marker of ``shard_id``, or ``None`` when it is absent or unreadable."""
    try:
        data = json.loads(fs.cat_file(f"{root}/{shard_marker(generation, shard_id)}"))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None  # a marker is one JSON object
