"""Kill a bake at random moments, resume it, and check the result equals an uninterrupted bake.

    python tools/kill_resume_soak.py --runs 100 --images 60
    python tools/kill_resume_soak.py --runs 30 --images 60 --s3   # moto's server on loopback

Each run starts ``datakiln bake`` in a subprocess, SIGKILLs it after a random delay, runs the
same command at once to completion (the dead bake's lease is taken over: nothing waits for it
to expire or edits it), and compares every content checksum with a reference bake of the same
inputs, then runs ``verify``. Prints a tally. With ``--s3`` the caches are written to a bucket
of a moto server that the tool starts on 127.0.0.1 and stops at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import harness  # the benchmarks' helpers, found through the path above


def _corpus(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for k in range(n):
        h, w = (int(v) for v in rng.integers(16, 200, 2))
        path = root / f"c{k % 4}" / f"{k:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    (root / "c0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")


def _cmd(raw: Path, out: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "datakiln",
        "bake",
        str(raw),
        "--out",
        out,
        "--size",
        "16",
        "--shard-size",
        "8",
        "--labels",
        "parent",
        "-q",
    ]


def _checksums(out: str, options: dict) -> dict[str, str]:
    fs, root = fsspec.core.url_to_fs(out, **options)
    manifest = json.loads(fs.cat_file(f"{root}/manifest.json"))
    sums = {"cache_key": manifest["cache_key"]}
    for shard in manifest["shards"]:
        sums.update(json.loads(fs.cat_file(f"{root}/{shard['marker']}"))["checksums"])
    return sums


@contextlib.contextmanager
def _moto_bucket() -> Iterator[tuple[str, dict, dict]]:
    """A bucket on a moto server on loopback: (URL, storage options, environment)."""
    with harness.moto_server() as endpoint:
        options = {"key": "soak", "secret": "soak-secret", "endpoint_url": endpoint}
        fsspec.filesystem("s3", **options).mkdir("soak")
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": options["key"],
            "AWS_SECRET_ACCESS_KEY": options["secret"],
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        yield "s3://soak", options, env


def main() -> int:
    """Run the kill-and-resume trials and print the tally; non-zero if any differed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--s3", action="store_true", help="bake to a moto server on loopback")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tally = {"identical": 0, "different": 0, "verify_failed": 0, "killed_before_commit": 0}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if args.s3:
            base, options, env = stack.enter_context(_moto_bucket())
        else:
            base, options, env = tmp, {}, dict(os.environ)
        fs = fsspec.core.url_to_fs(base, **options)[0]
        raw = Path(tmp) / "raw"
        _corpus(raw, args.images)
        ref = f"{base}/ref"
        started = time.perf_counter()
        subprocess.run(_cmd(raw, ref), check=True, stdout=subprocess.DEVNULL, env=env)
        full_s = time.perf_counter() - started
        reference = _checksums(ref, options)
        for run in range(args.runs):
            out = f"{base}/run{run}"
            proc = subprocess.Popen(
                _cmd(raw, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
            )
            time.sleep(rng.uniform(0.2, full_s))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            fs.invalidate_cache()
            if not fs.exists(f"{fsspec.core.url_to_fs(out, **options)[1]}/manifest.json"):
                tally["killed_before_commit"] += 1
            subprocess.run(_cmd(raw, out), check=True, stdout=subprocess.DEVNULL, env=env)
            same = _checksums(out, options) == reference
            tally["identical" if same else "different"] += 1
            verify = subprocess.run(
                [sys.executable, "-m", "datakiln", "verify", out], capture_output=True, env=env
            )
            if verify.returncode != 0:
                tally["verify_failed"] += 1
                print(
                    f"verify failed (exit {verify.returncode}): {verify.stdout!r} "
                    f"{verify.stderr[-500:]!r}",
                    flush=True,
                )
            print(f"run {run + 1}/{args.runs}: {'identical' if same else 'DIFFERENT'}", flush=True)
    print(json.dumps({"runs": args.runs, "images": args.images, "s3": args.s3, **tally}))
    return 0 if tally["different"] == tally["verify_failed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
