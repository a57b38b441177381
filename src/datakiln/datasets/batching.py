"""Batches and samples: stacking samples into a batch, taking rows out, padding the last one.

A *batch* is a dict whose per-sample entries have a leading axis of the batch size: arrays
(NumPy or JAX) or, for strings, lists. A *sample* is one row of it. As in the seed guide a few
batch keys are plural where the sample key is singular (``"indices"`` -> ``"index"``,
``"texts"`` -> ``"text"``, ``"paths"`` -> ``"path"``); every other key is the same in both.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from datakiln.errors import SpecError

# Batch key -> sample key where the seed guide names them differently.
SAMPLE_KEYS: Mapping[str, str] = types.MappingProxyType(
    {"indices": "index", "texts": "text", "paths": "path"}
)
# Sample key -> batch key, the inverse of SAMPLE_KEYS.
BATCH_KEYS: Mapping[str, str] = types.MappingProxyType({v: k for k, v in SAMPLE_KEYS.items()})


def batch_size_of(batch: Mapping[str, Any]) -> int:
    """The number of rows of ``batch``.

    That is the length of ``batch["indices"]`` if there is one, else of ``batch["images"]``,
    else of the first entry with a leading axis. Entries of another length are not per-sample.

    Raises:
        SpecError: No entry has a leading axis.
    """
    for key in ("indices", "images", *batch):
        size = _rows(batch[key]) if key in batch else None
        if size is not None:
            return size
    raise SpecError(f"batch has no per-sample entries (keys {sorted(batch)})")


def _rows(value: Any) -> int | None:
    if isinstance(value, list | tuple):
        return len(value)
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) >= 1:
        return int(shape[0])
    return None


def take_rows(batch: Mapping[str, Any], rows: Any) -> dict[str, Any]:
    """The batch made of ``rows`` (an int array or boolean mask) of ``batch``.

    Entries whose leading length is not the batch size (scalars, metadata) are kept as they are.
    """
    size = batch_size_of(batch)
    rows = np.asarray(rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if _rows(value) != size:
            out[key] = value
        elif isinstance(value, list | tuple):
            out[key] = [value[int(i)] for i in rows]
        else:
            out[key] = value[rows]
    return out


def unbatch(batch: Mapping[str, Any], row: int) -> dict[str, Any]:
    """Row ``row`` of ``batch`` as a sample, with sample key names (``index``, ``text``, ...)."""
    size = batch_size_of(batch)
    sample: dict[str, Any] = {}
    for key, value in batch.items():
        name = SAMPLE_KEYS.get(key, key)
        sample[name] = value[row] if _rows(value) == size else value
    return sample


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch: arrays and numbers with ``np.stack``, anything else in lists.

    Sample keys are renamed to batch keys (``index`` -> ``indices``, ``text`` -> ``texts``).
    Every sample must have the same keys; arrays under one key must have one shape.

    Raises:
        SpecError: ``samples`` is empty, or the samples' keys or shapes differ.
    """
    if not samples:
        raise SpecError("cannot collate an empty list of samples")
    keys = list(samples[0])
    batch: dict[str, Any] = {}
    for n, sample in enumerate(samples):
        if list(sample) != keys:
            raise SpecError(f"sample {n} has keys {list(sample)}, but sample 0 has {keys}")
    for key in keys:
        values = [sample[key] for sample in samples]
        name = BATCH_KEYS.get(key, key)
        if all(_is_numeric(v) for v in values):
            arrays = [np.asarray(v) for v in values]
            shapes = {a.shape for a in arrays}
            if len(shapes) != 1:
                raise SpecError(
                    f"cannot stack {key!r}: samples have shapes {sorted(shapes)}; "
                    "pad them to one shape first"
                )
            batch[name] = np.stack(arrays)
        else:
            batch[name] = values
    return batch


def _is_numeric(value: Any) -> bool:
    if isinstance(value, bool | int | float | np.number | np.bool_):
        return True
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    return kind is not None and kind in "biufc" and getattr(value, "shape", None) is not None


def pad_batch(
    batch: Mapping[str, Any], target_size: int, *, mask_key: str | None = "mask"
) -> dict[str, Any]:
    """Pad ``batch`` to ``target_size`` rows by repeating its last sample, in every entry.

    The seed guide pads only ``"images"``, leaving the other entries one length short; this
    pads every per-sample entry and, unless ``mask_key`` is ``None``, adds a boolean
    ``batch[mask_key]`` that is ``True`` for real rows and ``False`` for padding, so losses
    and metrics can ignore the copies. A batch already at ``target_size`` gets only the mask.

    Args:
        batch: A batch dict (see module doc).
        target_size: Rows wanted; at least the batch's size.
        mask_key: Name of the validity mask to add, or ``None`` for none.

    Returns:
        A new dict; ``batch`` is not modified.

    Raises:
        SpecError: The batch is empty or larger than ``target_size``.
    """
    size = batch_size_of(batch)
    if size > target_size:
        raise SpecError(
            f"batch has {size} rows, more than target_size={target_size}; "
            "use a target at least the batch size"
        )
    if size == 0:
        raise SpecError("cannot pad an empty batch: there is no sample to repeat")
    rows = np.concatenate([np.arange(size), np.full(target_size - size, size - 1)])
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if _rows(value) != size:
            out[key] = value
        elif isinstance(value, list | tuple):
            out[key] = [value[int(i)] for i in rows]
        elif isinstance(value, np.ndarray):
            out[key] = value[rows]
        else:
            last = value[-1:]
            out[key] = jnp.concatenate([value, jnp.repeat(last, target_size - size, axis=0)])
    if mask_key is not None:
        out[mask_key] = np.arange(target_size) < size
    return out
