"""datakiln: bake raw media into chunked, checksummed Zarr v3 caches; read them back in JAX.

The public API is what ``__all__`` lists:

* the commands, as functions returning what ``datakiln COMMAND`` prints: :func:`bake`
  (:class:`BakeReport`), :func:`plan` (:class:`PlanSummary`), :func:`verify`
  (:class:`VerifyReport`), :func:`inspect` (a dict, what ``inspect --json`` prints),
  :func:`ls` (:class:`CacheEntry` list) and :func:`gc` (the paths removed);
* the bake spec: :class:`BakeSpec`, its parameter tables (:class:`ImageParams`,
  :class:`TextBakeParams`, :class:`AudioParams`), the fields of records bakes
  (:class:`FieldSpec`, :class:`LabelParams`, :class:`ScalarParams`) and the user's steps
  (:class:`TransformSpec`, :class:`FilterSpec`);
* reading: :func:`open_cache`, :class:`CachedDataset`, :class:`Loader` and the dataset API of
  the seed's data-loading guide (``datakiln.datasets``);
* every error (``datakiln.errors``), and the service's :class:`Client` and :func:`ensure`.

The training side (``open_cache``, the dataset API) stays light: heavy baking modules (Dask,
Pillow, the kernels) load only when ``bake`` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from datakiln.cache.open import CachedDataset, open_cache
from datakiln.datasets import *  # noqa: F403
from datakiln.datasets import __all__ as _datasets_all
from datakiln.errors import (
    AudioDecodeError,
    BakeError,
    CacheFormatError,
    CacheNotFoundError,
    ChecksumMismatchError,
    CommitConflictError,
    DatakilnError,
    ImageDecodeError,
    JobFailedError,
    LeaseHeldError,
    LocalLimitError,
    OutputError,
    ServiceError,
    SourceError,
    SpecError,
    TooManyRejectedError,
    UserCodeError,
)

if TYPE_CHECKING:
    from datakiln.cache.catalog import CacheEntry
    from datakiln.cache.catalog import collect_garbage as gc
    from datakiln.cache.catalog import list_caches as ls
    from datakiln.cache.inspect import describe_cache as inspect
    from datakiln.cache.verify import VerifyReport
    from datakiln.cache.verify import verify_cache as verify
    from datakiln.etl.bake import BakeReport, PlanSummary, bake
    from datakiln.etl.bake import plan_only as plan
    from datakiln.etl.fields import register_codec
    from datakiln.etl.fields.label import LabelParams
    from datakiln.etl.fields.scalar import ScalarParams
    from datakiln.etl.filters import FilterSpec
    from datakiln.etl.spec import AudioParams, BakeSpec, FieldSpec, ImageParams, TextBakeParams
    from datakiln.etl.transforms import TransformSpec
    from datakiln.readers.sources import register_source
    from datakiln.service.client import Client
    from datakiln.service.ensure import ensure

__version__ = "0.1.0"

# Public names loaded on first use, and the module defining each.
_LAZY = {
    "bake": "datakiln.etl.bake",
    "BakeReport": "datakiln.etl.bake",
    "PlanSummary": "datakiln.etl.bake",
    "BakeSpec": "datakiln.etl.spec",
    "FieldSpec": "datakiln.etl.spec",
    "ImageParams": "datakiln.etl.spec",
    "TextBakeParams": "datakiln.etl.spec",
    "AudioParams": "datakiln.etl.spec",
    "LabelParams": "datakiln.etl.fields.label",
    "ScalarParams": "datakiln.etl.fields.scalar",
    "TransformSpec": "datakiln.etl.transforms",
    "FilterSpec": "datakiln.etl.filters",
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


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    *_datasets_all,
    "AudioDecodeError",
    "AudioParams",
    "BakeError",
    "BakeReport",
    "BakeSpec",
    "CacheEntry",
    "CacheFormatError",
    "CacheNotFoundError",
    "CachedDataset",
    "ChecksumMismatchError",
    "Client",
    "CommitConflictError",
    "DatakilnError",
    "FieldSpec",
    "FilterSpec",
    "ImageDecodeError",
    "ImageParams",
    "JobFailedError",
    "LabelParams",
    "LeaseHeldError",
    "LocalLimitError",
    "OutputError",
    "PlanSummary",
    "ScalarParams",
    "ServiceError",
    "SourceError",
    "SpecError",
    "TextBakeParams",
    "TooManyRejectedError",
    "TransformSpec",
    "UserCodeError",
    "VerifyReport",
    "bake",
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
