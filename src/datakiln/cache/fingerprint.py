"""Deterministic fingerprints: canonical JSON in, hex digest out.

We hash canonical JSON of plain data (sorted keys, no whitespace), never pickles, and fail
on anything that is not plain JSON rather than silently producing an unstable key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> bytes:
    """Canonical UTF-8 JSON: sorted keys, compact separators, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def fingerprint(value: Any) -> str:
    """SHA-256 hex digest of ``value``'s canonical JSON."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


def content_hash(data: bytes) -> str:
    """Digest of stored bytes (chunks, Parquet parts, raw inputs)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()
