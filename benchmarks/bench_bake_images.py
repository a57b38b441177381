"""Image bake throughput against Pillow decode loops, on the same files in the same run.

    python ../shared/bench/make_corpus.py --out /tmp/corpus
    python benchmarks/bench_bake_images.py --corpus /tmp/corpus --runs 3

Reports medians over ``--runs`` of: Pillow decode-only images/s (open, convert, asarray; one
thread), the same with ``Image.draft`` to the target size (one thread), and ``datakiln.bake``
images/s in this one process (Dask threads), each run into a fresh output, after one
untimed warm-up bake that fills the persistent JAX compilation cache.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import harness
import numpy as np
from PIL import Image

import datakiln


def decode_loop(files: list[Path], size: int | None) -> float:
    """Images/s of one thread opening, converting (drafting to ``size`` if given) ``files``."""
    started = time.perf_counter()
    for path in files:
        with Image.open(path) as im:
            if size is not None:
                im.draft("RGB", (size, size))
            np.asarray(im.convert("RGB"))
    return len(files) / (time.perf_counter() - started)


def _bake(
    files_root: str, out: str, size: int, shard_size: int, workers: int | None, cache: str
) -> float:
    spec = datakiln.BakeSpec(
        sources=(files_root,),
        output=out,
        shard_size=shard_size,
        workers=workers,
        image=datakiln.ImageParams(height=size, width=size),
    )
    elapsed, report = harness.timed(lambda: datakiln.bake(spec, jax_cache_dir=cache))
    assert report.rejected == 0, report.rejected_by_reason
    return report.inputs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="/tmp/corpus")
    parser.add_argument("--subdir", default="images/jpeg")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    record = harness.Recorder("bench_bake_images", args)
    root = Path(args.corpus) / args.subdir
    files = sorted(p for p in root.iterdir() if p.is_file())
    record.facts.update(files=len(files), size=args.size, shard_size=args.shard_size)
    with tempfile.TemporaryDirectory() as tmp:
        cache = f"{tmp}/jax-cache"
        _bake(str(root), f"{tmp}/warm", args.size, args.shard_size, args.workers, cache)
        outs = iter(range(args.runs))
        figures = harness.alternate(
            {
                "pillow_decode": lambda: decode_loop(files, None),
                "pillow_draft": lambda: decode_loop(files, args.size),
                "bake": lambda: _bake(
                    str(root),
                    f"{tmp}/out{next(outs)}",
                    args.size,
                    args.shard_size,
                    args.workers,
                    cache,
                ),
            },
            args.runs,
        )
    record.extend(figures, "images/s")
    record.ratio("bake_vs_draft", "bake", "pillow_draft")
    record.ratio("bake_vs_decode", "bake", "pillow_decode")
    record.write()


if __name__ == "__main__":
    main()
