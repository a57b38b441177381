"""The manifest: the commit point of a cache and the only way readers find its contents.

``manifest.json`` is written last and in one step: to a temporary name and renamed on local
disks, in a single object put on object stores. A store without a manifest does not exist for
readers; a manifest of another format version is refused with a clear error.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from datakiln.cache.layout import (
    FORMAT_VERSION,
    MANIFEST,
    check_relative,
    is_local,
    manifest_copy,
    store_fs,
)
from datakiln.errors import CacheFormatError, CacheNotFoundError, OutputError

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


def commit_manifest(url: str, manifest: Mapping[str, Any], storage_options: Any = None) -> None:
    """Validate and commit ``manifest`` at the store ``url``."""
    validate_manifest(manifest, url)
    fs, root = store_fs(url, storage_options)
    try:
        # The copy first: every committed version can be opened again by its number.
        write_json_atomic(fs, f"{root}/{manifest_copy(manifest['version'])}", dict(manifest))
        write_json_atomic(fs, f"{root}/{MANIFEST}", dict(manifest))
    except OSError as err:
        raise OutputError(f"cannot write {MANIFEST} to {url}: {err}") from err


def read_manifest(
    url: str, storage_options: Any = None, *, version: int | None = None
) -> dict[str, Any]:
    """Read and validate the manifest of the cache at ``url``: the committed one, or the kept
    copy of ``version`` (raises ``CacheNotFoundError`` when that version is not kept)."""
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
        manifest = json.loads(raw)
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
