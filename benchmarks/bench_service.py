"""Load test of ``datakiln serve``: bake once under a burst of submissions, poll latency, RSS.

    python benchmarks/bench_service.py --runs 3

Per run, against a fresh service process (its own root and state folder, bakes niced):

1. **Baseline**: ``--clients`` concurrent clients poll ``GET /jobs/{id}`` of a finished job
   every ``--poll-s`` for ``--baseline-s`` seconds while nothing bakes.
2. **Burst**: ``--submissions`` concurrent ``POST /jobs`` of ``--specs`` distinct specs (the
   same corpus at different image sizes). Counts the distinct job ids and, from ``/metrics``,
   the bake processes started: both must equal ``--specs``.
3. **Under load**: the same pollers poll the burst's jobs until every bake is done.

Latency is measured by the clients (one asyncio loop, aiohttp, one connection per client)
from send to full body. The service's RSS (the API process alone; bakes run in children) is
sampled every 0.1 s. Prints medians over runs and the ratio of p99 under load to the idle
baseline, and writes them to ``results/bench_service.json`` (and a copy to ``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import harness

TOKEN = "bench-token-not-a-secret"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _corpus(where: Path, images: int) -> Path:
    from datakiln.testing.image_corpus import write_image_corpus

    raw = where / "raw"
    if not raw.exists():
        write_image_corpus(raw, n=images, seed=0, broken=2)
    return raw


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_sampler(pid: int, stop: threading.Event, out: list[int]) -> None:
    status = Path(f"/proc/{pid}/status")
    while not stop.wait(0.1):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out.append(int(line.split()[1]) * 1024)
        except OSError:
            return


async def _poll(session, url: str, paths: list[str], until, poll_s: float, out: list[float]):
    k = 0
    while not until():
        path = paths[k % len(paths)]
        k += 1
        started = time.perf_counter()
        async with session.get(url + path) as response:
            await response.read()
            assert response.status == 200, response.status
        out.append(time.perf_counter() - started)
        await asyncio.sleep(poll_s)


async def _pollers(url: str, paths: list[str], clients: int, poll_s: float, until) -> list[float]:
    import aiohttp

    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        # staggered starts, as independent trainers would poll
        async def one(k: int) -> None:
            await asyncio.sleep(poll_s * k / clients)
            await _poll(session, url, paths, until, poll_s, latencies)

        await asyncio.gather(*(one(k) for k in range(clients)))
    return latencies


def _call(url: str, method: str, path: str, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {TOKEN}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=120) as response:
        raw = response.read()
    return json.loads(raw) if response.headers.get_content_type() == "application/json" else raw


def _metric(url: str, name: str) -> float:
    for line in _call(url, "GET", "/metrics").decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def one_run(args: argparse.Namespace, raw: Path, work: Path) -> dict:
    root, state = work / "caches", work / "state"
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DATAKILN_TOKEN": TOKEN, "DATAKILN_JAX_CACHE": str(work / "jax")}
    log = (work / "service.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "datakiln",
            "serve",
            "--root",
            str(root),
            "--state-dir",
            str(state),
            "--port",
            str(port),
            "--max-concurrent",
            str(args.max_concurrent),
            "-q",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    rss: list[int] = []
    stop = threading.Event()
    try:
        for _ in range(300):
            try:
                _call(url, "GET", "/health")
                break
            except OSError:
                time.sleep(0.1)
        sampler = threading.Thread(target=_rss_sampler, args=(proc.pid, stop, rss))
        sampler.start()

        def spec(k: int) -> dict:
            size = 16 + 8 * k
            return {
                "sources": [str(raw)],
                "shard_size": args.shard_size,
                "image": {"height": size, "width": size, "labels": "parent"},
            }

        # a finished job to poll while idle
        warm = _call(url, "POST", "/jobs", {"spec": {**spec(0), "output": "warm"}})
        while _call(url, "GET", f"/jobs/{warm['id']}")["state"] != "succeeded":
            time.sleep(0.2)
        bakes_before = _metric(url, "datakiln_bakes_started_total")
        deadline = time.monotonic() + args.baseline_s
        cpu_before = _cpu_s(proc.pid)
        idle = asyncio.run(
            _pollers(
                url,
                [f"/jobs/{warm['id']}"],
                args.clients,
                args.poll_s,
                lambda: time.monotonic() > deadline,
            )
        )

        idle_cpu_ms = 1000 * (_cpu_s(proc.pid) - cpu_before) / len(idle)
        from concurrent.futures import ThreadPoolExecutor

        burst_started = time.perf_counter()
        with ThreadPoolExecutor(args.submissions) as pool:
            answers = list(
                pool.map(
                    lambda k: _call(url, "POST", "/jobs", {"spec": spec(k % args.specs)}),
                    range(args.submissions),
                )
            )
        submit_s = time.perf_counter() - burst_started
        ids = sorted({a["id"] for a in answers})
        paths = [f"/jobs/{i}" for i in ids]
        done = threading.Event()

        def watcher() -> None:
            while not done.is_set():
                states = [_call(url, "GET", p)["state"] for p in paths]
                if all(s not in ("queued", "running") for s in states):
                    done.set()
                time.sleep(0.5)

        threading.Thread(target=watcher, daemon=True).start()
        loaded = asyncio.run(_pollers(url, paths, args.clients, args.poll_s, done.is_set))
        bake_s = time.perf_counter() - burst_started
        states = [_call(url, "GET", p)["state"] for p in paths]
        bakes = _metric(url, "datakiln_bakes_started_total") - bakes_before
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    return {
        "distinct_jobs": len(ids),
        "bakes": int(bakes),
        "all_succeeded": all(s == "succeeded" for s in states),
        "submit_s": submit_s,
        "bake_s": bake_s,
        "idle_requests": len(idle),
        "idle_p50_ms": 1000 * _percentile(idle, 0.50),
        "idle_p99_ms": 1000 * _percentile(idle, 0.99),
        "service_cpu_ms_per_request": idle_cpu_ms,
        "load_requests": len(loaded),
        "load_p50_ms": 1000 * _percentile(loaded, 0.50),
        "load_p99_ms": 1000 * _percentile(loaded, 0.99),
        "load_max_ms": 1000 * max(loaded),
        "rss_max_mib": max(rss) / 2**20 if rss else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--images", type=int, default=600, help="corpus size")
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--submissions", type=int, default=50)
    parser.add_argument("--specs", type=int, default=5)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--poll-s", type=float, default=0.5, help="each client's poll interval")
    parser.add_argument("--baseline-s", type=float, default=10.0)
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--work", help="folder for the corpus and caches (default: a temp dir)")
    parser.add_argument("--json", help="also copy the results file here")
    args = parser.parse_args()

    record = harness.Recorder("bench_service", args)
    work = Path(args.work or tempfile.mkdtemp(prefix="datakiln-bench-service-"))
    work.mkdir(parents=True, exist_ok=True)
    raw = _corpus(work, args.images)
    for k in range(args.runs):
        result = one_run(args, raw, work)
        print(f"run {k + 1}: " + json.dumps({n: round(v, 2) for n, v in result.items()}))
        for name, value in result.items():
            record.add(name, value, harness.unit_of(name))
    record.ratio("p99_load_over_idle", "load_p99_ms", "idle_p99_ms")
    record.write(also=args.json)


if __name__ == "__main__":
    main()
