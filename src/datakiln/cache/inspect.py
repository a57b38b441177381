"""``describe_cache``: everything a person wants to know about a cache, as plain data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

import numpy as np

from datakiln.cache.layout import check_relative, store_fs
from datakiln.cache.manifest import read_manifest, read_parquet


class FieldSummary(TypedDict):
    """One stored field: its layout, codec and sizes on disk and in memory."""

    shape: list[int]
    dtype: str
    read_dtype: str
    chunk_rows: int | None
    shard_rows: int | None
    codec: str | None
    on_disk_bytes: int
    in_memory_bytes: int
    # in memory / on disk; None for an empty field
    compression_ratio: float | None
    # stored bytes per raw byte: what the field's codec saves on disk
    disk_ratio: float | None


class RejectionSummary(TypedDict):
    """The inputs rejected for one reason: how many, and the first three (URI [record])."""

    count: int
    examples: list[str]


class LengthPercentiles(TypedDict):
    """Token-length percentiles of a text cache (``None`` when it holds no samples)."""

    p50: int | None
    p90: int | None
    p99: int | None
    max: int | None


class VocabularySummary(TypedDict):
    """What a text bake counted of its tokens (``None``: a cache too old to have it)."""

    tokenizer: Any
    vocab_size: int | None
    unique_tokens: int | None
    vocab_coverage: float | None
    coverage: float | None
    total_sequences: int | None
    n_tokens: int | None
    mean_length: float | None
    max_length: int | None
    n_truncated: int | None
    length_percentiles: LengthPercentiles


class CacheDescription(TypedDict):
    """``describe_cache``'s answer, as ``datakiln inspect --json`` prints it.

    The keys below the shared ones belong to one modality each: text (``tokenizer``,
    ``vocabulary``, ``encodings``, ``encoding_detector``), records (``record_fields``) and
    audio (``featurizer``, ``durations``). Manifest parts (``spec``, ``counts``,
    ``statistics``) are as the manifest holds them (docs/format.md).
    """

    url: str
    format_version: int
    version: int
    cache_key: str
    created: str | None
    modality: str
    spec: dict[str, Any]
    counts: dict[str, int]
    shards: int
    fields: dict[str, FieldSummary]
    classes: dict[str, int | None] | None
    statistics: dict[str, Any] | None
    splits: str
    rejected: dict[str, RejectionSummary]
    tokenizer: NotRequired[Any]
    vocabulary: NotRequired[VocabularySummary]
    encodings: NotRequired[Any]
    encoding_detector: NotRequired[Any]
    record_fields: NotRequired[dict[str, dict[str, Any]]]
    featurizer: NotRequired[Any]
    durations: NotRequired[dict[str, Any]]


class _ModalityDetails(TypedDict, total=False):
    """The modality's own keys of a ``CacheDescription``."""

    tokenizer: Any
    vocabulary: VocabularySummary
    encodings: Any
    encoding_detector: Any
    record_fields: dict[str, dict[str, Any]]
    featurizer: Any
    durations: dict[str, Any]


def _stored_bytes(fs: Any, root: str, path: str) -> int:
    return int(sum(i.get("size") or 0 for i in fs.find(f"{root}/{path}", detail=True).values()))


def describe_cache(url: str, storage_options: Mapping[str, Any] | None = None) -> CacheDescription:
    """Format, key, spec, fields with sizes, counts, classes, statistics and rejections.

    Text caches add ``vocabulary`` (tokenizer, unique tokens, coverage, token-length
    percentiles, truncations), ``tokenizer`` (its identity) and ``encodings`` (per codec the
    texts were decoded with, detected or given: files and baked samples; with
    ``encoding = "auto"`` also ``encoding_detector``); audio caches add
    ``durations`` (of the source clips: min/mean/max, how many were padded or trimmed to the
    stored duration) and ``featurizer``.
    """
    manifest = read_manifest(url, storage_options)
    fs, root = store_fs(url, storage_options)
    fields: dict[str, FieldSummary] = {}
    for name, field in manifest["fields"].items():
        on_disk = _stored_bytes(fs, root, check_relative(field["path"]))
        if field["dtype"] == "string":  # variable length: stored as UTF-8 plus 8 bytes a row
            in_memory = on_disk
        else:
            itemsize = np.dtype(field["dtype"]).itemsize
            per_row = int(np.prod(field["shape"], dtype=np.int64)) * itemsize
            in_memory = per_row * manifest["counts"]["baked"]
        transform = field.get("transform") or {}
        fields[name] = {
            "shape": field["shape"],
            "dtype": field["dtype"],
            "read_dtype": transform.get("dtype", field["dtype"]),
            "chunk_rows": field.get("chunk_rows"),
            "shard_rows": field.get("shard_rows"),
            "codec": field.get("codec"),
            "on_disk_bytes": on_disk,
            "in_memory_bytes": in_memory,
            "compression_ratio": round(in_memory / on_disk, 3) if on_disk else None,
            "disk_ratio": round(on_disk / in_memory, 4) if in_memory else None,
        }
    rejected = read_parquet(url, manifest["rejected"], storage_options)
    by_reason: dict[str, list[str]] = {}
    for row in rejected.to_pylist():
        key = f"{row['stage']}: {row['error_type']}"
        if row.get("field"):  # records: which field failed, and the record named
            key += f" ({row['field']})"
        where = f"{row['uri']} [{row['record']}]" if row.get("record") else row["uri"]
        by_reason.setdefault(key, []).append(where)
    classes = None
    if manifest.get("class_names"):
        counts = manifest.get("class_counts") or [None] * len(manifest["class_names"])
        classes = dict(zip(manifest["class_names"], counts, strict=True))
    extra: _ModalityDetails = {}
    stats = manifest.get("stats") or {}
    if manifest["modality"] == "text":
        extra["tokenizer"] = manifest.get("tokenizer")
        extra["vocabulary"] = _vocabulary(stats)
        extra["encodings"] = stats.get("encodings")  # absent from older caches
        if manifest.get("encoding_detector"):
            extra["encoding_detector"] = manifest["encoding_detector"]
    elif manifest["modality"] == "records":
        labels = manifest.get("label_classes") or {}
        extra["record_fields"] = {
            name: {
                **entry,
                "statistics": stats.get(name),
                "classes": dict(
                    zip(
                        labels[name],
                        (stats.get(name) or {}).get("label_counts", []) + [0] * len(labels[name]),
                        strict=False,
                    )
                )
                if name in labels
                else None,
            }
            for name, entry in (manifest.get("record_fields") or {}).items()
        }
    elif manifest["modality"] == "audio":
        extra["featurizer"] = manifest.get("featurizer")
        extra["durations"] = {
            k: stats.get(k)
            for k in (
                "clips",
                "duration_min_s",
                "duration_mean_s",
                "duration_max_s",
                "duration_total_s",
                "target_duration_s",
                "padded",
                "trimmed",
                "clipped",
            )
        }
    return {
        **extra,
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


def _vocabulary(stats: Mapping[str, Any]) -> VocabularySummary:
    """Vocabulary summary of a text cache's stats, with token-length percentiles."""
    histogram = np.asarray(stats.get("length_histogram") or [0], dtype=np.int64)
    total = int(histogram.sum())
    cumulative = np.cumsum(histogram)

    def percentile(q: float) -> int | None:
        return int(np.searchsorted(cumulative, q * total)) if total else None

    return {
        "tokenizer": stats.get("tokenizer"),
        "vocab_size": stats.get("vocab_size"),
        "unique_tokens": stats.get("unique_tokens"),
        "vocab_coverage": stats.get("vocab_coverage"),
        "coverage": stats.get("coverage"),
        "total_sequences": stats.get("total_sequences"),
        "n_tokens": stats.get("n_tokens"),
        "mean_length": stats.get("mean_length"),
        "max_length": stats.get("max_length"),
        "n_truncated": stats.get("n_truncated"),
        "length_percentiles": {
            "p50": percentile(0.5),
            "p90": percentile(0.9),
            "p99": percentile(0.99),
            "max": percentile(1.0),
        },
    }
