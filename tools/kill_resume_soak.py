"""Kill a bake at random moments, resume it, and check the result equals an uninterrupted bake.

    python tools/kill_resume_soak.py --runs 100 --images 60

Each run starts ``datakiln bake`` in a subprocess, SIGKILLs it after a random delay, runs the
same command at once to completion (the dead bake's lease is taken over: nothing waits for it
to expire or edits it), and compares every content checksum with a reference bake of the same
inputs, then runs ``verify``. Prints a tally.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _corpus(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for k in range(n):
        h, w = (int(v) for v in rng.integers(16, 200, 2))
        path = root / f"c{k % 4}" / f"{k:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    (root / "c0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")


def _cmd(raw: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "datakiln",
        "bake",
        str(raw),
        "--out",
        str(out),
        "--size",
        "16",
        "--shard-size",
        "8",
        "--labels",
        "parent",
        "-q",
    ]


def _checksums(out: Path) -> dict[str, str]:
    manifest = json.loads((out / "manifest.json").read_text())
    sums = {"cache_key": manifest["cache_key"]}
    for shard in manifest["shards"]:
        sums.update(json.loads((out / shard["marker"]).read_text())["checksums"])
    return sums


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tally = {"identical": 0, "different": 0, "verify_failed": 0, "killed_before_commit": 0}
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        _corpus(raw, args.images)
        ref = Path(tmp) / "ref"
        started = time.perf_counter()
        subprocess.run(_cmd(raw, ref), check=True, stdout=subprocess.DEVNULL)
        full_s = time.perf_counter() - started
        reference = _checksums(ref)
        for run in range(args.runs):
            out = Path(tmp) / f"run{run}"
            proc = subprocess.Popen(
                _cmd(raw, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            time.sleep(rng.uniform(0.2, full_s))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if not (out / "manifest.json").exists():
                tally["killed_before_commit"] += 1
            subprocess.run(_cmd(raw, out), check=True, stdout=subprocess.DEVNULL)
            same = _checksums(out) == reference
            tally["identical" if same else "different"] += 1
            verify = subprocess.run(
                [sys.executable, "-m", "datakiln", "verify", str(out)], capture_output=True
            )
            if verify.returncode != 0:
                tally["verify_failed"] += 1
                print(
                    f"verify failed (exit {verify.returncode}): {verify.stdout!r} "
                    f"{verify.stderr[-500:]!r}",
                    flush=True,
                )
            print(f"run {run + 1}/{args.runs}: {'identical' if same else 'DIFFERENT'}", flush=True)
    print(json.dumps({"runs": args.runs, "images": args.images, **tally}))
    return 0 if tally["different"] == tally["verify_failed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
