"""Writers: the Zarr v3 arrays, Parquet tables and completion markers of a bake's shards.

Internal to the bake; ``docs/format.md`` describes what they write.
"""

# Modules, not names: a shard task imports only the writer it needs.
__all__ = ["marker", "parquet", "shard_encoder", "zarr_region"]
