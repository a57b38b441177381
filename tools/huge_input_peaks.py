"""Peak RSS of a bake of a huge input against that of a small one (RELIABILITY.md's table).

    python tools/huge_input_peaks.py

Writes a 2-second and a 3-hour FLAC and WAV (8 kHz mono) and a 1-MP and a 108-MP JPEG to a
temporary folder, and for each kind (audio: each container and each ``align``, ``start`` and
``center``, as a folder of an audio bake, as a file a TSV of records names, and as a member
of a tar shard) runs one process that bakes the small input and then the huge one, reporting
the process's peak RSS after each (the probe of ``tests/etl/test_huge_inputs.py``). Run from
the repository root.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.etl.test_huge_inputs import HOURS, _peaks, _write_audio


def main() -> int:
    """Measure each kind's peaks in its own process and print them as JSON."""
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for fmt in ("FLAC", "WAV"):
            for name, seconds in (("small", 2), ("huge", HOURS * 3600)):
                (root / f"{name}-{fmt}").mkdir()
                _write_audio(root / f"{name}-{fmt}" / f"clip.{fmt.lower()}", seconds, fmt)
            for kind in ("audio", "records", "records-tar"):
                # an audio bake reads folders; the records' TSV names the file itself
                small, huge = (root / f"{n}-{fmt}" for n in ("small", "huge"))
                if kind != "audio":
                    small, huge = (p / f"clip.{fmt.lower()}" for p in (small, huge))
                for align in ("start", "center"):
                    started = time.perf_counter()
                    out = root / f"{kind}-{fmt}-{align}"
                    peaks = _peaks(kind, small, huge, out, align)
                    key = f"{kind} {fmt} align={align}"
                    result[key] = {k: f"{v / 2**20:.0f} MB" for k, v in peaks.items()}
                    result[key]["wall_s"] = round(time.perf_counter() - started, 1)
        for name, size in (("small", (1200, 900)), ("huge", (12000, 9000))):
            (root / name).mkdir()
            im = Image.new("RGB", size, (120, 30, 200))
            im.paste((10, 200, 40), (0, 0, size[0] // 2, size[1] // 2))
            im.save(root / name / "photo.jpg", quality=80)
        started = time.perf_counter()
        peaks = _peaks("image", root / "small", root / "huge", root / "jpeg")
        result["JPEG"] = {k: f"{v / 2**20:.0f} MB" for k, v in peaks.items()}
        result["JPEG"]["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
