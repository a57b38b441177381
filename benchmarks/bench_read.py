"""Random-batch and epoch read speed of a baked cache against a float32 memmap floor.

    python ../shared/bench/make_corpus.py --out /tmp/corpus
    python benchmarks/bench_read.py --corpus /tmp/corpus --samples 50000 --runs 3

Builds (once, under --work) a cache of ``--samples`` 64x64x3 images baked from the corpus's
JPEGs (each JPEG linked under several names so the bake sees that many distinct inputs) and a
``numpy.save`` float32 copy of the same decoded data. Then measures, in the same process and
alternating, medians over ``--runs`` of:

- random ``get_batch(indices=...)`` of ``--batch`` samples: datakiln's direct shard reader,
  zarr-python (the reference path, fewer batches), and ``np.load(mmap_mode="r")`` fancy
  indexing converted the same way (the floor);
- one shuffled epoch through ``datakiln.Loader`` (``prefetch=2``, and ``prefetch=0``) against
  the memmap floor read in the same shuffled batches;
- the same two figures for a Hugging Face ``datasets`` Arrow copy (``save_to_disk``, numpy
  format) of the same uint8 data, when ``datasets`` is installed (benchmark-only dependency).
Memory is measured in a fresh subprocess that only iterates one Loader epoch over the cache:
peak RSS and, at the end, anonymous vs file-backed resident memory (memory-mapped shard
pages are file-backed page cache, reclaimable, and shared between processes).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import harness
import numpy as np

import datakiln


def _build(corpus: Path, work: Path, samples: int, shard_size: int) -> tuple[str, Path]:
    out, floor = work / "cache", work / "floor.npy"
    if (out / "manifest.json").exists() and floor.exists():
        return str(out), floor
    jpegs = sorted((corpus / "images" / "jpeg").glob("*.jpg"))
    links = work / "links"
    for k in range(samples):
        link = links / f"r{k // len(jpegs):03d}" / f"{k:06d}.jpg"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            os.symlink(jpegs[k % len(jpegs)], link)
    spec = datakiln.BakeSpec(
        sources=(str(links),),
        output=str(out),
        shard_size=shard_size,
        image=datakiln.ImageParams(height=64, width=64),
    )
    report = datakiln.bake(spec, jax_cache_dir=str(work / "jax-cache"))
    print(f"baked {report.summary_line()} in {report.wall_s:.1f} s", flush=True)
    dataset = datakiln.open_cache(str(out))
    data = np.lib.format.open_memmap(
        floor, mode="w+", dtype=np.float32, shape=(len(dataset), 64, 64, 3)
    )
    for start in range(0, len(dataset), 4096):
        idx = np.arange(start, min(start + 4096, len(dataset)))
        data[idx] = dataset.get_batch(indices=idx)["images"]
    data.flush()
    del data
    return str(out), floor


def _hf_copy(url: str, work: Path) -> object | None:
    """A Hugging Face ``datasets`` Arrow copy of the cache's images (uint8), or None."""
    try:
        import datasets
    except ImportError:
        return None
    path = work / "hf"
    if not path.exists():
        dataset = datakiln.open_cache(url)
        raw_path = dataset.manifest["fields"]["images"]["path"]
        import zarr

        raw = zarr.open_array(url, path=raw_path, mode="r")[: len(dataset)]
        features = datasets.Features({"images": datasets.Array3D((64, 64, 3), "uint8")})
        datasets.Dataset.from_dict({"images": raw}, features=features).save_to_disk(str(path))
    return datasets.load_from_disk(str(path)).with_format("numpy")


def loader_memory_child(url: str, batch: int) -> dict[str, float]:
    """In a fresh process (``harness.spawn``): one Loader epoch, then this process's peak and
    final resident memory (MiB)."""
    dataset = datakiln.open_cache(url)
    loader = datakiln.Loader(dataset, batch, shuffle=True, seed=2, num_epochs=1, prefetch=2)
    for _ in loader:
        pass
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)

    def mib(key: str) -> float:
        return round(int(fields[key].split()[0]) / 1024)

    return {
        "peak_rss_mib": mib("VmHWM"),
        "rss_anon_mib": mib("RssAnon"),
        "rss_file_mib": mib("RssFile"),
    }


def _rate(fn, batches: list[np.ndarray]) -> float:
    def read() -> int:
        return sum(len(fn(idx)) for idx in batches)

    elapsed, n = harness.timed(read)
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="/tmp/corpus")
    parser.add_argument("--work", default="/tmp/datakiln-read-bench")
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    url, floor_path = _build(Path(args.corpus), work, args.samples, args.shard_size)

    fast = datakiln.open_cache(url)
    reference = datakiln.CachedDataset(url, fast=False)
    floor = np.load(floor_path, mmap_mode="r")
    n = len(fast)
    rng = np.random.default_rng(0)
    # warm the page cache for both
    for start in range(0, n, 8192):
        fast.get_batch(indices=np.arange(start, min(n, start + 8192)))
    np.asarray(floor).sum(dtype=np.float64)

    def floor_batch(idx: np.ndarray) -> np.ndarray:
        return np.asarray(floor[np.sort(idx)], dtype=np.float32)

    def fast_batch(idx: np.ndarray) -> np.ndarray:
        return fast.get_batch(indices=idx)["images"]

    def reference_batch(idx: np.ndarray) -> np.ndarray:
        return reference.get_batch(indices=idx)["images"]

    hf = _hf_copy(url, work)

    def hf_batch(idx: np.ndarray) -> np.ndarray:
        return np.asarray(hf[np.sort(idx)]["images"], dtype=np.float32) / np.float32(255)

    record = harness.Recorder("bench_read", args)
    for run in range(args.runs):
        batches = [rng.integers(0, n, args.batch) for _ in range(args.batches)]
        record.add("random_floor_memmap", _rate(floor_batch, batches), "samples/s")
        record.add("random_datakiln", _rate(fast_batch, batches), "samples/s")
        record.add("random_zarr_python", _rate(reference_batch, batches[:5]), "samples/s")
        if hf is not None:
            record.add("random_hf_datasets", _rate(hf_batch, batches[:50]), "samples/s")
        order = np.random.default_rng(1).permutation(n)
        epoch = [order[k : k + args.batch] for k in range(0, n - args.batch + 1, args.batch)]
        record.add("epoch_floor_memmap", _rate(floor_batch, epoch), "samples/s")
        if hf is not None:
            record.add("epoch_hf_datasets", _rate(hf_batch, epoch), "samples/s")
        # alternate which setting runs first, so neither always follows the HF epoch
        for prefetch in (2, 0) if run % 2 == 0 else (0, 2):
            loader = datakiln.Loader(
                fast, args.batch, shuffle=True, seed=1, num_epochs=1, prefetch=prefetch
            )
            elapsed, count = harness.timed(
                lambda loader=loader: sum(len(b["images"]) for b in loader)
            )
            key = "epoch_datakiln_loader" + ("" if prefetch else "_prefetch0")
            record.add(key, count / elapsed, "samples/s")
    record.ratio("random_vs_floor", "random_datakiln", "random_floor_memmap")
    record.ratio("random_hf_vs_floor", "random_hf_datasets", "random_floor_memmap")
    record.ratio("epoch_vs_floor", "epoch_datakiln_loader", "epoch_floor_memmap")
    record.ratio(
        "epoch_prefetch0_vs_floor", "epoch_datakiln_loader_prefetch0", "epoch_floor_memmap"
    )
    record.ratio("epoch_hf_vs_floor", "epoch_hf_datasets", "epoch_floor_memmap")
    record.facts.update(
        samples=n,
        batch=args.batch,
        batches_per_run=args.batches,
        cache_bytes_on_disk=sum(p.stat().st_size for p in Path(url).rglob("*") if p.is_file()),
        loader_epoch_memory=harness.spawn(loader_memory_child, url, args.batch),
    )
    record.write()


if __name__ == "__main__":
    main()
