"""The bake: its spec, planning, the shard tasks, the user's steps and the commit.

The public names are re-exported by ``datakiln``: ``bake`` and ``plan`` (``bake.py``),
``BakeSpec`` and its parameter tables (``spec.py``), ``register_codec`` (``fields``).
"""

# Modules, not names: the bake's modules load Dask and JAX, which ``import datakiln`` avoids.
__all__ = [
    "bake",
    "dedup",
    "fields",
    "filters",
    "kernels",
    "lease",
    "modalities",
    "plan",
    "spec",
    "transforms",
]
