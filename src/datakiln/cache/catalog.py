"""Finding caches under a prefix, and removing what no committed manifest references.

``list_caches`` finds every ``manifest.json`` below a URL. ``collect_garbage`` deletes, from one
store, the generation folders other than the committed one, the objects of shards that a later
version retired, rejected tables of older versions and ``*.partial`` leftovers of interrupted
writes. Readers holding an older version lose it: run it when no reader needs one.
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
from datakiln.errors import CacheNotFoundError


@dataclass(frozen=True, kw_only=True)
class CacheEntry:
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


def _retired_objects(fs: Any, root: str, manifest: Mapping[str, Any]) -> list[str]:
    """Markers of shards the committed version no longer lists, and what those shards wrote."""
    import json

    live = {shard["marker"] for shard in manifest["shards"]}
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
    url: str, storage_options: Mapping[str, Any] | None = None, *, dry_run: bool = False
) -> list[str]:
    """Delete (or with ``dry_run`` only list) what the committed manifest does not reference."""
    manifest = read_manifest(url, storage_options)
    fs, root = store_fs(url, storage_options)
    doomed: list[str] = []
    for entry in fs.ls(root, detail=False):
        name = posixpath.basename(entry.rstrip("/"))
        if name.startswith(GENERATION_PREFIX) and name != manifest["generation"]:
            doomed.append(entry)
    generation = f"{root}/{manifest['generation']}"
    current = f"{root}/{manifest['rejected']}"
    doomed += [p for p in fs.glob(f"{generation}/rejected-v*.parquet") if p != current]
    doomed += _retired_objects(fs, root, manifest)
    kept = f"{root}/{manifest_copy(manifest['version'])}"  # older versions lose their rows
    doomed += [p for p in fs.glob(f"{root}/{MANIFESTS_DIR}/v*.json") if p != kept]
    doomed += [p for p in fs.find(root) if p.endswith(".partial")]
    doomed = sorted(set(doomed))
    if not dry_run:
        for path in doomed:
            if fs.exists(path):
                fs.rm(path, recursive=True)
    return doomed
