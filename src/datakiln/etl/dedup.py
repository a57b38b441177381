"""Deduplication: the first copy of a sample is baked, later copies are rejected naming it.

``dedup = "exact"`` compares content hashes of the raw bytes (the ``content_hash`` the image
and audio bakes already keep; a text sample's UTF-8 text; a record's field hashes and texts).
``dedup = "near"`` compares perceptual keys within ``dedup_distance`` differing bits: for
images a 64-bit pHash (DCT) computed in a JAX kernel on the baked pixels; for text a MinHash
signature of word 3-grams, found through LSH bands.

Each shard task computes its rows' keys and puts them in its marker. Once every shard is done,
``find_duplicates`` walks all live shards in order (committed shards first, so a new file equal
to a baked row is the copy); the shards holding copies are baked again with those rows dropped
(``drops``), rejected at stage ``dedup``. A marker records its drops, so a resumed bake does not
drop twice, and the walk works the same across incremental appends.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from datakiln.errors import SpecError

__all__ = ["DEDUP_MODES", "find_duplicates", "row_keys"]

DEDUP_MODES = ("exact", "near")
#: Differing bits (of 64) within which two image pHashes are near copies by default.
DEFAULT_DISTANCE = 4
#: MinHash permutations of a text signature, and rows per LSH band (16 bands of 4).
MINHASH_PERMUTATIONS = 64
MINHASH_BAND = 4
#: Estimated Jaccard similarity above which two texts are near copies.
TEXT_SIMILARITY = 0.8
_PRIME = (1 << 31) - 1
# fixed seeds: signatures must compare across bakes and processes
_A = np.random.default_rng(20261204).integers(1, _PRIME, MINHASH_PERMUTATIONS).astype(np.uint64)
_B = np.random.default_rng(20261205).integers(0, _PRIME, MINHASH_PERMUTATIONS).astype(np.uint64)


def check_dedup(mode: Any, distance: Any, modality: str) -> None:
    if mode is not None and mode not in DEDUP_MODES:
        raise SpecError(f"dedup must be 'exact' or 'near'; got {mode!r}")
    if not isinstance(distance, int) or isinstance(distance, bool) or not 0 <= distance < 32:
        raise SpecError(f"dedup_distance must be an integer in [0, 32); got {distance!r}")
    if mode == "near" and modality not in ("image", "text"):
        raise SpecError(
            f"dedup = 'near' is for image and text bakes, not {modality}; use dedup = 'exact'"
        )


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def exact_keys(modality: str, meta: Any) -> list[str]:
    """The content key of each row of a shard's metadata table."""
    names = meta.column_names
    if "content_hash" in names:
        return cast(list[str], meta.column("content_hash").to_pylist())  # a string column
    if modality == "text":
        return [_sha(t) for t in meta.column("text").to_pylist()]
    # records: every field's content (hashes of referenced media, texts, values)
    skip = {"source", "position", "record", "source_encoding"}
    cols = [c for c in names if c not in skip and not c.endswith("_uri")]
    rows = zip(*(meta.column(c).to_pylist() for c in cols), strict=True) if cols else ()
    return [_sha(json.dumps(list(r), sort_keys=True, default=str)) for r in rows]


def _shingles(text: str) -> set[bytes]:
    words = text.lower().split()
    grams = [" ".join(words[i : i + 3]) for i in range(max(len(words) - 2, 1))]
    return {g.encode("utf-8") for g in grams if g}


def minhash(text: str) -> str:
    """A MinHash signature of the text's word 3-grams (``MINHASH_PERMUTATIONS`` values).

    Universal hashing modulo the Mersenne prime 2**31 - 1: every product fits in uint64, so
    one numpy expression computes all permutations of all shingles.
    """
    shingles = _shingles(text)
    if not shingles:
        return "0" * 8 * MINHASH_PERMUTATIONS
    x = np.array(
        [int.from_bytes(hashlib.blake2b(s, digest_size=4).digest(), "big") for s in shingles],
        dtype=np.uint64,
    ) % np.uint64(_PRIME)
    values = (_A[:, None] * x[None, :] + _B[:, None]) % np.uint64(_PRIME)
    return "".join(f"{v:08x}" for v in values.min(axis=1).tolist())


def near_keys(
    modality: str, arrays: Mapping[str, np.ndarray | list[str]], meta: Any, rows: int
) -> list[str]:
    if modality == "text":
        return [minhash(t) for t in meta.column("text").to_pylist()]
    from datakiln.etl.kernels.phash import pack_hashes, phash_bits
    from datakiln.etl.transforms import batches

    keys: list[str] = []
    for _, count, batch in batches({"images": arrays["images"]}, rows):
        keys += pack_hashes(np.asarray(phash_bits(batch["images"]))[:count])
    return keys


def row_keys(
    mode: str, modality: str, arrays: Mapping[str, np.ndarray | list[str]], meta: Any, rows: int
) -> list[str]:
    """The dedup key of each of a shard's ``rows`` baked rows."""
    if mode == "exact":
        return exact_keys(modality, meta)
    return near_keys(modality, arrays, meta, rows)


class _NearIndex:
    """Keys seen so far, found through LSH bands.

    64-bit pHashes are split into ``distance + 1`` bands (two hashes within ``distance`` bits
    agree on at least one band), MinHash signatures into bands of ``MINHASH_BAND`` values.
    """

    def __init__(self, text: bool, distance: int) -> None:
        self.text, self.distance = text, distance
        self.buckets: dict[tuple[int, str], list[int]] = {}
        self.keys: list[Any] = []
        self.rows: list[tuple[int, str]] = []

    def _bands(self, key: str) -> list[str]:
        if self.text:
            step = 8 * MINHASH_BAND
            return [key[i : i + step] for i in range(0, len(key), step)]
        bits = format(int(key, 16), "064b")
        n = self.distance + 1
        edges = np.linspace(0, 64, n + 1).astype(int)
        return [bits[edges[i] : edges[i + 1]] for i in range(n)]

    def _value(self, key: str) -> Any:
        if self.text:
            return np.array([int(key[i : i + 8], 16) for i in range(0, len(key), 8)])
        return int(key, 16)

    def match(self, key: str) -> tuple[tuple[int, str], str] | None:
        value = self._value(key)
        best = None
        for band in enumerate(self._bands(key)):
            for k in self.buckets.get(band, ()):
                other = self.keys[k]
                if self.text:
                    similarity = float(np.mean(value == other))
                    if similarity >= TEXT_SIMILARITY and (best is None or similarity > best[0]):
                        best = (similarity, k, f"estimated Jaccard similarity {similarity:.2f}")
                else:
                    d = bin(value ^ other).count("1")
                    if d <= self.distance and (best is None or -d > best[0]):
                        best = (-d, k, f"{d} of 64 pHash bits differ")
        return (self.rows[best[1]], best[2]) if best else None

    def add(self, key: str, row: tuple[int, str]) -> None:
        k = len(self.keys)
        self.keys.append(self._value(key))
        self.rows.append(row)
        for band in enumerate(self._bands(key)):
            self.buckets.setdefault(band, []).append(k)


def find_duplicates(
    markers: Sequence[Any], mode: str, distance: int, modality: str, fixed: set[int]
) -> dict[int, dict[str, str]]:
    """Rows to drop, per shard id: ``{position in the shard: "duplicate of row R (uri)"}``.

    ``markers`` are every live shard's markers in plan order; each holds ``dedup.keys`` and
    ``dedup.uris`` of its rows after filters (dropped ones included, with ``dedup.dropped``).
    The first row with a key is kept. Shards in ``fixed`` (committed by an earlier version)
    keep their rows as they are: they only register keys.
    """
    exact: dict[str, tuple[int, str]] = {}
    near = _NearIndex(modality == "text", distance) if mode == "near" else None
    drops: dict[int, dict[str, str]] = {}
    for marker in markers:
        info = marker.extra.get("dedup") or {}
        keys, uris = info.get("keys", []), info.get("uris", [])
        applied = info.get("dropped") or {}
        is_fixed = marker.shard_id in fixed
        gone = 0  # rows of this shard dropped so far: kept rows are packed
        for i, (key, uri) in enumerate(zip(keys, uris, strict=True)):
            if is_fixed and str(i) in applied:
                gone += 1
                continue
            row = (marker.row_start + i - gone, uri)
            if near is None:
                first = exact.get(key)
                if first is None:
                    exact[key] = row
                    continue
                why = f"duplicate of row {first[0]} ({first[1]})"
            else:
                found = near.match(key)
                if found is None:
                    near.add(key, row)
                    continue
                (first_row, first_uri), how = found
                why = f"near duplicate of row {first_row} ({first_uri}): {how}"
            if not is_fixed:
                gone += 1
                drops.setdefault(marker.shard_id, {})[str(i)] = why
    return drops
