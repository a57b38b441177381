"""The jit kernels a shard task runs: image resize, audio features, tokenizers, pHash."""
