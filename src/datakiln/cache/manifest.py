"""The manifest: the commit point of a cache and the only way readers find its contents.

``manifest.json`` is written last and in one step: to a temporary name and renamed on local
disks, in a single object put on object stores. A store without a manifest does not exist for
readers; a manifest of another format version is refused with a clear error.

A commit of version k+1 must follow version k: on S3 it is a conditional put against the
version-k object it read, so of two bakes racing to commit, one fails cleanly instead of
overwriting the other.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from datakiln.cache.conditional import ConditionalObjects, Versioned
from datakiln.cache.layout import FORMAT_VERSION, MANIFEST, check_relative, is_local, store_fs
from datakiln.errors import CacheFormatError, CacheNotFoundError, CommitConflictError, OutputError

FORMAT_NAME = "datakiln-cache"
# A manifest lists shards, not samples: even a billion-sample cache stays far below this.
MAX_MANIFEST_BYTES = 64 * 2**20


def write_json_atomic(fs: Any, path: str, value: Any) -> None:
    """Write JSON so that readers see either the old object or the whole new one."""
    data = json.dumps(value, indent=1, sort_keys=True, allow_nan=False).encode()
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
    except OSError as err:
        raise OutputError(f"cannot write {MANIFEST} to {url}: {err}") from err


def _conflict(url: str, found: int, follows: int) -> CommitConflictError:
    return CommitConflictError(
        f"another bake committed {url} while this one ran (the store is at version {found}, "
        f"this bake started from version {follows}); nothing was overwritten. Run the same "
        "command again to bake on top of the new version"
    )


def read_manifest(url: str, storage_options: Any = None) -> dict[str, Any]:
    """Read and validate the manifest of the cache at ``url``."""
    fs, root = store_fs(url, storage_options)
    try:
        size = fs.size(f"{root}/{MANIFEST}")
        if size is not None and size > MAX_MANIFEST_BYTES:
            raise CacheFormatError(
                f"{url}/{MANIFEST} is too large ({size} bytes, limit {MAX_MANIFEST_BYTES}); "
                "it is not a manifest datakiln wrote"
            )
        raw = fs.cat_file(f"{root}/{MANIFEST}")
    except FileNotFoundError as err:
        raise CacheNotFoundError(
            f"no datakiln cache at {url}: {MANIFEST} is missing (was the bake finished? "
            "`datakiln bake` commits it last)"
        ) from err
    try:
        manifest = json.loads(raw)
    except ValueError as err:
        raise CacheFormatError(f"{url}/{MANIFEST} is not valid JSON: {err}") from err
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
