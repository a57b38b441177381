"""Reading committed caches: open one as a dataset, describe it, verify it, list and clean up.

These are the functions behind ``datakiln inspect``, ``verify``, ``ls`` and ``gc`` (also
``datakiln.inspect``, ``verify``, ``ls`` and ``gc``). The other modules of this package are
the cache's format (``layout``, ``manifest``, ``fingerprint``, ``chunk_codecs``) and its
readers; ``docs/format.md`` describes the format.
"""

from __future__ import annotations

from datakiln.cache.catalog import CacheEntry, collect_garbage, list_caches
from datakiln.cache.inspect import describe_cache
from datakiln.cache.open import CachedDataset, open_cache
from datakiln.cache.verify import VerifyReport, verify_cache

__all__ = [
    "CacheEntry",
    "CachedDataset",
    "VerifyReport",
    "collect_garbage",
    "describe_cache",
    "list_caches",
    "open_cache",
    "verify_cache",
]
