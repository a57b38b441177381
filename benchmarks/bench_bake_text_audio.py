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

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import harness
import soundfile

import datakiln
from datakiln.cache.manifest import read_manifest
from datakiln.etl.spec import AudioParams, TextBakeParams

# Read by numpy's BLAS when first imported, so ``main`` re-executes with them when unset.
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
MEL = {"n_fft": 1024, "hop_length": 512, "n_mels": 80}


def _bake(spec: datakiln.BakeSpec, cache: str) -> tuple[float, dict[str, Any]]:
    elapsed, report = harness.timed(lambda: datakiln.bake(spec, jax_cache_dir=cache))
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


def bench_text(args: argparse.Namespace, tmp: str, cache: str, record: harness.Recorder) -> None:
    from tokenizers import ByteLevelBPETokenizer

    path = Path(args.corpus) / "text" / "lines.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(lines, vocab_size=args.vocab_size, show_progress=False)
    bpe.encode_batch(lines[:1000])  # warm-up
    _bake(_text_spec(path, f"{tmp}/text-warm", args), cache)
    counts: dict[str, int] = {}
    bake_runs: list[dict[str, Any]] = []

    def bpe_run() -> float:
        seconds, encoded = harness.timed(lambda: bpe.encode_batch(lines))
        counts["bpe"] = sum(len(e.ids) for e in encoded)
        record.add("text.bpe_lines", len(lines) / seconds, "lines/s")
        return counts["bpe"] / seconds

    def bake_run() -> float:
        out = f"{tmp}/text{len(bake_runs)}"
        seconds, report = _bake(_text_spec(path, out, args), cache)
        counts["bake"] = read_manifest(out)["stats"]["n_tokens"]
        record.add("text.bake_lines", report["baked"] / seconds, "lines/s")
        bake_runs.append(
            {"wall_s": round(seconds, 3), "shards": report["shards"]}
            | {f"{k}_s": round(v, 3) for k, v in report["stage_s"].items()}
        )
        return counts["bake"] / seconds

    figures = harness.alternate({"bpe": bpe_run, "bake": bake_run}, args.runs)
    record.extend(figures, "tokens/s", prefix="text.")
    record.ratio("text.bake_vs_bpe_tokens", "text.bake", "text.bpe")
    record.ratio("text.bake_vs_bpe_lines", "text.bake_lines", "text.bpe_lines")
    record.facts["text"] = {
        "lines": len(lines),
        "shard_size": args.text_shard_size or "spec default",
        "tokens": counts,
        "bake_runs": bake_runs,
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

    def loop() -> None:
        for path in files:
            y, rate = soundfile.read(path, dtype="float32")
            if rate != 16000:
                y = librosa.resample(y, orig_sr=rate, target_sr=16000)
            y = librosa.util.normalize(librosa.util.fix_length(y, size=16000))
            librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=16000, **MEL), ref=1.0)

    return harness.per_second(len(files), loop)


def bench_audio(args: argparse.Namespace, tmp: str, cache: str, record: harness.Recorder) -> None:
    root = Path(args.corpus) / "audio"
    files = sorted(p for p in root.iterdir() if p.suffix == ".wav")
    _librosa_loop(files[:8])  # imports, filter caches
    _bake(_audio_spec(root, f"{tmp}/audio-warm", args), cache)
    bake_runs: list[dict[str, Any]] = []

    def bake_run() -> float:
        seconds, report = _bake(_audio_spec(root, f"{tmp}/audio{len(bake_runs)}", args), cache)
        bake_runs.append(
            {"wall_s": round(seconds, 3), "shards": report["shards"]}
            | {f"{k}_s": round(v, 3) for k, v in report["stage_s"].items()}
        )
        return report["baked"] / seconds

    figures = harness.alternate(
        {"librosa": lambda: _librosa_loop(files), "bake": bake_run}, args.runs
    )
    record.extend(figures, "clips/s", prefix="audio.")
    record.ratio("audio.bake_vs_librosa", "audio.bake", "audio.librosa")
    record.facts["audio"] = {
        "clips": len(files),
        "shard_size": args.audio_shard_size or "spec default",
        "bake_runs": bake_runs,
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
    parser.add_argument("--json", help="also copy the results file here")
    args = parser.parse_args()
    harness.require_env({var: os.environ.get(var, "1") for var in BLAS_ENV})
    record = harness.Recorder("bench_bake_text_audio", args)
    record.facts["blas_threads"] = os.environ["OPENBLAS_NUM_THREADS"]
    with tempfile.TemporaryDirectory() as tmp:
        cache = f"{tmp}/jax-cache"
        if args.only in (None, "text"):
            bench_text(args, tmp, cache, record)
        if args.only in (None, "audio"):
            bench_audio(args, tmp, cache, record)
    record.write(also=args.json)


if __name__ == "__main__":
    main()
