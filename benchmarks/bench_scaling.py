"""How the image bake scales: cores, worker processes, corpus size, worker memory.

    python ../shared/bench/make_corpus.py --out /tmp/corpus
    python benchmarks/bench_scaling.py --corpus /tmp/corpus --runs 3
    python benchmarks/bench_scaling.py --corpus /tmp/corpus --runs 7 --cores-only  # one core vs all

Each figure is the median over ``--runs`` of ``report.json``'s wall time (the bake itself,
not interpreter start), from ``datakiln bake`` subprocesses on the same files in one run:

- one core (``taskset -c 0``) against the whole machine (the default scheduler, ``auto``:
  one worker process per CPU for images; and ``--scheduler threads`` for comparison), and
  ``--workers 1`` against ``--workers 2`` (a ``distributed.LocalCluster`` of processes), on
  ``--scaling-inputs`` inputs (10,000 by default, so per-bake fixed costs such as loading
  compiled kernels do not hide the per-input work);
- 1k, 5k and 20k inputs (the corpus's JPEGs linked under distinct names), inputs/s;
- peak RSS of each worker process of a 2-worker cluster after a 20k bake.
A warm-up bake fills the persistent JAX compilation cache first.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import harness


def _links(corpus: Path, root: Path, n: int) -> Path:
    jpegs = sorted((corpus / "images" / "jpeg").glob("*.jpg"))
    folder = root / f"links{n}"
    for k in range(n):
        link = folder / f"r{k // len(jpegs):03d}" / f"{k:06d}.jpg"
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(jpegs[k % len(jpegs)], link)
    return folder


def _bake(
    source: Path, out: Path, *extra: str, prefix: tuple[str, ...] = (), env: dict[str, str]
) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        *prefix,
        sys.executable,
        "-m",
        "datakiln",
        "bake",
        str(source),
        "--out",
        str(out),
        "--size",
        "64",
        "--shard-size",
        "256",
        "-q",
        *extra,
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    report = json.loads((out / "report.json").read_text())
    return report["inputs"] / report["wall_s"]


def worker_memory_child(source: str, out: str, jax_cache: str) -> list[float]:
    """In a fresh process (``harness.spawn``): bake ``source`` on a 2-process LocalCluster;
    returns each worker's peak RSS (MiB), sorted."""
    from distributed import Client, LocalCluster

    import datakiln

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        spec = datakiln.BakeSpec(
            sources=(source,),
            output=out,
            shard_size=256,
            image=datakiln.ImageParams(height=64, width=64),
            scheduler=cluster.scheduler_address,
        )
        datakiln.bake(spec, jax_cache_dir=jax_cache)
        rss = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return sorted(rss.values())


def _worker_memory(source: Path, out: Path, env: dict[str, str]) -> list[float]:
    """Peak RSS (MiB) of each worker of a 2-process LocalCluster after baking ``source``."""
    shutil.rmtree(out, ignore_errors=True)
    return harness.spawn(
        worker_memory_child, str(source), str(out), env["DATAKILN_JAX_CACHE"], env=env
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="/tmp/corpus")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="1000,5000,20000")
    parser.add_argument("--scaling-inputs", type=int, default=10000)
    parser.add_argument(
        "--cores-only",
        action="store_true",
        help="only the one-core and whole-machine bakes, alternating (a quicker recheck)",
    )
    args = parser.parse_args()
    record = harness.Recorder("bench_scaling", args)
    corpus = Path(args.corpus)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**os.environ, "DATAKILN_JAX_CACHE": str(root / "jax")}
        source = _links(corpus, root, args.scaling_inputs)
        _bake(corpus / "images" / "jpeg", root / "warm", env=env)
        variants = {
            "one_core": lambda: _bake(source, root / "a", prefix=("taskset", "-c", "0"), env=env),
            "whole_machine": lambda: _bake(source, root / "b", env=env),
        }
        if not args.cores_only:
            variants |= {
                "whole_machine_threads": lambda: _bake(
                    source, root / "t", "--scheduler", "threads", env=env
                ),
                "cluster_1_worker": lambda: _bake(source, root / "c", "--workers", "1", env=env),
                "cluster_2_workers": lambda: _bake(source, root / "d", "--workers", "2", env=env),
            }
        record.extend(harness.alternate(variants, args.runs), "inputs/s")
        if not args.cores_only:
            memory = _cluster_and_size_runs(args, corpus, root, source, env, record)
            record.facts["worker_peak_rss_mib_after_largest"] = [round(m) for m in memory]
    record.facts["scaling_inputs"] = args.scaling_inputs
    record.ratio("whole_machine_vs_one_core", "whole_machine", "one_core")
    record.ratio("threads_vs_one_core", "whole_machine_threads", "one_core")
    record.ratio("two_workers_vs_one", "cluster_2_workers", "cluster_1_worker")
    record.ratio("running_cluster_two_vs_one", "running_cluster_2", "running_cluster_1")
    record.write()


def _cluster_and_size_runs(
    args: argparse.Namespace,
    corpus: Path,
    root: Path,
    source: Path,
    env: dict[str, str],
    record: harness.Recorder,
) -> list[float]:
    """Running clusters of 1 and 2 workers, then corpus sizes; returns worker peak RSS."""
    sizes = [int(s) for s in args.sizes.split(",")]
    # The same on clusters started beforehand (`--scheduler`), so the figures leave out
    # starting the cluster and its workers' first JAX import, which `--workers` pays.
    from distributed import LocalCluster

    for workers in (1, 2):
        with LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster:
            address = ("--scheduler", cluster.scheduler_address)
            _bake(corpus / "images" / "jpeg", root / "warm-c", *address, env=env)
            for _ in range(args.runs):
                rate = _bake(source, root / f"r{workers}", *address, env=env)
                record.add(f"running_cluster_{workers}", rate, "inputs/s")
    for n in sizes:
        links = _links(corpus, root, n)
        for _ in range(args.runs if n <= 5000 else 1):
            record.add(f"inputs_{n}", _bake(links, root / f"s{n}", env=env), "inputs/s")
    return _worker_memory(_links(corpus, root, sizes[-1]), root / "mem", env)


if __name__ == "__main__":
    main()
