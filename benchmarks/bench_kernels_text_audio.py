"""Throughput of the text and audio shard kernels, each next to its baseline in the same run.

Text: ``tokenize_texts`` (host UTF-8 packing + jit word-hash kernel, shards of ``--shard``
lines) against a plain-Python word-hash tokenizer of the same scheme (FNV-1a per byte; and the
same with a per-word id cache, the fastest plain-Python form on Zipf text). Also the byte
tokenizer against a numpy one. Throughput counts tokens before padding (BOS and EOS included).

Audio: the jit log-mel kernel on a batch of ``--batch`` 1 s clips at 16 kHz, and the whole
audio kernel (mono, resample, pad/trim, peak-normalise, log-mel) from 16 kHz and 44.1 kHz
clips, against librosa clip by clip (``melspectrogram`` + ``power_to_db``; with
``librosa.resample`` first for 44.1 kHz; and, for the mel alone, ``librosa.stft`` with a filter
bank built once). Decoding is not timed (same for both sides).

Every figure is the median of ``--runs`` runs after one warm-up (which compiles), the
contenders timed round-robin. The baselines run on one core (BLAS is pinned to one thread, see
below); XLA uses every core unless ``--single-thread``.

    python benchmarks/bench_kernels_text_audio.py --corpus /tmp/corpus
    python benchmarks/bench_kernels_text_audio.py --corpus /tmp/corpus --single-thread

The corpus comes from ``../shared/bench/make_corpus.py`` (text/lines.txt, audio/*.wav).
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import jax
import jax.numpy as jnp
import numpy as np
import soundfile

from datakiln.etl.kernels import audio as ka
from datakiln.etl.kernels import text as kt

# The per-clip librosa baseline multiplies tiny matrices, which gain nothing from BLAS
# threads, and multi-threaded OpenBLAS on a busy 2-core machine was seen taking 3-18 ms
# instead of ~1 ms per melspectrogram. One BLAS thread keeps the baseline fair. numpy reads
# these when first imported, so ``main`` re-executes with them when unset.
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# XLA on one core too (``--single-thread``): a per-core comparison. Read when jax starts.
SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
SPECIAL = {"pad_id": 0, "unk_id": 1, "bos_id": 2, "eos_id": 3}


def _race(
    fns: dict[str, Callable[[], Any]], runs: int
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Seconds of each run of each function, and each one's last result.

    Each function runs once untimed (compiles, fills caches); then the timed runs alternate
    between the contenders, so that a noisy neighbour on a shared machine slows them alike.
    """
    last: dict[str, Any] = {}

    def run(name: str, fn: Callable[[], Any]) -> float:
        elapsed, last[name] = harness.timed(fn)
        return elapsed

    times = harness.alternate(
        {name: functools.partial(run, name, fn) for name, fn in fns.items()}, runs, warmup=True
    )
    return times, last


def _rates(record: harness.Recorder, name: str, count: float, times: list[float], unit: str):
    for elapsed in times:
        record.add(name, count / elapsed, unit)


# -- text baselines ------------------------------------------------------------------------


def _fnv1a(data: bytes) -> int:
    h = 2166136261
    for byte in data:
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h


def python_word_hash(
    texts: list[str], vocab_size: int, max_length: int, cache: dict[str, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.zeros((len(texts), max_length), dtype=np.int32)
    lengths = np.zeros(len(texts), dtype=np.int32)
    for i, text in enumerate(texts):
        ids = [2]
        for word in text.casefold().split():
            if cache is None:
                ids.append(_fnv1a(word.encode()) % (vocab_size - 4) + 4)
            else:
                wid = cache.get(word)
                if wid is None:
                    wid = cache[word] = _fnv1a(word.encode()) % (vocab_size - 4) + 4
                ids.append(wid)
        ids.append(3)
        if len(ids) > max_length:
            ids = [*ids[: max_length - 1], 3]
        tokens[i, : len(ids)] = ids
        lengths[i] = len(ids)
    return tokens, lengths


def numpy_bytes(texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    keep = max_length - 2
    tokens = np.zeros((len(texts), max_length), dtype=np.int32)
    lengths = np.zeros(len(texts), dtype=np.int32)
    for i, text in enumerate(texts):
        body = np.frombuffer(text.casefold().encode()[:keep], dtype=np.uint8)
        tokens[i, 0] = 2
        tokens[i, 1 : 1 + body.size] = body.astype(np.int32) + 4
        tokens[i, 1 + body.size] = 3
        lengths[i] = body.size + 2
    return tokens, lengths


def bench_text(args: argparse.Namespace, record: harness.Recorder) -> None:
    path = Path(args.corpus) / "text" / "lines.txt"
    lines = path.read_text(encoding="utf-8").splitlines()[: args.lines]
    shards = [lines[i : i + args.shard] for i in range(0, len(lines), args.shard)]
    base = lines[: args.baseline_lines]
    params = {"vocab_size": args.vocab_size, "max_length": args.max_length, **SPECIAL}
    out: dict[str, Any] = {"lines": len(lines), "python_lines": len(base), "shard": args.shard}
    out.update(params)

    # The kernel alone, on matrices packed beforehand at one power-of-two width per shard.
    packed = []
    for s in shards:
        _, lengths = kt.encode_texts(s, case_sensitive=False, max_bytes=1)
        width = kt._next_pow2(int(lengths.max()), kt.MIN_BYTE_WIDTH)
        matrix, lengths = kt.encode_texts(s, case_sensitive=False, max_bytes=width)
        packed.append((jnp.asarray(matrix), jnp.asarray(lengths)))
    kernel_params = {k: v for k, v in params.items() if k != "unk_id"}

    times, last = _race(
        {
            "jax": lambda: [kt.tokenize_texts(s, **params) for s in shards],
            "jax_kernel_only": lambda: [
                jax.block_until_ready(kt._word_hash_kernel(m, ln, **kernel_params))
                for m, ln in packed
            ],
            "python_fnv": lambda: python_word_hash(base, args.vocab_size, args.max_length, None),
            "python_fnv_cached": lambda: python_word_hash(
                base, args.vocab_size, args.max_length, {}
            ),
        },
        args.runs,
    )
    n_tokens = int(sum(int(r[1].sum()) for r in last["jax"]))
    n_base = int(last["python_fnv"][1].sum())
    out["word_hash_tokens"] = n_tokens
    for name in ("jax", "jax_kernel_only"):
        _rates(record, f"text.word_hash_{name}", n_tokens, times[name], "tokens/s")
    for name in ("python_fnv", "python_fnv_cached"):
        _rates(record, f"text.word_hash_{name}", n_base, times[name], "tokens/s")
    # Same ids on both sides: a guard that the comparison is like for like.
    assert np.array_equal(last["python_fnv"][0], kt.tokenize_texts(base, **params)[0])

    byte_params = {**params, "max_length": args.byte_max_length, "vocab_size": 260}
    times, last = _race(
        {
            "jax": lambda: [kt.tokenize_texts(s, tokenizer="byte", **byte_params) for s in shards],
            "numpy": lambda: numpy_bytes(lines, args.byte_max_length),
        },
        args.runs,
    )
    n_bytes = int(sum(int(r[1].sum()) for r in last["jax"]))
    assert n_bytes == int(last["numpy"][1].sum())
    out["byte_max_length"] = args.byte_max_length
    for name in ("jax", "numpy"):
        _rates(record, f"text.byte_{name}", n_bytes, times[name], "tokens/s")
    record.ratio(
        "text.word_hash_jax_vs_python_cached",
        "text.word_hash_jax",
        "text.word_hash_python_fnv_cached",
    )
    record.ratio("text.byte_jax_vs_numpy", "text.byte_jax", "text.byte_numpy")
    record.facts["text"] = out


# -- audio -----------------------------------------------------------------------------------


def _clips(corpus: Path, rate: int, count: int) -> list[np.ndarray]:
    clips = []
    for path in sorted((corpus / "audio").glob("*.wav")):
        samples, sr = soundfile.read(path, dtype="float32", always_2d=True)
        if sr == rate:
            clip = np.zeros(rate, dtype=np.float32)
            mono = samples.mean(axis=1)[:rate]
            clip[: mono.size] = mono
            clips.append(clip)
        if len(clips) == count:
            return clips
    raise SystemExit(f"need {count} clips at {rate} Hz in {corpus}/audio, found {len(clips)}")


def bench_audio(args: argparse.Namespace, record: harness.Recorder) -> None:
    import librosa

    corpus = Path(args.corpus)
    mel_kw = {"n_fft": 1024, "hop_length": 512, "n_mels": 80}
    out: dict[str, Any] = {"batch": args.batch, "sample_rate": 16000, "duration_s": 1.0, **mel_kw}
    basis = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=80)

    def librosa_features(clips: list[np.ndarray], rate: int) -> None:
        for clip in clips:
            y = librosa.resample(clip, orig_sr=rate, target_sr=16000) if rate != 16000 else clip
            y = librosa.util.normalize(y)
            s = librosa.feature.melspectrogram(y=y, sr=16000, **mel_kw)
            librosa.power_to_db(s, ref=1.0)

    for rate in (16000, 44100):
        clips = _clips(corpus, rate, args.batch)
        batch = jnp.asarray(np.stack(clips))
        lengths = jnp.full((args.batch,), rate, jnp.int32)
        fns: dict[str, Callable[[], Any]] = {
            "features_jax": lambda batch=batch, lengths=lengths, rate=rate: jax.block_until_ready(
                ka.audio_features(
                    batch,
                    lengths,
                    orig_sr=rate,
                    sample_rate=16000,
                    duration=1.0,
                    normalize=True,
                    **mel_kw,
                )
            ),
            "features_librosa": lambda clips=clips, rate=rate: librosa_features(clips, rate),
        }
        if rate == 16000:
            mel = jax.jit(lambda x: ka.log_mel_spectrogram(x, sample_rate=16000, **mel_kw))

            def librosa_mel(clips: list[np.ndarray] = clips) -> None:
                for clip in clips:
                    s = librosa.feature.melspectrogram(y=clip, sr=16000, **mel_kw)
                    librosa.power_to_db(s, ref=1.0)

            # A stricter baseline: librosa's STFT with the filter bank built once and applied
            # with a plain matmul (melspectrogram rebuilds it and plans an einsum every call).
            def stft_mel(clips: list[np.ndarray] = clips) -> None:
                for clip in clips:
                    spec = np.abs(librosa.stft(clip, n_fft=1024, hop_length=512)) ** 2
                    librosa.power_to_db(basis @ spec, ref=1.0)

            fns["mel_jax"] = lambda mel=mel, batch=batch: jax.block_until_ready(mel(batch))
            fns["mel_librosa"] = librosa_mel
            fns["mel_librosa_stft_matmul"] = stft_mel
        times, _ = _race(fns, args.runs)
        for name, runs in times.items():
            key = name if name.startswith("mel") else f"{name}_from_{rate}"
            _rates(record, f"audio.{key}", args.batch, runs, "clips/s")
        record.ratio(
            f"audio.features_jax_vs_librosa_from_{rate}",
            f"audio.features_jax_from_{rate}",
            f"audio.features_librosa_from_{rate}",
        )
    record.ratio("audio.mel_jax_vs_librosa", "audio.mel_jax", "audio.mel_librosa")
    record.ratio("audio.mel_jax_vs_stft_matmul", "audio.mel_jax", "audio.mel_librosa_stft_matmul")
    record.facts["audio"] = out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="/tmp/corpus", help="make_corpus.py output")
    parser.add_argument("--lines", type=int, default=32768, help="text lines tokenized")
    parser.add_argument("--baseline-lines", type=int, default=8192, help="lines for Python")
    parser.add_argument("--shard", type=int, default=4096, help="lines per tokenize call")
    parser.add_argument("--vocab-size", type=int, default=10000)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--byte-max-length", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64, help="clips per audio kernel call")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=("text", "audio"))
    parser.add_argument(
        "--single-thread", action="store_true", help="run XLA on one thread (read at import)"
    )
    parser.add_argument("--json", help="also copy the results file here")
    args = parser.parse_args()
    env = {var: os.environ.get(var, "1") for var in BLAS_ENV}
    xla_flags = os.environ.get("XLA_FLAGS", "")
    if args.single_thread and SINGLE_THREAD_XLA not in xla_flags:
        env["XLA_FLAGS"] = f"{xla_flags} {SINGLE_THREAD_XLA}".strip()
    harness.require_env(env)
    record = harness.Recorder("bench_kernels_text_audio", args)
    record.facts.update(
        xla_threads=1 if args.single_thread else os.cpu_count(),
        blas_threads=os.environ["OPENBLAS_NUM_THREADS"],
    )
    if args.only != "audio":
        bench_text(args, record)
    if args.only != "text":
        bench_audio(args, record)
    record.write(also=args.json)


if __name__ == "__main__":
    main()
