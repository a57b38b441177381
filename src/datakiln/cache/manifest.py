"""The manifest: the commit point of a cache and the only way readers find its contents.

``manifest.json`` is written last and in one step: to a temporary name and renamed on local
disks, in a single object put on object stores. A store without a manifest does not exist for
readers; a manifest of another format version is refused with a clear error.

A commit of version k+1 must follow version k: on S3 it is a conditional put against the
version-k object it read, so of two bakes racing to commit, one fails cleanly instead of
overwriting the other.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from datakiln.cache.conditional import ConditionalObjects, Versioned
from datakiln.cache.layout import (
    FORMAT_VERSION,
    MANIFEST,
    check_relative,
    is_local,
    manifest_copy,
    store_fs,
)
from datakiln.errors import CacheFormatError, CacheNotFoundError, CommitConflictError, OutputError

FORMAT_NAME = "datakiln-cache"
# A manifest lists shards, not samples: even a billion-sample cache stays far below this.
MAX_MANIFEST_BYTES = 64 * 2**20


def write_json_atomic(fs: Any, path: str, value: Any, *, compact: bool = False) -> None:
    """Write JSON so that readers see either the old object or the whole new one.

    ``compact``: no indentation, which lets ``json`` use its C encoder (a records marker
    lists every archive member of its shard: indented, encoding it cost ~10% of a task).
    """
    indent = None if compact else 1
    data = json.dumps(value, indent=indent, sort_keys=True, allow_nan=False).encode()
    if is_local(fs):
        tmp = f"{path}.{uuid.uuid4().hex}.partial"
        try:
            fs.pipe_file(tmp, data)
            fs.mv(tmp, path)
        except BaseException:
            if fs.exists(tmp):
                fs.rm_file(tmp)
            raise
    else:
        fs.pipe_file(path, data)


def _committed_version(data: bytes | None) -> int:
    """The version of a committed manifest's bytes; 0 for none (or one a bake would replace)."""
    try:
        version = json.loads(data)["version"] if data is not None else 0
    except (ValueError, TypeError, KeyError):
        return 0
    return version if isinstance(version, int) else 0


def commit_manifest(url: str, manifest: Mapping[str, Any], storage_options: Any = None) -> None:
    """Validate and commit ``manifest`` at the store ``url``, as the successor of its version.

    Raises:
        CommitConflictError: the store's manifest is no longer the one this version follows.
    """
    validate_manifest(manifest, url)
    fs, root = store_fs(url, storage_options)
    path = f"{root}/{MANIFEST}"
    objects = ConditionalObjects(fs, url)
    follows = int(manifest["version"]) - 1
    try:
        if is_local(fs):  # the lease is a kernel lock here: check, then rename
            try:
                current = Versioned(fs.cat_file(path), None)
            except FileNotFoundError:
                current = Versioned(None, None)
        else:
            objects.warn_if_unsupported("the manifest commit")
            current = objects.read(path)
        found = _committed_version(current.data)
        if found != follows:
            raise _conflict(url, found, follows)
        data = json.dumps(dict(manifest), indent=1, sort_keys=True, allow_nan=False).encode()
        if is_local(fs) or not objects.supported:
            write_json_atomic(fs, path, dict(manifest))
        elif objects.put(path, data, expect=current) is None:
            raise _conflict(url, _committed_version(objects.read(path).data), follows)
        # Then its copy, so every committed version can be opened again by its number (a
        # crash in between loses only the copy of the current version, which reads fall back
        # to manifest.json for).
        write_json_atomic(fs, f"{root}/{manifest_copy(manifest['version'])}", dict(manifest))
    except OSError as err:
        raise OutputError(f"cannot write {MANIFEST} to {url}: {err}") from err


def _conflict(url: str, found: int, follows: int) -> CommitConflictError:
    return CommitConflictError(
        f"another bake committed {url} while this one ran (the store is at version {found}, "
        f"this bake started from version {follows}); nothing was overwritten. Run the same "
        "command again to bake on top of the new version"
    )


def read_manifest(
    url: str, storage_options: Any = None, *, version: int | None = None
) -> dict[str, Any]:
    """Read and validate the manifest of the cache at ``url``.

    That is the committed one, or the kept copy of ``version`` (raises
    ``CacheNotFoundError`` when that version is not kept).
    """
    if version is None:
        return _read_manifest_at(url, MANIFEST, storage_options)
    try:
        return _read_manifest_at(url, manifest_copy(version), storage_options)
    except CacheNotFoundError:
        current = _read_manifest_at(url, MANIFEST, storage_options)
        if current["version"] == version:  # committed before copies were kept
            return current
        raise CacheNotFoundError(
            f"{url} has no version {version}: the committed version is {current['version']}, "
            "and older ones are kept until `datakiln gc`"
        ) from None


def _read_manifest_at(url: str, relative: str, storage_options: Any) -> dict[str, Any]:
    fs, root = store_fs(url, storage_options)
    try:
        size = fs.size(f"{root}/{relative}")
        if size is not None and size > MAX_MANIFEST_BYTES:
            raise CacheFormatError(
                f"{url}/{relative} is too large ({size} bytes, limit {MAX_MANIFEST_BYTES}); "
                "it is not a manifest datakiln wrote"
            )
        raw = fs.cat_file(f"{root}/{relative}")
    except FileNotFoundError as err:
        raise CacheNotFoundError(
            f"no datakiln cache at {url}: {relative} is missing (was the bake finished? "
            "`datakiln bake` commits it last)"
        ) from err
    try:
        manifest: dict[str, Any] = json.loads(raw)  # validate_manifest checks its shape
    except ValueError as err:
        raise CacheFormatError(f"{url}/{relative} is not valid JSON: {err}") from err
    validate_manifest(manifest, url)
    return manifest


# Parquet parts hold one shard's metadata; far larger ones were not written by datakiln.
MAX_PARQUET_BYTES = 1 * 2**30


def read_parquet(url: str, relative: str, storage_options: Any = None) -> Any:
    """Read a Parquet file of the store as a pyarrow Table, or raise ``CacheFormatError``.

    Bytes go through ``pyarrow.BufferReader`` (not a Python file object) and are read on one
    thread without pre-buffering: pyarrow's thread pools, once started in a process that has
    also started jax, can abort the interpreter at exit ("terminate called without an active
    exception", status 134; seen with ``pq.read_table`` of a buffer in about one run in three,
    never with this read). A part that is too large, truncated or not Parquet gives a clear
    error naming it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, root = store_fs(url, storage_options)
    path = f"{root}/{check_relative(relative)}"
    try:
        size = fs.size(path)
        if size is not None and size > MAX_PARQUET_BYTES:
            raise CacheFormatError(f"{url}/{relative} is too large ({size} bytes) to be ours")
        reader = pq.ParquetFile(pa.BufferReader(fs.cat_file(path)), pre_buffer=False)
        return reader.read(use_threads=False)
    except FileNotFoundError as err:
        raise CacheFormatError(f"{url}/{relative} is missing; run `datakiln verify`") from err
    except (pa.ArrowException, OSError) as err:
        raise CacheFormatError(
            f"{url}/{relative} is not a readable Parquet file ({err}); run `datakiln verify`"
        ) from err


def validate_manifest(manifest: Mapping[str, Any], url: str) -> None:
    """Check what a reader relies on; raise ``CacheFormatError`` naming what is wrong."""
    if not isinstance(manifest, Mapping) or manifest.get("format") != FORMAT_NAME:
        raise CacheFormatError(f"{url}/{MANIFEST} is not a datakiln manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CacheFormatError(
            f"{url} has cache format version {version!r}; this datakiln reads version "
            f"{FORMAT_VERSION}. Re-bake the cache or use a matching datakiln release."
        )
    for key in (
        "cache_key",
        "generation",
        "version",
        "counts",
        "fields",
        "shards",
        "rows",
        "rejected",
    ):
        if key not in manifest:
            raise CacheFormatError(f"{url}/{MANIFEST} lacks {key!r}")
    check_relative(manifest["generation"])
    check_relative(manifest["rejected"])
    rows = manifest["rows"]
    for name, field in manifest["fields"].items():
        check_relative(field["path"])
        if field.get("rows") != rows:
            raise CacheFormatError(
                f"{url}: field {name!r} has {field.get('rows')} rows, manifest says {rows}"
            )
    baked = 0
    for shard in manifest["shards"]:
        check_relative(shard["marker"])
        check_relative(shard["meta"])
        if shard["rows"] > shard["capacity"] or shard["row_start"] + shard["capacity"] > rows:
            raise CacheFormatError(f"{url}: shard {shard['id']} does not fit the arrays")
        baked += shard["rows"]
    counts = manifest["counts"]
    if baked != counts["baked"] or counts["baked"] + counts["rejected"] != counts["inputs"]:
        raise CacheFormatError(f"{url}: manifest counts do not add up: {counts}")


@dataclass(frozen=True, kw_only=True)
class ManifestShard:
    """One live shard of a committed version: its rows and where its marker and meta are."""

    id: int
    row_start: int
    capacity: int
    rows: int
    marker: str
    meta: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ManifestShard:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """A committed version of a cache (see docs/format.md for each key).

    ``entries`` holds what a modality adds at the top level (``tokenizer``, ``featurizer``,
    ``constants``, ``record_fields``, ...); ``to_dict`` writes them beside the shared keys.
    """

    cache_key: str
    generation_key: str
    generation: str
    version: int
    next_shard_id: int
    created: str
    modality: str
    spec: Mapping[str, Any]
    rows: int
    counts: Mapping[str, int]
    rejected_by_reason: Mapping[str, int]
    fields: Mapping[str, Mapping[str, Any]]
    stats: Mapping[str, Any]
    shards: tuple[ManifestShard, ...]
    rejected: str
    class_names: tuple[str, ...] | None = None
    class_counts: tuple[int, ...] | None = None
    label_classes: Mapping[str, tuple[str, ...]] | None = None
    entries: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.entries,
            "format": self.format,
            "format_version": self.format_version,
            "cache_key": self.cache_key,
            "generation_key": self.generation_key,
            "generation": self.generation,
            "version": self.version,
            "next_shard_id": self.next_shard_id,
            "created": self.created,
            "modality": self.modality,
            "spec": dict(self.spec),
            "rows": self.rows,
            "counts": dict(self.counts),
            "rejected_by_reason": dict(self.rejected_by_reason),
            "fields": {k: dict(v) for k, v in self.fields.items()},
            "class_names": list(self.class_names) if self.class_names is not None else None,
            "class_counts": list(self.class_counts) if self.class_counts is not None else None,
            "label_classes": {k: list(v) for k, v in self.label_classes.items()}
            if self.label_classes
            else None,
            "stats": dict(self.stats),
            "shards": [s.to_dict() for s in self.shards],
            "rejected": self.rejected,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        shared = {f.name for f in dataclasses.fields(cls)} - {"entries"}
        labels = data.get("label_classes")
        return cls(
            cache_key=data["cache_key"],
            generation_key=data["generation_key"],
            generation=data["generation"],
            version=int(data["version"]),
            next_shard_id=int(data["next_shard_id"]),
            created=data.get("created", ""),
            modality=data["modality"],
            spec=data["spec"],
            rows=int(data["rows"]),
            counts=data["counts"],
            rejected_by_reason=data.get("rejected_by_reason") or {},
            fields=data["fields"],
            stats=data.get("stats") or {},
            shards=tuple(ManifestShard.from_dict(s) for s in data["shards"]),
            rejected=data["rejected"],
            class_names=tuple(data["class_names"]) if data.get("class_names") else None,
            class_counts=tuple(data["class_counts"]) if data.get("class_counts") else None,
            label_classes={k: tuple(v) for k, v in labels.items()} if labels else None,
            entries={k: v for k, v in data.items() if k not in shared},
            format=data.get("format", FORMAT_NAME),
            format_version=int(data.get("format_version", FORMAT_VERSION)),
        )
