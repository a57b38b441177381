"""How the cache's bookkeeping grows with the sample count: 10k, 100k and 1M samples.

    python benchmarks/bench_scale.py --root /tmp/dk-scale --sizes 10000,100000,1000000 --runs 3

The corpus of each size is a folder tree of hard links to a pool of a few thousand distinct
8×8 PNGs (100 class folders), so a million inputs cost a million directory entries, not a
million files' worth of disk; each is baked for real (``datakiln bake --size 8 --labels
parent``, default shards of 1,024). Every figure comes from the library's own code paths,
each measured in a fresh interpreter (``harness.spawn``) so its memory is its own; the reported
time is the median of ``--runs`` such processes:

- plan: listing the inputs, reading the committed version (manifest and shard markers) and
  planning against it, as a re-bake does; the planner's peak RSS;
- recheck: ``bake`` of the unchanged listing (what ``watch`` and a re-run do): up to date;
- manifest: ``manifest.json``'s size and ``read_manifest`` (parse and validate) time;
- open: ``open_cache`` time, and the growth of the process's anonymous memory (``RssAnon``)
  over what the imports had taken;
- order: ``epoch_order`` of every sample, and ``Loader.state()`` then ``restore`` mid-epoch
  and the first batch after it;
- get_batch: random ``get_batch(256)`` in samples/s, cold (40 batches right after the
  open: each shard's index is read when first touched) and warm (40 more once every shard
  was touched), and the anonymous memory after them;
- verify: ``verify_cache`` (every checksum);
- append: 1% new inputs added to the tree; the incremental plan, then the incremental bake's
  own ``report.json`` wall time (the last step: it changes the cache).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness

CLASSES = 100
POOL = 2000
BATCH = 256


def _anon_kib() -> int:
    """Anonymous resident memory of this process (KiB), from /proc."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _pool(root: Path) -> list[Path]:
    """A few thousand distinct tiny PNGs (random noise, fixed seed)."""
    import numpy as np
    from PIL import Image

    folder = root / "pool"
    files = [folder / f"p{k:04d}.png" for k in range(POOL)]
    if all(f.exists() for f in files):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for f in files:
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(f)
    return files


def _link_tree(pool: list[Path], folder: Path, n: int, prefix: str = "s") -> None:
    """``n`` hard links to the pool under ``CLASSES`` class folders."""
    for c in range(CLASSES):
        (folder / f"c{c:02d}").mkdir(parents=True, exist_ok=True)
    for k in range(n):
        link = folder / f"c{k % CLASSES:02d}" / f"{prefix}{k:07d}.png"
        if not link.exists():
            os.link(pool[k % len(pool)], link)


def _spec(sources: tuple[Path, ...], out: Path) -> Any:
    import datakiln

    return datakiln.BakeSpec(
        sources=tuple(str(s) for s in sources),
        output=str(out),
        image=datakiln.ImageParams(height=8, width=8, labels="parent"),
    )


def measure_child(what: str, source_names: list[str], out_name: str) -> dict[str, float]:
    """One measurement in this process, a fresh one (``harness.spawn``)."""
    import numpy as np

    import datakiln
    from datakiln.cache.manifest import read_manifest
    from datakiln.cache.verify import verify_cache
    from datakiln.datasets.loader import Loader, epoch_order
    from datakiln.etl.bake import _plan, _read_previous

    sources, out = tuple(map(Path, source_names)), Path(out_name)
    base_anon, base_peak = _anon_kib(), _peak_kib()
    t0 = time.perf_counter()
    if what == "plan":
        _, previous = _read_previous(_spec(sources, out))
        t1 = time.perf_counter()
        plan = _plan(_spec(sources, out), previous)
        t2 = time.perf_counter()
        return {
            "read_previous_s": t1 - t0,
            "plan_s": t2 - t1,
            "total_s": t2 - t0,
            "peak_rss_mib": _peak_kib() / 1024,
            "peak_growth_mib": (_peak_kib() - base_peak) / 1024,
            "pending_shards": len(plan.pending),
        }
    if what == "recheck":
        report = datakiln.bake(_spec(sources, out))
        assert report.up_to_date
        return {
            "recheck_s": time.perf_counter() - t0,
            "peak_growth_mib": (_peak_kib() - base_peak) / 1024,
        }
    if what == "manifest":
        read_manifest(str(out))
        return {
            "parse_s": time.perf_counter() - t0,
            "bytes": (out / "manifest.json").stat().st_size,
        }
    if what == "open":
        # the first open also pays fixed costs (JAX's first PRNG key: ~1 s of compiling);
        # the second shows what grows with the cache
        datakiln.open_cache(str(out))
        t1 = time.perf_counter()
        anon = _anon_kib()
        again = datakiln.open_cache(str(out))
        t2 = time.perf_counter()
        return {
            "first_open_s": t1 - t0,
            "open_s": t2 - t1,
            "first_anon_growth_mib": (anon - base_anon) / 1024,
            "anon_growth_mib": (_anon_kib() - anon) / 1024,
            "samples": len(again),
        }
    if what == "order":
        ds = datakiln.open_cache(str(out))
        n = len(ds)
        t0 = time.perf_counter()
        epoch_order(n, seed=0, epoch=0)
        t1 = time.perf_counter()
        loader = Loader(ds, BATCH, seed=0, prefetch=0, shard_count=1, shard_index=0)
        loader.restore({**loader.state(), "step": len(loader) // 2})
        state = loader.state()
        t2 = time.perf_counter()
        resumed = Loader(ds, BATCH, seed=0, prefetch=0, shard_count=1, shard_index=0)
        resumed.restore(state)
        t3 = time.perf_counter()
        batch = next(iter(resumed))
        t4 = time.perf_counter()
        assert len(batch["indices"]) == BATCH
        return {"epoch_order_s": t1 - t0, "restore_s": t3 - t2, "first_batch_s": t4 - t3}
    if what == "get_batch":
        ds = datakiln.open_cache(str(out), rngs=None)
        rng = np.random.default_rng(1)
        reads = 40

        def batches_per_s() -> float:
            t0 = time.perf_counter()
            for _ in range(reads):
                ds.get_batch(indices=rng.integers(0, len(ds), BATCH))
            return reads * BATCH / (time.perf_counter() - t0)

        ds.get_batch(indices=rng.integers(0, len(ds), BATCH))  # one-off costs
        cold = batches_per_s()  # each shard's index is read the first time it is touched
        for start in range(0, len(ds), 512 * BATCH):  # touch every shard (1,024 rows)
            ds.get_batch(indices=np.arange(start, min(len(ds), start + 512 * BATCH), 512))
        return {
            "cold_samples_per_s": cold,
            "samples_per_s": batches_per_s(),
            "anon_growth_mib": (_anon_kib() - base_anon) / 1024,
        }
    if what == "verify":
        report = verify_cache(str(out))
        assert report.ok, report.problems[:3]
        return {"verify_s": time.perf_counter() - t0, "objects": report.objects_checked}
    raise SystemExit(f"unknown measurement {what!r}")


def _measure(
    what: str, sources: tuple[Path, ...], out: Path, runs: int, record: harness.Recorder, name: str
) -> dict[str, float]:
    """``runs`` fresh processes measuring ``what``; records each run, returns the medians."""
    for _ in range(runs):
        result = harness.spawn(measure_child, what, [str(s) for s in sources], str(out))
        for key, value in result.items():
            record.add(f"{name}.{key}", value, harness.unit_of(key))
    return {
        key[len(name) + 1 :]: round(harness.median(values), 4)
        for key, values in record.runs.items()
        if key.startswith(name + ".")
    }


def _bake(sources: tuple[Path, ...], out: Path) -> float:
    cmd = [sys.executable, "-m", "datakiln", "bake", *map(str, sources), "--out", str(out)]
    subprocess.run(
        [*cmd, "--size", "8", "--labels", "parent", "-q"], check=True, stdout=subprocess.DEVNULL
    )
    return json.loads((out / "report.json").read_text())["wall_s"]


def _one_size(
    root: Path, pool: list[Path], n: int, runs: int, record: harness.Recorder
) -> dict[str, object]:
    src, out = root / f"in{n}", root / f"out{n}"
    t0 = time.perf_counter()
    _link_tree(pool, src, n)
    row: dict[str, object] = {"samples": n, "links_s": round(time.perf_counter() - t0, 1)}
    if not (out / "manifest.json").exists():
        row["bake_s"] = round(_bake((src,), out), 1)
    for what in ("plan", "recheck", "manifest", "open", "order", "get_batch", "verify"):
        row[what] = _measure(what, (src,), out, runs, record, f"{n}.{what}")
        print(f"{n}: {what} {row[what]}", file=sys.stderr, flush=True)
    # 1% more inputs, baked into a copy of the cache (which stays as it is for a rerun)
    added, copy = root / f"added{n}", root / f"append{n}"
    _link_tree(pool, added, n // 100, prefix="a")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(out, copy)
    row["append_plan"] = _measure("plan", (src, added), copy, 1, record, f"{n}.append_plan")
    row["append_bake_s"] = round(_bake((src, added), copy), 2)
    record.add(f"{n}.append_bake_s", row["append_bake_s"], "s")
    shutil.rmtree(copy)
    print(f"{n}: append {row['append_plan']} {row['append_bake_s']}", file=sys.stderr)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/tmp/dk-scale")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    record = harness.Recorder("bench_scale", args)
    root = Path(args.root)
    pool = _pool(root)
    record.facts["rows"] = [
        _one_size(root, pool, int(n), args.runs, record) for n in args.sizes.split(",")
    ]
    record.write()


if __name__ == "__main__":
    main()
