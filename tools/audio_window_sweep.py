"""Windowed audio decodes against whole decodes, over formats, rates, channels and lengths.

    python tools/audio_window_sweep.py

For every case that this libsndfile can write (WAV, FLAC, OGG/Vorbis and Opus, MP3, AIFF,
CAF/ALAC; 8 to 48 kHz; mono and stereo; 1.3 to 31 seconds; ``align`` start and centre), the
reader's windowed decode must report the file's whole length and give the whole decode's
frames at the window's place (within 1e-4: lossy decoders restart after a seek). Prints
each case that does not, then the counts; exits 1 if any failed. The tests cover the cases
this found; this is the wider net, run by hand.
"""

from __future__ import annotations

import io
import itertools
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "etl"))

from test_audio_decode_window import _source

from datakiln.etl.kernels.audio import DecodeWindow
from datakiln.readers.audio import AudioDecodeError, decode_audio_native

FORMATS = [
    ("WAV", "PCM_16"),
    ("WAV", "FLOAT"),
    ("FLAC", "PCM_24"),
    ("OGG", "VORBIS"),
    ("OGG", "OPUS"),
    ("MP3", "MPEG_LAYER_III"),
    ("AIFF", "PCM_16"),
    ("CAF", "ALAC_16"),
]
RATES = [8000, 16000, 22050, 44100, 48000]
SECONDS = [1.3, 3, 7.7, 31]
TOLERANCE = 1e-4


def check(fmt: str, subtype: str, rate: int, channels: int, seconds: float, align: str) -> str:
    """``""`` when the windowed decode agrees with the whole one, else what differs."""
    buf = io.BytesIO()
    sf.write(buf, _source(rate, int(rate * seconds) + 3, channels, 1), rate, subtype, format=fmt)
    data = buf.getvalue()
    try:
        part, _, info = decode_audio_native(data, window=DecodeWindow(16000, 2.0, align))
        whole, _, whole_info = decode_audio_native(data)
    except AudioDecodeError as err:
        return f"rejected: {err}"
    ref = whole[info.first_frame : info.first_frame + part.shape[0]]
    if info.frames != whole_info.frames or ref.shape != part.shape:
        return f"frames {info.frames} against {whole_info.frames}, shape {part.shape}"
    diff = float(np.max(np.abs(ref.astype(np.float32) - part.astype(np.float32)), initial=0))
    return f"differs by {diff:.3g}" if diff > TOLERANCE else ""


def main() -> None:
    """Run every case this libsndfile can write; exit 1 if any disagreed."""
    cases = failed = 0
    for (fmt, subtype), rate, channels, seconds, align in itertools.product(
        FORMATS, RATES, [1, 2], SECONDS, ["start", "center"]
    ):
        if subtype not in sf.available_subtypes(fmt) or (
            subtype == "OPUS" and rate not in (8000, 16000, 48000)
        ):
            continue
        cases += 1
        problem = check(fmt, subtype, rate, channels, seconds, align)
        if problem:
            failed += 1
            print(f"{fmt}/{subtype} {rate} Hz x{channels} {seconds} s {align}: {problem}")
    print(f"{cases} cases, {failed} disagreed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
