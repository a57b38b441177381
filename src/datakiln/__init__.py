"""datakiln: bake raw media into chunked, checksummed Zarr v3 caches; read them back in JAX.

The training side (``open_cache``, the dataset API) stays light: heavy baking modules (Dask,
Pillow, the kernels) load only when ``bake`` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from datakiln.cache.open import CachedDataset, open_cache
from datakiln.datasets import *  # noqa: F403
from datakiln.datasets import __all__ as _datasets_all
from datakiln.errors import (
    BakeError,
    CacheFormatError,
    CacheNotFoundError,
    ChecksumMismatchError,
    DatakilnError,
    OutputError,
    SourceError,
    SpecError,
    TooManyRejectedError,
)

if TYPE_CHECKING:
    from datakiln.cache.catalog import CacheEntry
    from datakiln.cache.catalog import collect_garbage as gc
    from datakiln.cache.catalog import list_caches as ls
    from datakiln.cache.inspect import describe_cache as inspect
    from datakiln.cache.verify import VerifyReport
    from datakiln.cache.verify import verify_cache as verify
    from datakiln.etl.bake import BakeReport
    from datakiln.etl.bake import plan_only as plan
    from datakiln.etl.fields import register_codec
    from datakiln.etl.spec import AudioParams, BakeSpec, FieldSpec, ImageParams
    from datakiln.readers.sources import register_source
    from datakiln.service.client import Client
    from datakiln.service.ensure import ensure

__version__ = "0.1.0"

_LAZY = {
    "bake": "datakiln.etl.bake",
    "BakeReport": "datakiln.etl.bake",
    "BakeSpec": "datakiln.etl.spec",
    "FieldSpec": "datakiln.etl.spec",
    "ImageParams": "datakiln.etl.spec",
    "AudioParams": "datakiln.etl.spec",
    "register_codec": "datakiln.etl.fields",
    "register_source": "datakiln.readers.sources",
    "Client": "datakiln.service.client",
    "CacheEntry": "datakiln.cache.catalog",
    "VerifyReport": "datakiln.cache.verify",
    "ensure": "datakiln.service.ensure",
}
# Public names whose definition has another name (each is a command of the CLI).
_ALIASES = {
    "plan": ("datakiln.etl.bake", "plan_only"),
    "verify": ("datakiln.cache.verify", "verify_cache"),
    "inspect": ("datakiln.cache.inspect", "describe_cache"),
    "ls": ("datakiln.cache.catalog", "list_caches"),
    "gc": ("datakiln.cache.catalog", "collect_garbage"),
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _ALIASES:
        module, attribute = _ALIASES[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'datakiln' has no attribute {name!r}")


__all__ = [
    *_datasets_all,
    "AudioParams",
    "BakeError",
    "BakeReport",
    "BakeSpec",
    "CacheEntry",
    "CacheFormatError",
    "CacheNotFoundError",
    "CachedDataset",
    "Client",
    "ChecksumMismatchError",
    "DatakilnError",
    "FieldSpec",
    "ImageParams",
    "OutputError",
    "SourceError",
    "SpecError",
    "TooManyRejectedError",
    "VerifyReport",
    "bake",  # noqa: F405 (lazy, see __getattr__)
    "ensure",
    "gc",
    "inspect",
    "ls",
    "open_cache",
    "plan",
    "register_codec",
    "register_source",
    "verify",
]
