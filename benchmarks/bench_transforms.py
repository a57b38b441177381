"""What user steps cost an image bake: identity transform, exact and near dedup, an nnx embedding.

    python ../shared/bench/make_corpus.py --out /tmp/corpus --pngs 0 --wavs 0 --lines 10
    python benchmarks/bench_transforms.py --corpus /tmp/corpus --runs 3

Each run bakes the same JPEGs once per variant, each into a fresh output, in a rotated order
(so that a change in the machine's load does not favour one variant): the plain bake (the
baseline), an identity transform (it returns the images as they are), ``dedup = "exact"``,
``dedup = "near"``, and the embedding transform of docs/transforms.md (a small Flax ``nnx``
encoder, 64-d float16). One untimed warm-up bake of each variant first fills the persistent
JAX compilation cache. Reports medians of images/s, each variant's cost against the baseline of
the same run, the steps' share of the shard tasks' time (``stage_s["steps"]`` over all stages:
less noisy than wall-clock ratios on a shared machine), and the encoder's own throughput
(jitted, batches of 64, one thread of this process).
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from pathlib import Path

import harness
import jax
import jax.numpy as jnp
import numpy as np

import datakiln

HERE = Path(__file__).resolve().parent
MODULE = "bench_transforms"  # this file, imported by name so bake workers can import it


def identity(batch):
    """The images, returned as they are: what the transform machinery itself costs."""
    return {"images": batch["images"]}


@functools.cache
def _encoder(dim: int):
    from flax import nnx

    class Encoder(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.conv1 = nnx.Conv(3, 16, (3, 3), strides=(2, 2), rngs=rngs)
            self.conv2 = nnx.Conv(16, 32, (3, 3), strides=(2, 2), rngs=rngs)
            self.head = nnx.Linear(32, dim, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.conv1(x))
            x = nnx.relu(self.conv2(x))
            return self.head(x.mean(axis=(1, 2)))

    with jax.ensure_compile_time_eval():
        return Encoder(nnx.Rngs(0))


def embed(batch, dim=64):
    """docs/transforms.md's encoder: a unit-length float16 embedding per image."""
    x = batch["images"].astype(jnp.float32) / 255
    e = _encoder(dim)(x)
    e = e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-6)
    return {"embeddings": e.astype(jnp.float16)}


VARIANTS = {
    "plain": {},
    "identity": {"transforms": [f"{MODULE}:identity"]},
    "exact": {"dedup": "exact"},
    "near": {"dedup": "near"},
    "embed": {"transforms": [f"{MODULE}:embed"]},
}


def _bake(root: str, out: str, args: argparse.Namespace, cache: str, **steps) -> tuple:
    spec = datakiln.BakeSpec(
        sources=(root,),
        output=out,
        shard_size=args.shard_size,
        image=datakiln.ImageParams(height=args.size, width=args.size),
        **steps,
    )
    elapsed, report = harness.timed(lambda: datakiln.bake(spec, jax_cache_dir=cache))
    return report.inputs / elapsed, elapsed, report


def _encoder_throughput(size: int, seconds: float = 3.0) -> float:
    fn = jax.jit(embed)
    batch = {
        "images": jnp.asarray(
            np.random.default_rng(0).integers(0, 256, (64, size, size, 3), dtype=np.uint8)
        )
    }
    fn(batch)["embeddings"].block_until_ready()
    calls = max(
        1, round(seconds / harness.seconds(lambda: fn(batch)["embeddings"].block_until_ready()))
    )
    return harness.per_second(
        64 * calls, lambda: [fn(batch)["embeddings"].block_until_ready() for _ in range(calls)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="/tmp/corpus")
    parser.add_argument("--subdir", default="images/jpeg")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=256)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    __import__(MODULE)
    root = str(Path(args.corpus) / args.subdir)
    record = harness.Recorder("bench_transforms", args)
    names = list(VARIANTS)
    reports: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = f"{tmp}/jax-cache"
        for name in names:
            _bake(root, f"{tmp}/warm-{name}", args, cache, **VARIANTS[name])

        def run(name: str) -> float:
            k = len(record.runs.get(f"{name}_s", []))
            rate, elapsed, report = _bake(root, f"{tmp}/{k}-{name}", args, cache, **VARIANTS[name])
            record.add(f"{name}_s", elapsed, "s")
            stages = report.stage_s
            # the steps' share of the shard tasks' summed stage time: less noisy than
            # wall-clock ratios on a shared machine
            record.add(
                f"{name}_steps_share", stages.get("steps", 0.0) / sum(stages.values()), "fraction"
            )
            reports[name] = report.to_dict()
            return rate

        # the order rotates each run, so a change of load does not favour one variant
        figures = harness.alternate(
            {name: functools.partial(run, name) for name in names}, args.runs, rotate=True
        )
    record.extend(figures, "images/s")
    for name in names[1:]:
        record.ratio(f"{name}_vs_plain", name, "plain")
    encoder = _encoder_throughput(args.size)
    files = reports["plain"]["inputs"]
    record.facts.update(
        files=files,
        size=args.size,
        shard_size=args.shard_size,
        duplicates={k: reports[k]["duplicates"] for k in ("exact", "near")},
        kernel_shapes={k: r["kernel_shapes"] for k, r in reports.items()},
        encoder_images_per_s_one_thread=round(encoder, 1),
        # one thread's seconds of encoder work per second of the embedding bake
        encoder_thread_s_per_bake_s=round(
            files / encoder / harness.median(record.runs["embed_s"]), 2
        ),
    )
    record.write()


if __name__ == "__main__":
    main()
