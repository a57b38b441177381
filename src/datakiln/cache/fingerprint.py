"""Deterministic fingerprints: canonical JSON in, hex digest out.

We hash canonical JSON of plain data (sorted keys, no whitespace), never pickles, and fail
on anything that is not plain JSON rather than silently producing an unstable key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol


def canonical_json(value: Any) -> bytes:
    """Canonical UTF-8 JSON: sorted keys, compact separators, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def fingerprint(value: Any) -> str:
    """SHA-256 hex digest of ``value``'s canonical JSON."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


# Digest of stored objects and raw inputs. SHA-256 runs at ~1.8 GB/s on CPUs with SHA
# instructions (x86 SHA-NI, ARMv8 crypto) against ~0.7 GB/s for BLAKE2b, and hashing is a
# visible share of a bake's CPU (audio: ~15%). Markers name the algorithm they used.
CHECKSUM_ALGORITHM = "sha256"
# What markers written before they named an algorithm used.
LEGACY_CHECKSUM_ALGORITHM = "blake2b-128"
CHECKSUM_ALGORITHMS = (CHECKSUM_ALGORITHM, LEGACY_CHECKSUM_ALGORITHM)


def content_hash(data: bytes, algorithm: str = CHECKSUM_ALGORITHM) -> str:
    """Hex digest of stored bytes (chunks, Parquet parts, raw inputs)."""
    if algorithm == CHECKSUM_ALGORITHM:
        return hashlib.sha256(data).hexdigest()
    if algorithm == LEGACY_CHECKSUM_ALGORITHM:
        return hashlib.blake2b(data, digest_size=16).hexdigest()
    raise ValueError(f"unknown checksum algorithm {algorithm!r}; known: {CHECKSUM_ALGORITHMS}")


class BinaryReader(Protocol):
    """What ``hashlib.file_digest`` reads from: a binary file open for reading."""

    def readable(self) -> bool: ...

    def readinto(self, buffer: bytearray, /) -> int: ...


def content_hash_file(f: BinaryReader) -> str:
    """``content_hash`` of a binary file's remaining bytes, read in blocks, never whole."""
    return hashlib.file_digest(f, CHECKSUM_ALGORITHM).hexdigest()
