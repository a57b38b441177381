"""Text and audio bake throughput against their baselines, on the same inputs in the same run.

    python ../shared/bench/make_corpus.py --out /tmp/corpus
    python benchmarks/bench_bake_text_audio.py --corpus /tmp/corpus --runs 3

Text: ``datakiln.bake`` of ``text/lines.txt`` (word_hash, vocab 10k, max_length 512, shards of
``--text-shard-size`` lines, the spec's text default of 16384 unless given) in
tokens/s (tokens before padding, BOS and EOS included, from the manifest) against
``tokenizers`` ByteLevel BPE ``encode_batch`` (vocab 10k, trained untimed on the same lines)
in its own tokens/s; lines/s of both are reported too. ``tokenizers`` is a benchmark-only
dependency (``pip install tokenizers``).

Audio: ``datakiln.bake`` of ``audio/*.wav`` (16 kHz, 1 s, 80 mels, n_fft 1024, hop 512, peak
normalised) in clips/s against librosa clip by clip: ``soundfile.read``, ``librosa.resample``
(soxr_hq, librosa's default) when the rate differs, ``librosa.util.fix_length`` to 1 s,
``librosa.util.normalize``, ``melspectrogram`` + ``power_to_db``.

Everything runs in this one process (Dask threads for the bakes). One untimed warm-up bake per
modality fills the persistent JAX compilation cache and the in-process jit caches; then each
of ``--runs`` runs times the baseline and the bake (into a fresh output) back to back, and
the medians and ratios are reported. The baselines use one BLAS thread (as
``bench_kernels_text_audio.py``: BLAS threads only slow librosa's tiny matmuls down).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import soundfile  # noqa: E402

import datakiln  # noqa: E402
from datakiln.cache.manifest import read_manifest  # noqa: E402
from datakiln.etl.spec import AudioParams, TextBakeParams  # noqa: E402

MEL = {"n_fft": 1024, "hop_length": 512, "n_mels": 80}


def _bake(spec: datakiln.BakeSpec, cache: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    report = datakiln.bake(spec, jax_cache_dir=cache)
    elapsed = time.perf_counter() - started
    assert report.rejected == 0, report.rejected_by_reason
    return elapsed, report.to_dict()


def _text_spec(path: Path, out: str, args: argparse.Namespace) -> datakiln.BakeSpec:
    kwargs: dict[str, Any] = {}
    if args.text_shard_size:
        kwargs["shard_size"] = args.text_shard_size
    return datakiln.BakeSpec(
        sources=(str(path),),
        output=out,
        modality="text",
        text=TextBakeParams(vocab_size=args.vocab_size, max_length=args.max_length),
        **kwargs,
    )


def bench_text(args: argparse.Namespace, tmp: str, cache: str) -> dict[str, Any]:
    from tokenizers import ByteLevelBPETokenizer

    path = Path(args.corpus) / "text" / "lines.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(lines, vocab_size=args.vocab_size, show_progress=False)
    bpe.encode_batch(lines[:1000])  # warm-up

    def bpe_run() -> tuple[float, int]:
        started = time.perf_counter()
        encoded = bpe.encode_batch(lines)
        elapsed = time.perf_counter() - started
        return elapsed, sum(len(e.ids) for e in encoded)

    _bake(_text_spec(path, f"{tmp}/text-warm", args), cache)
    runs: dict[str, list[float]] = {k: [] for k in ("bpe", "bake", "bpe_lines", "bake_lines")}
    reports = []
    bpe_tokens = bake_tokens = 0
    for run in range(args.runs):
        seconds, bpe_tokens = bpe_run()
        runs["bpe"].append(bpe_tokens / seconds)
        runs["bpe_lines"].append(len(lines) / seconds)
        out = f"{tmp}/text{run}"
        seconds, report = _bake(_text_spec(path, out, args), cache)
        bake_tokens = read_manifest(out)["stats"]["n_tokens"]
        runs["bake"].append(bake_tokens / seconds)
        runs["bake_lines"].append(report["baked"] / seconds)
        reports.append(
            {"wall_s": round(seconds, 3), "shards": report["shards"]}
            | {f"{k}_s": round(v, 3) for k, v in report["stage_s"].items()}
        )
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "lines": len(lines),
        "shard_size": args.text_shard_size or "spec default",
        "tokens": {"bake": bake_tokens, "bpe": bpe_tokens},
        "tokens_per_s_median": {"bake": round(med["bake"]), "bpe": round(med["bpe"])},
        "lines_per_s_median": {"bake": round(med["bake_lines"]), "bpe": round(med["bpe_lines"])},
        "all_runs_tokens_per_s": {k: [round(x) for x in runs[k]] for k in ("bake", "bpe")},
        "bake_runs": reports,
        "bake_vs_bpe_tokens": round(med["bake"] / med["bpe"], 3),
        "bake_vs_bpe_lines": round(med["bake_lines"] / med["bpe_lines"], 3),
    }


def _audio_spec(root: Path, out: str, args: argparse.Namespace) -> datakiln.BakeSpec:
    kwargs: dict[str, Any] = {}
    if args.audio_shard_size is not None:
        kwargs["shard_size"] = args.audio_shard_size
    return datakiln.BakeSpec(
        sources=(str(root),),
        output=out,
        modality="audio",
        audio=AudioParams(sample_rate=16000, duration=1.0, normalize=True, **MEL),
        **kwargs,
    )


def _librosa_loop(files: list[Path]) -> float:
    import librosa

    started = time.perf_counter()
    for path in files:
        y, rate = soundfile.read(path, dtype="float32")
        if rate != 16000:
            y = librosa.resample(y, orig_sr=rate, target_sr=16000)
        y = librosa.util.normalize(librosa.util.fix_length(y, size=16000))
        librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=16000, **MEL), ref=1.0)
    return len(files) / (time.perf_counter() - started)


def bench_audio(args: argparse.Namespace, tmp: str, cache: str) -> dict[str, Any]:
    root = Path(args.corpus) / "audio"
    files = sorted(p for p in root.iterdir() if p.suffix == ".wav")
    _librosa_loop(files[:8])  # imports, filter caches
    _bake(_audio_spec(root, f"{tmp}/audio-warm", args), cache)
    runs: dict[str, list[float]] = {"librosa": [], "bake": []}
    reports = []
    for run in range(args.runs):
        runs["librosa"].append(_librosa_loop(files))
        seconds, report = _bake(_audio_spec(root, f"{tmp}/audio{run}", args), cache)
        runs["bake"].append(report["baked"] / seconds)
        reports.append(
            {"wall_s": round(seconds, 3), "shards": report["shards"]}
            | {f"{k}_s": round(v, 3) for k, v in report["stage_s"].items()}
        )
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "clips": len(files),
        "shard_size": args.audio_shard_size or "spec default",
        "clips_per_s_median": {k: round(v, 1) for k, v in med.items()},
        "all_runs": {k: [round(x, 1) for x in v] for k, v in runs.items()},
        "bake_runs": reports,
        "bake_vs_librosa": round(med["bake"] / med["librosa"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="/tmp/corpus")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=("text", "audio"))
    parser.add_argument("--vocab-size", type=int, default=10000)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument(
        "--text-shard-size",
        type=int,
        default=0,
        help="lines per text shard (0: the spec's default for text, 16384)",
    )
    parser.add_argument("--audio-shard-size", type=int, default=None, help="default: the spec's")
    parser.add_argument("--json", help="also write the summary to this file")
    args = parser.parse_args()
    summary: dict[str, Any] = {
        "machine": f"{platform.machine()}, {platform.system()}, {os.cpu_count()} cpus, "
        f"python {platform.python_version()}",
        "load_avg_1m_at_start": os.getloadavg()[0],
        "runs": args.runs,
    }
    with tempfile.TemporaryDirectory() as tmp:
        cache = f"{tmp}/jax-cache"
        if args.only in (None, "text"):
            summary["text"] = bench_text(args, tmp, cache)
        if args.only in (None, "audio"):
            summary["audio"] = bench_audio(args, tmp, cache)
    summary["load_avg_1m_at_end"] = os.getloadavg()[0]
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
