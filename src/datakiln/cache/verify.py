"""``verify``: recompute every checksum of a committed cache and report what does not match.

It checks that each shard's marker agrees with the manifest, that every object a marker lists
exists with the recorded content hash (a flipped byte, a truncated or missing chunk or
Parquet part all show, compressed or not), that the arrays' metadata matches the manifest's
schema (shape, dtype, and the codec of compressed fields), and that the
rejected table holds as many rows as the manifest counts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from datakiln.cache.chunk_codecs import CODECS, ChunkCodec
from datakiln.cache.fingerprint import (
    CHECKSUM_ALGORITHMS,
    LEGACY_CHECKSUM_ALGORITHM,
    content_hash,
)
from datakiln.cache.layout import check_relative, store_fs
from datakiln.cache.manifest import read_manifest, read_parquet
from datakiln.errors import CacheFormatError


@dataclass(frozen=True, kw_only=True)
class VerifyReport:
    """What ``verify_cache`` found (``datakiln verify``).

    Attributes:
        url: The cache checked.
        objects_checked: Objects whose checksums were recomputed.
        problems: One line per damaged or missing object; empty when the cache is whole.
    """

    url: str
    objects_checked: int
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """True when no problem was found (``datakiln verify`` exits 0)."""
        return not self.problems


def _check_arrays(fs: Any, root: str, manifest: Mapping[str, Any], problems: list[str]) -> None:
    for name, spec in manifest["fields"].items():
        try:
            meta = json.loads(fs.cat_file(f"{root}/{check_relative(spec['path'])}/zarr.json"))
        except (FileNotFoundError, ValueError) as err:
            problems.append(f"field {name!r}: array metadata missing or unreadable ({err})")
            continue
        shape = [manifest["rows"], *spec["shape"]]
        actual = meta.get("shape") or [0]
        if (
            actual[0] < shape[0]
            or actual[1:] != shape[1:]
            or meta.get("data_type") != spec["dtype"]
        ):
            problems.append(
                f"field {name!r}: array is {meta.get('data_type')}{meta.get('shape')}, "
                f"manifest says {spec['dtype']}{shape}"
            )
        if spec.get("chunk_rows") == 1 and spec.get("codec") in CODECS:
            stored = _stored_codec(meta)
            if stored != spec["codec"]:
                problems.append(
                    f"field {name!r}: chunks are stored as {stored or 'something else'}, "
                    f"manifest says codec {spec['codec']}"
                )


def _stored_codec(meta: Mapping[str, Any]) -> str | None:
    """The ``chunk_codecs`` name of a sharded array's inner codecs (None: none of ours)."""
    codecs = meta.get("codecs") or [{}]
    inner = (codecs[0].get("configuration") or {}).get("codecs") or []
    codec = ChunkCodec.from_inner(inner)
    return codec.name if codec is not None else None


def verify_cache(url: str, storage_options: Mapping[str, Any] | None = None) -> VerifyReport:
    """Check the cache at ``url``; never raises for damage, reports it instead.

    Args:
        url: The cache (any fsspec URL or path).
        storage_options: fsspec options for ``url``.

    Returns:
        The objects checked and one line per problem (``datakiln verify`` prints them).

    Raises:
        CacheNotFoundError: There is no manifest to check against.
        CacheFormatError: The manifest is not one this version reads.
    """
    manifest = read_manifest(url, storage_options)
    fs, root = store_fs(url, storage_options)
    problems: list[str] = []
    checked = 0
    _check_arrays(fs, root, manifest, problems)
    for shard in manifest["shards"]:
        sid = shard["id"]
        try:
            marker = json.loads(fs.cat_file(f"{root}/{check_relative(shard['marker'])}"))
        except (FileNotFoundError, ValueError) as err:
            problems.append(f"shard {sid}: completion marker missing or unreadable ({err})")
            continue
        if marker.get("generation_key") != manifest["generation_key"]:
            problems.append(f"shard {sid}: marker belongs to another generation")
        for key in ("row_start", "capacity", "rows"):
            if marker.get(key) != shard[key]:
                problems.append(
                    f"shard {sid}: marker says {key}={marker.get(key)}, manifest {shard[key]}"
                )
        algorithm = marker.get("checksum_algorithm", LEGACY_CHECKSUM_ALGORITHM)
        if algorithm not in CHECKSUM_ALGORITHMS:
            problems.append(f"shard {sid}: marker uses unknown checksum algorithm {algorithm!r}")
            continue
        for key, expected in sorted(marker.get("checksums", {}).items()):
            checked += 1
            try:
                data = fs.cat_file(f"{root}/{check_relative(key)}")
            except FileNotFoundError:
                if expected is not None:
                    problems.append(f"shard {sid}: {key} is missing")
                continue
            if expected is None:
                problems.append(f"shard {sid}: {key} exists but was written as all fill")
            elif content_hash(data, algorithm) != expected:
                problems.append(
                    f"shard {sid}: {key} does not match its checksum ({len(data)} bytes)"
                )
    try:
        rejected = read_parquet(url, manifest["rejected"], storage_options)
        if rejected.num_rows != manifest["counts"]["rejected"]:
            problems.append(
                f"rejected table has {rejected.num_rows} rows, manifest counts "
                f"{manifest['counts']['rejected']}"
            )
    except CacheFormatError as err:
        problems.append(str(err))
    return VerifyReport(url=url, objects_checked=checked, problems=tuple(problems))
