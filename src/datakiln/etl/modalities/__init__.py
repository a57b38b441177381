"""One module per modality: what its inputs are, what it stores, how a shard is baked.

Every modality implements :class:`datakiln.etl.modalities.base.Modality`; the planner, the
shard runner, the commit and the reader are shared.
"""

from __future__ import annotations

import importlib
from typing import cast

from datakiln.etl.modalities.base import Modality, ShardOutput, Unit

# modality name -> module defining MODALITY
_MODULES = {
    "image": "datakiln.etl.modalities.image",
    "text": "datakiln.etl.modalities.text",
    "audio": "datakiln.etl.modalities.audio",
    "records": "datakiln.etl.modalities.records",
}


def get_modality(name: str) -> Modality:
    """The baker of modality ``name`` (imported on first use)."""
    # every module of _MODULES defines MODALITY (tests bake each one)
    return cast(Modality, importlib.import_module(_MODULES[name]).MODALITY)


__all__ = ["Modality", "ShardOutput", "Unit", "get_modality"]
