"""Field codecs: what one field of a record means, from its raw value to its stored arrays.

A codec knows a modality: host-side decoding of one value, the jit kernel over a shard's
values, the stored layout and read-time transform, statistics, and its identity in the cache
key. It knows nothing of containers (see ``datakiln.readers.sources``). A new modality is one
module that calls :func:`register_codec`.
"""

from __future__ import annotations

import importlib

from datakiln.errors import SpecError
from datakiln.etl.fields.base import Encoded, FieldCodec, FieldError

_CODECS: dict[str, FieldCodec] = {}
_BUILTIN = {
    "image": "datakiln.etl.fields.image",
    "text": "datakiln.etl.fields.text",
    "audio": "datakiln.etl.fields.audio",
    "label": "datakiln.etl.fields.label",
    "scalar": "datakiln.etl.fields.scalar",
    "json": "datakiln.etl.fields.scalar",
}


def register_codec(codec: FieldCodec) -> FieldCodec:
    """Make ``codec`` available as the modality ``codec.modality``."""
    _CODECS[codec.modality] = codec
    return codec


def get_codec(modality: str) -> FieldCodec:
    """The codec of ``modality`` (built-in ones are imported on first use)."""
    if modality not in _CODECS and modality in _BUILTIN:
        importlib.import_module(_BUILTIN[modality])
    if modality not in _CODECS:
        known = sorted(set(_CODECS) | set(_BUILTIN))
        raise SpecError(f"unknown field modality {modality!r}; known: {', '.join(known)}")
    return _CODECS[modality]


def known_modalities() -> list[str]:
    """The field modalities registered or built in, sorted."""
    return sorted(set(_CODECS) | set(_BUILTIN))


__all__ = ["Encoded", "FieldCodec", "FieldError", "get_codec", "known_modalities", "register_codec"]
