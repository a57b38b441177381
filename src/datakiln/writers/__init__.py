"""Writing a cache's objects: Zarr shard objects, Parquet parts, completion markers."""
