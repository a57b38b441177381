"""Where things live inside a cache store, and how to reach a store at any fsspec URL.

Every path recorded in a manifest is relative to the store root; ``check_relative`` refuses
anything that could escape it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import fsspec

from datakiln.errors import CacheFormatError

# Offset and length of an inner chunk that a Zarr v3 shard index marks as absent (fill).
MISSING_CHUNK = 2**64 - 1

if TYPE_CHECKING:
    from zarr.abc.store import Store

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LEASE = "_lease.json"
REPORT = "report.json"  # the last bake's summary, beside the manifest
META_DIR = "meta"
SHARDS_DIR = "_shards"
GENERATION_PREFIX = "g-"
MANIFESTS_DIR = "manifests"  # a copy of each committed manifest, by version


def generation_dir(generation_key: str) -> str:
    """Folder of one generation: everything baked with one set of preprocessing parameters.

    A new set of parameters bakes into a new folder, so readers of the old manifest keep
    reading the old rows while the new ones are written; within a generation, a bake only
    appends new objects and never rewrites one that a committed manifest references.
    """
    return f"{GENERATION_PREFIX}{generation_key[:16]}"


def meta_part(generation: str, shard_id: int) -> str:
    """Relative path of a bake shard's Parquet metadata part."""
    return f"{generation}/{META_DIR}/part-{shard_id:05d}.parquet"


def shard_marker(generation: str, shard_id: int) -> str:
    """Relative path of a bake shard's completion marker."""
    return f"{generation}/{SHARDS_DIR}/{shard_id:05d}.json"


def manifest_copy(version: int) -> str:
    """Relative path of the kept copy of manifest ``version`` (``open_cache(version=...)``)."""
    return f"{MANIFESTS_DIR}/v{version:06d}.json"


def rejected_table_path(generation: str, version: int) -> str:
    """Relative path of the rejected-input table of one committed manifest version."""
    return f"{generation}/rejected-v{version:05d}.parquet"


def check_relative(path: str) -> str:
    """Return ``path`` if it is a plain relative path inside the store, else raise."""
    if (
        not isinstance(path, str)
        or not path
        or path.startswith(("/", "\\"))
        or "://" in path
        or "\\" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise CacheFormatError(f"manifest path {path!r} is not a relative path inside the store")
    return path


# For S3 stores: botocore's "standard" retries (exponential backoff with full jitter, on
# throttling, 5xx, resets and timeouts), a bounded number of attempts, and a timeout on each
# request so a stalled connection is retried instead of hanging. A store's own
# ``config_kwargs`` override these key by key.
S3_CONFIG = {
    "connect_timeout": 10,
    "read_timeout": 30,
    "retries": {"mode": "standard", "max_attempts": 6},
}


def with_store_defaults(url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``storage_options`` with datakiln's retry and timeout defaults for S3 URLs."""
    options = dict(storage_options or {})
    if fsspec.core.split_protocol(url)[0] in ("s3", "s3a"):
        options["config_kwargs"] = {**S3_CONFIG, **dict(options.get("config_kwargs") or {})}
    return options


def with_source_defaults(
    sources: Sequence[str], storage_options: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``storage_options`` for reading ``sources``: the store defaults where any is on S3.

    The sources of one bake share one set of options; the user's ``config_kwargs`` win.
    """
    options = dict(storage_options or {})
    for source in sources:
        options = with_store_defaults(source, options)
    return options


def store_fs(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem and root path (no trailing slash) of a store URL."""
    options = with_store_defaults(url, storage_options)
    if is_local_url(url):
        options.setdefault("auto_mkdir", True)  # object stores have no folders to make
    fs, root = fsspec.core.url_to_fs(url, **options)
    return fs, root.rstrip("/") or root


def is_local_url(url: str) -> bool:
    """Whether ``url`` names the local disk (a plain path or a ``file://`` URL)."""
    return fsspec.core.split_protocol(url)[0] in (None, "file", "local")


def is_local(fs: Any) -> bool:
    """Whether ``fs`` is the local disk (rename is atomic, files can be memory-mapped)."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def join(root: str, relative: str) -> str:
    """``root/relative``, refusing a ``relative`` that climbs out of ``root``."""
    return posixpath.join(root, check_relative(relative))


def zarr_store(
    url: str, storage_options: Mapping[str, Any] | None = None, *, read_only: bool
) -> Store:
    """A Zarr v3 store over ``url``: zarr's LocalStore for local paths, else an FsspecStore."""
    from zarr.storage import FsspecStore, LocalStore

    fs, root = store_fs(url, storage_options)
    if is_local(fs):
        return LocalStore(root, read_only=read_only)
    return FsspecStore.from_url(
        url, storage_options=with_store_defaults(url, storage_options), read_only=read_only
    )
