"""Training from a remote cache: local_dir epochs, the fetch floor, raw batches, device_put, RSS.

    python ../shared/bench/make_corpus.py --out /tmp/corpus
    python benchmarks/bench_remote.py --corpus /tmp/corpus --samples 4000 --runs 3

Bakes (once, under --work) ``--samples`` 64x64x3 images from the corpus's JPEGs, uploads the
cache to a moto S3 server on loopback (started here, as in the tests), and measures, in one
invocation, medians over ``--runs`` (runs alternate between the compared sides):

1. the second epoch of a ``Loader`` over S3 through ``local_dir`` (the limit holds the cache)
   against one epoch over the local cache, same settings (full shuffle, batch ``--batch``);
2. the first epoch over S3 through a fresh ``local_dir`` against a floor that fetches the
   same objects whole with one ``s3fs`` ``cat_ranges`` call (concurrent) and does nothing else;
3. random ``read_batch`` of ``--batch`` samples with ``dtype="raw"`` against fancy indexing
   of a uint8 ``np.load(mmap_mode="r")`` copy of the same data;
4. an epoch of ``Loader(dtype="raw" cache, device_put=True)`` against a plain loop that calls
   ``jax.device_put`` on memmap batches of the same indices (CPU device);
5. peak RSS of a fresh process iterating one epoch over S3 with ``local_limit`` a quarter of
   the cache (``BlockShuffle`` of one shard per block), against its RSS right after opening.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import harness
import numpy as np

import datakiln

OPTIONS = {"key": "testing", "secret": "testing-secret-key"}


def _build(corpus: Path, work: Path, samples: int, shard_size: int) -> str:
    out = work / "cache"
    if (out / "manifest.json").exists():
        return str(out)
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
    return str(out)


def _upload(local: str, options: dict) -> str:
    import s3fs

    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("bench-remote")
    for path in Path(local).rglob("*"):
        if path.is_file():
            fs.pipe_file(f"bench-remote/cache/{path.relative_to(local)}", path.read_bytes())
    return "s3://bench-remote/cache"


def _epoch_s(loader: datakiln.Loader, epoch: int) -> float:
    """Seconds to iterate ``epoch`` of ``loader`` (the loader is positioned at its start)."""
    loader.set_epoch(epoch)
    loader.num_epochs = epoch + 1  # no reading ahead into the next epoch
    start = time.perf_counter()
    for got, _ in loader.iter_with_epoch():
        if got != epoch:
            break
    return time.perf_counter() - start


def _hwm_mib() -> float:
    """VmHWM: this process image's peak RSS (ru_maxrss would carry the parent's over exec)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def rss_child(url: str, options: dict, folder: str, limit: int, batch: int, block: int) -> dict:
    """In a fresh process (``harness.spawn``): one epoch over S3 through ``local_dir`` with
    ``local_limit``; its RSS after opening and at its peak (MiB)."""
    dataset = datakiln.open_cache(
        url,
        storage_options=options,
        local_dir=folder,
        local_limit=limit,
        local_window=limit * 4 // 5,
    )
    opened = _hwm_mib()
    shuffle = datakiln.BlockShuffle(block_size=block, window_size=block)
    loader = datakiln.Loader(
        dataset, batch, shuffle=shuffle, seed=0, num_epochs=1, shard_index=0, shard_count=1
    )
    rows = sum(len(b["indices"]) for b in loader)
    return {
        "rows": rows,
        "opened_mib": opened,
        "peak_mib": _hwm_mib(),
        "usage": dataset.local.usage(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="/tmp/corpus")
    parser.add_argument("--work", default="/tmp/datakiln-remote-bench")
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import jax

    record = harness.Recorder("bench_remote", args)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    local = _build(Path(args.corpus), work, args.samples, args.shard_size)
    cache_bytes = sum(p.stat().st_size for p in Path(local).rglob("*") if p.is_file())
    with harness.moto_server() as endpoint:
        options = {**OPTIONS, "endpoint_url": endpoint}
        url = _upload(local, options)
        _measure(args, jax, local, url, options, cache_bytes, work, record)
    record.facts.update(samples=args.samples, cache_mib=round(cache_bytes / 2**20, 1))
    record.write()


def _measure(args, jax, local, url, options, cache_bytes, work, record) -> None:
    import s3fs

    settings = {"seed": 0, "shard_index": 0, "shard_count": 1, "prefetch": 2}
    limit = 4 * cache_bytes  # the whole cache and a full-shuffle window fit
    folder = work / "local-dir"
    shutil.rmtree(folder, ignore_errors=True)
    local_ds = datakiln.open_cache(local)
    local_loader = datakiln.Loader(local_ds, args.batch, **settings)
    remote = datakiln.open_cache(
        url, storage_options=options, local_dir=str(folder), local_limit=limit
    )
    remote_loader = datakiln.Loader(remote, args.batch, **settings)
    _epoch_s(remote_loader, 0)  # fills the directory
    second, local_epoch = [], []
    for run in range(args.runs):
        local_epoch.append(_epoch_s(local_loader, run + 1))
        second.append(_epoch_s(remote_loader, run + 1))
    remote.local.close()

    fs = s3fs.S3FileSystem(**options)
    objects = remote.objects_of(np.arange(len(remote)))
    root = url.removeprefix("s3://")
    sizes = [remote.local.size(k) for k in objects]
    first, floor = [], []
    for _ in range(args.runs):
        fs.invalidate_cache()
        start = time.perf_counter()
        got = fs.cat_ranges([f"{root}/{k}" for k in objects], [0] * len(objects), sizes)
        floor.append(time.perf_counter() - start)
        assert sum(map(len, got)) == sum(sizes)
        shutil.rmtree(folder, ignore_errors=True)
        fresh = datakiln.open_cache(
            url, storage_options=options, local_dir=str(folder), local_limit=limit
        )
        first.append(_epoch_s(datakiln.Loader(fresh, args.batch, **settings), 0))
        fresh.local.close()

    raw = datakiln.open_cache(local, dtype="raw")
    memmap_path = work / "uint8.npy"
    if not memmap_path.exists():
        data = np.lib.format.open_memmap(
            memmap_path, mode="w+", dtype=np.uint8, shape=(len(raw), 64, 64, 3)
        )
        for start in range(0, len(raw), 1024):
            idx = np.arange(start, min(start + 1024, len(raw)))
            data[idx] = raw.read_batch(idx)["images"]
        data.flush()
        del data
    memmap = np.load(memmap_path, mmap_mode="r")
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, len(raw), args.batch) for _ in range(args.batches)]
    raw_rate, memmap_rate = [], []
    for _ in range(args.runs):
        start = time.perf_counter()
        for idx in batches:
            raw.read_batch(idx)
        raw_rate.append(len(batches) * args.batch / (time.perf_counter() - start))
        start = time.perf_counter()
        for idx in batches:
            memmap[idx]
        memmap_rate.append(len(batches) * args.batch / (time.perf_counter() - start))

    placed = datakiln.Loader(raw, args.batch, device_put=True, **settings)
    plain_s, placed_s = [], []
    for run in range(args.runs):
        order = placed.epoch_indices(run)
        start = time.perf_counter()
        for idx in order:
            jax.device_put(memmap[idx]).block_until_ready()
        plain_s.append(time.perf_counter() - start)
        placed.set_epoch(run)
        start = time.perf_counter()
        for got, batch in placed.iter_with_epoch():
            if got != run:
                break
            batch["images"].block_until_ready()
        placed_s.append(time.perf_counter() - start)
    placed.close()

    shutil.rmtree(folder, ignore_errors=True)
    rss = harness.spawn(
        rss_child, url, options, str(folder), cache_bytes // 4, args.batch, args.shard_size
    )
    for name, values in (
        ("second_epoch_local_dir", second),
        ("local_cache_epoch", local_epoch),
        ("first_epoch_s3", first),
        ("cat_ranges_floor", floor),
        ("loader_device_put_epoch", placed_s),
        ("memmap_device_put_loop", plain_s),
    ):
        record.extend({name: values}, "s")
    record.extend({"raw_batch": raw_rate, "uint8_memmap": memmap_rate}, "samples/s")
    # each ratio is "how close to the floor": the floor's time over ours, or our rate over its
    record.ratio("second_epoch_vs_local", "local_cache_epoch", "second_epoch_local_dir")
    record.ratio("first_epoch_vs_floor", "cat_ranges_floor", "first_epoch_s3")
    record.ratio("raw_vs_memmap", "raw_batch", "uint8_memmap")
    record.ratio("device_put_loader_vs_loop", "memmap_device_put_loop", "loader_device_put_epoch")
    record.facts["rss"] = {
        "local_limit_mib": round(cache_bytes / 4 / 2**20, 1),
        "after_open_mib": round(rss["opened_mib"], 1),
        "peak_mib": round(rss["peak_mib"], 1),
        "rows": rss["rows"],
        "dir_usage_mib": round(rss["usage"] / 2**20, 1),
    }


if __name__ == "__main__":
    main()
