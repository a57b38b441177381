"""ImageNet-like bakes and reads: codecs at 224/256 px against Pillow and a uint8 memmap floor.

    python benchmarks/photo_corpus.py --out /tmp/photos --n 1200
    python benchmarks/bench_imagenet.py --corpus /tmp/photos --work /tmp/bench-imagenet --runs 3

All in one process, medians over ``--runs``:

1. **Bake throughput** at 224 with ``fit="center-crop"`` and at 256 with ``fit="stretch"``,
   for ``codec="none"`` and ``"jpeg"`` (quality 90), each run into a fresh output, against
   two single-thread Pillow loops over the same files in the same run: plain decode (open,
   convert to RGB) and draft decode (``Image.draft`` to the target size first, what the bake
   does). One untimed bake first fills the JAX compilation cache.
2. **Disk per sample** of every codec at 256 stretch (and of the source JPEGs).
3. **Warm reads** of each 256-px cache: random ``get_batch(indices=...)`` of ``--batch``
   samples, and shuffled epochs through ``datakiln.Loader`` (``prefetch=2``, three epochs in
   one Loader), against the floor: the same uint8 pixels in one ``.npy`` file read with
   ``np.load(mmap_mode="r")``, gathered and scaled to float32 into reused buffers.
4. **Cold reads**: one epoch after evicting every file of the store (and of the floor)
   from the page cache, so each sample comes from disk once, as when the store is larger than
   the free page cache. Eviction: ``sync; echo 3 > /proc/sys/vm/drop_caches`` when writable
   (root), else ``posix_fadvise(POSIX_FADV_DONTNEED)`` on each file; the result says which.
5. **The size threshold** of ``codec="auto"``: at each ``--sweep`` size (stretch), ``none``
   against ``jpeg``: disk per sample, warm random batches, warm and cold epochs.
6. **Codec costs**: one thread encoding and decoding 200 of the 256-px images with each codec
   (``ChunkCodec.encode`` / ``decode_into``, what the bake and the reader call), and decoding
   with two threads.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import harness
import numpy as np
from bench_bake_images import decode_loop
from photo_corpus import write_photo_corpus

import datakiln
from datakiln.cache.inspect import describe_cache

CODECS = ("none", "zstd", "blosc-lz4", "png", "jpeg")
# Warm "epoch" figures run this many shuffled epochs in one Loader, so that filling and
# draining its prefetch queue (a few batches an epoch here) does not dominate; cold ones one.
WARM_EPOCHS = 3


def _bake(
    root: Path, out: Path, size: int, fit: str, codec: str, args: argparse.Namespace
) -> float:
    spec = datakiln.BakeSpec(
        sources=(str(root),),
        output=str(out),
        shard_size=args.shard_size,
        image=datakiln.ImageParams(height=size, width=size, fit=fit, codec=codec, labels="parent"),
    )
    elapsed, report = harness.timed(
        lambda: datakiln.bake(spec, jax_cache_dir=str(args.work / "jax-cache"))
    )
    assert report.rejected == 0, report.rejected_by_reason
    return report.inputs / elapsed


def _evict(paths: list[Path]) -> str:
    """Drop ``paths`` (files or folders) from the page cache; returns the method used."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "drop_caches"
    except OSError:
        pass
    for path in paths:
        for file in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
            fd = os.open(file, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return "posix_fadvise(DONTNEED)"


def _floor(cache: Path, work: Path) -> np.memmap:
    """The uint8 pixels of ``cache`` as one ``.npy`` file, memory-mapped."""
    path = work / f"floor-{cache.name}.npy"
    if not path.exists():
        dataset = datakiln.open_cache(str(cache), dtype="raw")
        n = len(dataset)
        first = dataset.read_batch(np.arange(1))["images"]
        data = np.lib.format.open_memmap(
            path, mode="w+", dtype=np.uint8, shape=(n, *first.shape[1:])
        )
        for start in range(0, n, 256):
            idx = np.arange(start, min(n, start + 256))
            data[idx] = dataset.read_batch(idx)["images"]
        data.flush()
        del data
    return np.load(path, mmap_mode="r")


class _Floor:
    """The floor's reader: one gather from the memmap into a reused uint8 buffer, then one
    scale into a reused float32 buffer (what a reader that knows the layout cannot beat)."""

    def __init__(self, floor: np.memmap, batch: int) -> None:
        self.floor = floor
        self.raw = np.empty((batch, *floor.shape[1:]), np.uint8)
        self.out = np.empty(self.raw.shape, np.float32)

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        np.take(self.floor, np.sort(idx), axis=0, out=self.raw, mode="clip")  # no bounce buffer
        return np.multiply(self.raw, np.float32(1 / 255), out=self.out)


def _random_rate(read, n: int, batch: int, batches: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    picks = [rng.integers(0, n, batch) for _ in range(batches)]
    return harness.per_second(batch * batches, lambda: [read(idx) for idx in picks])


def _epoch_rate(dataset, batch: int, seed: int, epochs: int = WARM_EPOCHS) -> float:
    loader = datakiln.Loader(dataset, batch, shuffle=True, seed=seed, num_epochs=epochs, prefetch=2)
    elapsed, count = harness.timed(lambda: sum(len(b["indices"]) for b in loader))
    return count / elapsed


def _floor_epoch_rate(read: _Floor, batch: int, seed: int, epochs: int = WARM_EPOCHS) -> float:
    floor = read.floor
    rng = np.random.default_rng(seed)

    def epochs_of_reads() -> None:
        for _ in range(epochs):
            order = rng.permutation(len(floor))
            for start in range(0, len(order) - batch + 1, batch):
                read(order[start : start + batch])

    return harness.per_second(epochs * (len(floor) // batch) * batch, epochs_of_reads)


def _warm_reads(
    caches: dict[str, Path], floor: np.memmap, args: argparse.Namespace, record: harness.Recorder
) -> None:
    n = len(floor)
    datasets = {codec: datakiln.open_cache(str(path)) for codec, path in caches.items()}
    for dataset in datasets.values():  # warm the page cache and the decoders
        _random_rate(lambda i, d=dataset: d.get_batch(indices=i), n, args.batch, 2, 99)
    read_floor = _Floor(floor, args.batch)  # its buffers are reused, as the reader's are
    _random_rate(read_floor, n, args.batch, 2, 99)
    for run in range(args.runs):
        record.add(
            "warm.floor.random_batch",
            _random_rate(read_floor, n, args.batch, args.batches, run),
            "samples/s",
        )
        record.add("warm.floor.epoch", _floor_epoch_rate(read_floor, args.batch, run), "samples/s")
        for codec, dataset in datasets.items():
            read = dataset.get_batch
            record.add(
                f"warm.{codec}.random_batch",
                _random_rate(lambda i, r=read: r(indices=i), n, args.batch, args.batches, run),
                "samples/s",
            )
            record.add(f"warm.{codec}.epoch", _epoch_rate(dataset, args.batch, run), "samples/s")
    for codec in caches:
        for kind in ("random_batch", "epoch"):
            record.ratio(
                f"warm.{codec}.{kind}_vs_floor", f"warm.{codec}.{kind}", f"warm.floor.{kind}"
            )


def _cold_reads(
    caches: dict[str, Path], floor_path: Path, args: argparse.Namespace, record: harness.Recorder
) -> str:
    method = ""
    for run in range(args.runs):
        method = _evict([floor_path])
        read_floor = _Floor(np.load(floor_path, mmap_mode="r"), args.batch)
        read_floor.out.fill(0)  # touch the buffers before the clock starts
        read_floor.raw.fill(0)
        record.add(
            "cold.floor", _floor_epoch_rate(read_floor, args.batch, run, epochs=1), "samples/s"
        )
        for codec, path in caches.items():
            method = _evict([path])
            dataset = datakiln.open_cache(str(path))
            record.add(
                f"cold.{codec}", _epoch_rate(dataset, args.batch, run, epochs=1), "samples/s"
            )
    for codec in caches:
        record.ratio(f"cold.{codec}_vs_floor", f"cold.{codec}", "cold.floor")
    return method


def _sweep(args: argparse.Namespace, n: int, files: int, record: harness.Recorder) -> dict:
    """none against jpeg at each size, alternating within each run."""
    sweep: dict[str, dict] = {}
    for size in [int(v) for v in args.sweep.split(",") if v]:
        caches = {}
        for codec in ("none", "jpeg"):
            caches[codec] = args.work / f"cache-{size}-{codec}"
            if not (caches[codec] / "manifest.json").exists():
                _bake(args.corpus, caches[codec], size, "stretch", codec, args)
        datasets = {codec: datakiln.open_cache(str(path)) for codec, path in caches.items()}
        for dataset in datasets.values():
            _random_rate(lambda i, d=dataset: d.get_batch(indices=i), n, args.batch, 2, 99)
        for run in range(args.runs):
            for codec, dataset in datasets.items():
                name = f"sweep.{size}-{codec}"
                read = dataset.get_batch
                record.add(
                    f"{name}.random_batch",
                    _random_rate(lambda i, r=read: r(indices=i), n, args.batch, args.batches, run),
                    "samples/s",
                )
                record.add(f"{name}.epoch", _epoch_rate(dataset, args.batch, run), "samples/s")
                _evict([caches[codec]])
                cold = datakiln.open_cache(str(caches[codec]))
                record.add(
                    f"{name}.cold_epoch", _epoch_rate(cold, args.batch, run, epochs=1), "samples/s"
                )
        for codec, path in caches.items():
            field = describe_cache(str(path))["fields"]["images"]
            sweep[f"{size}-{codec}"] = {
                "raw_bytes_per_sample": size * size * 3,
                "bytes_per_sample": round(field["on_disk_bytes"] / files),
            }
    return sweep


def _codec_costs(cache: Path, runs: int, record: harness.Recorder) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from datakiln.cache.chunk_codecs import ChunkCodec

    images = datakiln.open_cache(str(cache), dtype="raw").read_batch(np.arange(200))["images"]
    out = np.empty_like(images)
    for name in CODECS[1:]:
        codec = ChunkCodec(name)
        chunks = [codec.encode(image) for image in images]

        def decode(part: range, codec=codec, chunks=chunks) -> None:
            for k in part:
                codec.decode_into(chunks[k], out[k])

        def decode_2_threads(decode=decode) -> None:
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(decode, [range(0, 100), range(100, 200)]))

        def encode(codec=codec) -> None:
            for image in images:
                codec.encode(image)

        steps = {
            "encode": encode,
            "decode": lambda decode=decode: decode(range(len(images))),
            "decode_2_threads": decode_2_threads,
        }
        for _ in range(runs):
            for step, fn in steps.items():
                ms = harness.seconds(fn) * 1000 / len(images)
                record.add(f"codec.{name}.{step}", ms, "ms/image")
        np.testing.assert_array_equal(out[0] if name != "jpeg" else images[0], images[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/photos"))
    parser.add_argument("--n", type=int, default=1200, help="corpus images (made if missing)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-imagenet"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=8, help="random batches per run")
    parser.add_argument("--parts", default="1,2,3,4,5,6", help="parts to run (2 always)")
    parser.add_argument("--sweep", default="64,128,192", help="sizes of part 5 (256: parts 2-4)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    record = harness.Recorder("bench_imagenet", args)
    files = write_photo_corpus(args.corpus, args.n)
    record.facts.update(
        files=len(files),
        source_jpeg_bytes_per_sample=round(sum(p.stat().st_size for p in files) / len(files)),
    )
    parts = {int(p) for p in args.parts.split(",") if p}

    # 1. bake throughput against Pillow in the same run
    if 1 in parts:
        _bake(args.corpus, args.work / "warm", 64, "stretch", "none", args)
    for size, fit in ((224, "center-crop"), (256, "stretch")) if 1 in parts else ():
        for codec in ("none", "jpeg"):
            name = f"bake.{size}-{fit}-{codec}"
            outs = iter(range(args.runs))

            def bake(size=size, fit=fit, codec=codec, name=name, outs=outs) -> float:
                out = args.work / f"{name}-{next(outs)}"
                shutil.rmtree(out, ignore_errors=True)
                return _bake(args.corpus, out, size, fit, codec, args)

            figures = harness.alternate(
                {
                    "plain_decode": lambda: decode_loop(files, None),
                    "draft_decode": lambda size=size: decode_loop(files, size),
                    "bake": bake,
                },
                args.runs,
            )
            record.extend(figures, "images/s", prefix=f"{name}.")
            record.ratio(f"{name}.bake_vs_draft", f"{name}.bake", f"{name}.draft_decode")
            record.ratio(f"{name}.bake_vs_plain", f"{name}.bake", f"{name}.plain_decode")
            print(name, json.dumps(record.medians()), flush=True)

    # 2. disk per sample, every codec, 256 stretch
    caches: dict[str, Path] = {}
    disk: dict[str, dict] = {}
    for codec in CODECS:
        out = args.work / f"cache-256-{codec}"
        if not (out / "manifest.json").exists():
            _bake(args.corpus, out, 256, "stretch", codec, args)
        caches[codec] = out
        field = describe_cache(str(out))["fields"]["images"]
        disk[codec] = {
            "bytes_per_sample": round(field["on_disk_bytes"] / len(files)),
            "disk_ratio": field["disk_ratio"],
        }
    record.facts["disk_256"] = disk

    # 3. warm reads against the uint8 memmap floor
    floor = _floor(caches["none"], args.work)
    n = len(floor)
    if n < args.batch:
        raise SystemExit(f"--batch {args.batch} is more than the {n} samples: use a larger --n")
    if 3 in parts:
        _warm_reads(caches, floor, args, record)

    # 4. cold epochs: every file evicted from the page cache first
    if 4 in parts:
        floor_path = args.work / f"floor-{caches['none'].name}.npy"
        record.facts["cold_eviction"] = _cold_reads(caches, floor_path, args, record)

    # 5. where jpeg starts to pay: none against jpeg by stored size
    if 5 in parts:
        record.facts["sweep_disk"] = _sweep(args, n, len(files), record)

    # 6. per-image encode and decode costs of each codec
    if 6 in parts:
        _codec_costs(caches["none"], args.runs, record)
    record.write()


if __name__ == "__main__":
    main()
