"""Peak RSS and wall time of a shard of long clips, as records and as an audio bake.

    python tools/speech_batch_peaks.py

Writes 256 ten-second 48 kHz stereo 16-bit WAVs (about 470 MB) and a TSV naming them beside
a caption to a temporary folder, then bakes, each in a fresh process with the synchronous
scheduler (everything in that process): the TSV as records (an audio field at 16 kHz, 10 s,
and a text field), and the folder as an audio bake of the same clips. Prints each process's
peak RSS (``ru_maxrss``) and the bake's wall time. Run from the repository root; put another
commit's ``src`` first on ``PYTHONPATH`` to measure it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

CLIPS = 256
RATE = 48_000
SECONDS = 10

PROBE = """
import json, resource, sys, time
from datakiln.etl.bake import bake
from datakiln.etl.spec import AudioParams, BakeSpec

kind, root = sys.argv[1:3]
audio = {"sample_rate": 16000, "duration": 10.0}
if kind == "records":
    spec = BakeSpec(sources=(f"{root}/clips.tsv",), output=f"{root}/records", shard_size=256,
                    scheduler="synchronous",
                    fields={"audio": {"modality": "audio", "column": "path", **audio},
                            "text": {"modality": "text", "column": "text"}})
else:
    spec = BakeSpec(sources=(f"{root}/clips",), output=f"{root}/audio", shard_size=256,
                    scheduler="synchronous", modality="audio", audio=AudioParams(**audio))
started = time.perf_counter()
report = bake(spec)
print(json.dumps({"baked": report.baked, "wall_s": round(time.perf_counter() - started, 2),
                  "peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def write_clips(root: Path) -> None:
    """The clips (a tone each, both channels) and a TSV of ``path`` and ``text``."""
    (root / "clips").mkdir()
    t = np.arange(RATE * SECONDS) / RATE
    lines = ["path\ttext"]
    for k in range(CLIPS):
        tone = (0.3 * np.sin(2 * np.pi * (200 + k) * t)).astype(np.float32)
        path = root / "clips" / f"c{k:03d}.wav"
        sf.write(path, np.stack([tone, tone], axis=1), RATE, subtype="PCM_16")
        lines.append(f"{path}\tclip {k}")
    (root / "clips.tsv").write_text("\n".join(lines) + "\n")


def main() -> int:
    """Bake the clips both ways, each in its own process, and print the figures as JSON."""
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_clips(root)
        for kind in ("records", "audio"):
            done = subprocess.run(
                [sys.executable, "-c", PROBE, kind, str(root)],
                capture_output=True,
                text=True,
                check=True,
            )
            result[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
