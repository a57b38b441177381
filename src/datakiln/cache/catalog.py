"""Finding caches under a prefix, and removing what no committed manifest references.

``list_caches`` finds every ``manifest.json`` below a URL. ``collect_garbage`` deletes, from one
store, the generation folders other than the committed one, the objects of shards that a later
version retired, rejected tables of older versions and ``*.partial`` leftovers of interrupted
writes -- except what a version that a reader opened within the grace period references
(``datakiln.cache.pins``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from datakiln.cache.layout import (
    GENERATION_PREFIX,
    MANIFEST,
    MANIFESTS_DIR,
    SHARDS_DIR,
    manifest_copy,
    store_fs,
)
from datakiln.cache.manifest import read_manifest
from datakiln.cache.pins import DEFAULT_GRACE_S, live_pins
from datakiln.errors import CacheNotFoundError


@dataclass(frozen=True, kw_only=True)
class CacheEntry:
    """One committed cache that ``list_caches`` found (a row of ``datakiln ls``).

    Attributes:
        url: Where the cache is (the folder holding its ``manifest.json``).
        rows: Samples baked into the committed version.
        modality: ``"image"``, ``"text"``, ``"audio"`` or ``"records"``.
        created: When the committed version was made (ISO 8601, UTC).
        size_bytes: Bytes of everything under ``url``, older versions included.
        version: The committed version's number.
    """

    url: str
    rows: int
    modality: str
    created: str
    size_bytes: int
    version: int


def _size(fs: Any, path: str) -> int:
    return int(sum(info.get("size") or 0 for info in fs.find(path, detail=True).values()))


def list_caches(prefix: str, storage_options: Mapping[str, Any] | None = None) -> list[CacheEntry]:
    """Every committed cache at or below ``prefix``, sorted by URL."""
    fs, root = store_fs(prefix, storage_options)
    found = []
    for path in sorted(fs.find(root)):
        if posixpath.basename(path) != MANIFEST:
            continue
        store = posixpath.dirname(path)
        url = fs.unstrip_protocol(store)
        try:
            manifest = read_manifest(url, storage_options)
        except (CacheNotFoundError, ValueError):
            continue
        found.append(
            CacheEntry(
                url=url,
                rows=manifest["counts"]["baked"],
                modality=manifest["modality"],
                created=manifest.get("created", ""),
                size_bytes=_size(fs, store),
                version=manifest["version"],
            )
        )
    return found


def _retired_objects(
    fs: Any, root: str, manifest: Mapping[str, Any], pinned: set[str]
) -> list[str]:
    """Markers of shards the committed version (and no pinned one) lists, and their objects."""
    import json

    live = {shard["marker"] for shard in manifest["shards"]} | pinned
    generation = manifest["generation"]
    doomed = []
    for path in fs.glob(f"{root}/{generation}/{SHARDS_DIR}/*.json"):
        relative = path[len(root) + 1 :]
        if relative in live:
            continue
        try:
            marker = json.loads(fs.cat_file(path))
        except (FileNotFoundError, ValueError):
            marker = {}
        doomed += [f"{root}/{key}" for key in marker.get("checksums", {})]
        doomed.append(path)
    return doomed


def collect_garbage(
    url: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    dry_run: bool = False,
    grace_s: float = DEFAULT_GRACE_S,
) -> list[str]:
    """Delete (or with ``dry_run`` only list) what no kept version needs.

    Kept: what the committed manifest references, and any version a reader opened in the
    last ``grace_s`` seconds.
    """
    manifest = read_manifest(url, storage_options)
    fs, root = store_fs(url, storage_options)
    pins = live_pins(fs, root, grace_s, drop_stale=not dry_run)
    generations = {manifest["generation"]} | {p["generation"] for p in pins}
    doomed: list[str] = []
    for entry in fs.ls(root, detail=False):
        name = posixpath.basename(entry.rstrip("/"))
        if name.startswith(GENERATION_PREFIX) and name not in generations:
            doomed.append(entry)
    generation = f"{root}/{manifest['generation']}"
    kept = {f"{root}/{manifest['rejected']}"} | {f"{root}/{p['rejected']}" for p in pins}
    doomed += [p for p in fs.glob(f"{generation}/rejected-v*.parquet") if p not in kept]
    pinned = {marker for p in pins for marker in p["markers"]}
    doomed += _retired_objects(fs, root, manifest, pinned)
    # copies of versions no reader pins lose their rows: drop them too
    versions = {manifest["version"]} | {p.get("version") for p in pins}
    copies = {f"{root}/{manifest_copy(v)}" for v in versions if isinstance(v, int)}
    doomed += [p for p in fs.glob(f"{root}/{MANIFESTS_DIR}/v*.json") if p not in copies]
    doomed += [p for p in fs.find(root) if p.endswith(".partial")]
    doomed = sorted(set(doomed))
    if not dry_run:
        for path in doomed:
            if fs.exists(path):
                fs.rm(path, recursive=True)
    return doomed
