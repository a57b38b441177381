"""``describe_cache``: everything a person wants to know about a cache, as plain data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from datakiln.cache.layout import check_relative, store_fs
from datakiln.cache.manifest import read_manifest, read_parquet


def _stored_bytes(fs: Any, root: str, path: str) -> int:
    return int(sum(i.get("size") or 0 for i in fs.find(f"{root}/{path}", detail=True).values()))


def describe_cache(url: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Format, key, spec, fields with sizes, counts, classes, statistics and rejections."""
    manifest = read_manifest(url, storage_options)
    fs, root = store_fs(url, storage_options)
    fields = {}
    for name, field in manifest["fields"].items():
        itemsize = np.dtype(field["dtype"]).itemsize
        per_row = int(np.prod(field["shape"], dtype=np.int64)) * itemsize
        in_memory = per_row * manifest["counts"]["baked"]
        on_disk = _stored_bytes(fs, root, check_relative(field["path"]))
        transform = field.get("transform") or {}
        fields[name] = {
            "shape": field["shape"], "dtype": field["dtype"],
            "read_dtype": transform.get("dtype", field["dtype"]),
            "chunk_rows": field.get("chunk_rows"), "shard_rows": field.get("shard_rows"),
            "codec": field.get("codec"), "on_disk_bytes": on_disk, "in_memory_bytes": in_memory,
            "compression_ratio": round(in_memory / on_disk, 3) if on_disk else None,
        }  # fmt: skip
    rejected = read_parquet(url, manifest["rejected"], storage_options)
    by_reason: dict[str, list[str]] = {}
    for row in rejected.to_pylist():
        key = f"{row['stage']}: {row['error_type']}"
        by_reason.setdefault(key, []).append(row["uri"])
    classes = None
    if manifest.get("class_names"):
        counts = manifest.get("class_counts") or [None] * len(manifest["class_names"])
        classes = dict(zip(manifest["class_names"], counts, strict=True))
    return {
        "url": url,
        "format_version": manifest["format_version"],
        "version": manifest["version"],
        "cache_key": manifest["cache_key"],
        "created": manifest.get("created"),
        "modality": manifest["modality"],
        "spec": manifest["spec"],
        "counts": manifest["counts"],
        "shards": len(manifest["shards"]),
        "fields": fields,
        "classes": classes,
        "statistics": manifest.get("stats"),
        "splits": "any split string at open time, e.g. open_cache(url, split='train[:80%]')",
        "rejected": {
            reason: {"count": len(uris), "examples": uris[:3]}
            for reason, uris in sorted(by_reason.items())
        },
    }
