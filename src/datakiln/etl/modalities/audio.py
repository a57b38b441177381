"""Audio: decode with soundfile, featurize a shard with one jit kernel, store waveform and mel.

One unit per file. A shard decodes its clips ``DECODE_BATCH`` at a time (so memory holds that
many decoded clips, not the whole shard) and runs ``featurize_audio`` on each batch: mix to
mono, band-limited resampling to ``sample_rate``, pad/trim to ``duration``, optional peak
normalisation, log-mel spectrogram. Compiles are few: one per (source rate, row bucket,
channel count).

Stored fields: ``audio`` (N, samples) in ``AudioParams.wave_dtype`` (int16 PCM by default)
and ``mel`` (N, n_mels, frames) in ``AudioParams.mel_dtype`` (float16 by default), both read
back as float32 through the manifest's read-time transforms. The kernel returns them already
encoded, so the host only copies the compact arrays. Parquet meta: uri,
content hash, original sample rate, channels, frames, duration, container and encoding.
Every batch also carries the constants ``sample_rate`` and ``duration``, as the seed's audio
datasets do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from datakiln.cache.fingerprint import content_hash, content_hash_file
from datakiln.etl.modalities.base import (
    DECODE_THREADS,
    STREAM_BYTES,
    ShardOutput,
    Unit,
    fetch_all,
    rejection,
)
from datakiln.etl.spec import AudioParams, BakeSpec
from datakiln.etl.task import ShardMarker, ShardPlan
from datakiln.readers.listing import AUDIO_EXTENSIONS, InputFile
from datakiln.readers.rejections import Rejection
from datakiln.writers.zarr_region import FieldLayout

# Clips decoded and featurized together: bounds a task's memory of decoded audio.
DECODE_BATCH = 64
# featurize_audio pads a batch to a power of two rows of at least this many (its bucketing).
_MIN_ROW_BUCKET = 8
# Version of the featurizer's numerics (resampler filter, STFT, mel, dB conventions); bump it
# when datakiln.etl.kernels.audio changes what it computes, so that caches bake again.
FEATURIZER_VERSION = 1

META_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("content_hash", pa.string()),
        ("sample_rate", pa.int32()),
        ("channels", pa.int32()),
        ("frames", pa.int64()),
        ("duration_s", pa.float64()),
        ("format", pa.string()),
        ("subtype", pa.string()),
    ]
)


def _kernel_params(audio: AudioParams) -> dict[str, Any]:
    """The keyword arguments of ``featurize_audio`` besides the clips."""
    return {
        "sample_rate": audio.sample_rate,
        "duration": float(audio.duration),
        "n_fft": audio.n_fft,
        "hop_length": audio.hop_length,
        "n_mels": audio.n_mels,
        "fmin": float(audio.fmin),
        "fmax": None if audio.fmax is None else float(audio.fmax),
        "mel_scale": audio.mel_scale,
        "mel_norm": audio.mel_norm,
        "normalize": audio.normalize,
        "top_db": None if audio.top_db is None else float(audio.top_db),
        "align": audio.align,
        "batch_size": DECODE_BATCH,
        "wave_dtype": audio.wave_dtype,
        "mel_dtype": audio.mel_dtype,
    }


def _resampled_length(frames: int, orig_sr: int, sample_rate: int) -> int:
    """Samples of a clip of ``frames`` at ``orig_sr`` after resampling (the kernel's ceil)."""
    g = math.gcd(orig_sr, sample_rate)
    return -(-frames * (sample_rate // g) // (orig_sr // g))


class AudioModality:
    """Audio bakes: one unit per clip, a shard featurized in one jit kernel (see the module)."""

    name = "audio"
    extensions = AUDIO_EXTENSIONS
    worker_modules: tuple[str, ...] = ("datakiln.etl.kernels.audio", "datakiln.readers.audio")
    # Its shard tasks spend their time in the JAX kernel and libsndfile, outside the GIL, and a
    # bake is short: threads share one compiled kernel and start at once (``scheduler='auto'``).
    local_scheduler = "threads"

    def plan_units(self, spec: BakeSpec, inputs: Sequence[InputFile]) -> list[Unit]:
        return [Unit(input=i) for i in inputs]

    def sample_bytes(self, spec: BakeSpec) -> int:
        audio = spec.audio
        mel = audio.n_mels * audio.frames * np.dtype(audio.mel_dtype).itemsize
        return max(audio.samples * np.dtype(audio.wave_dtype).itemsize, mel)

    def fields(
        self, spec: BakeSpec, generation: str, shard_rows: int, labelled: bool
    ) -> list[FieldLayout]:
        audio = spec.audio
        return [
            FieldLayout(
                "audio", f"{generation}/audio", audio.wave_dtype, (audio.samples,), shard_rows
            ),
            FieldLayout(
                "mel",
                f"{generation}/mel",
                audio.mel_dtype,
                (audio.n_mels, audio.frames),
                shard_rows,
            ),
        ]

    def transforms(self, spec: BakeSpec) -> dict[str, dict[str, Any] | None]:
        from datakiln.etl.kernels.audio import INT16_SCALE

        cast: dict[str, Any] = {"kind": "cast", "dtype": "float32"}
        waves: dict[str, dict[str, Any] | None] = {
            "int16": {"kind": "affine", "scale": 1.0 / INT16_SCALE, "offset": 0.0},
            "float16": cast,
            "float32": None,
        }
        return {
            "audio": waves[spec.audio.wave_dtype],
            "mel": cast if spec.audio.mel_dtype != "float32" else None,
        }

    def manifest_entries(self, spec: BakeSpec) -> dict[str, Any]:
        """The featurizer's identity (also in the cache key) and the per-sample constants."""
        from datakiln.etl.kernels import audio as kernel

        audio = spec.audio
        return {
            "featurizer": {
                "version": FEATURIZER_VERSION,
                "resampler": {
                    "kind": "kaiser-windowed sinc",
                    "zeros": kernel.RESAMPLE_ZEROS,
                    "rolloff": kernel.RESAMPLE_ROLLOFF,
                    "beta": kernel.RESAMPLE_BETA,
                },
                "stft": "periodic hann, centred, zero padding, power 2",
                "log": "10*log10(max(mel, 1e-10)), ref 1.0, clipped top_db below the clip's max",
                "reference": "librosa 0.11 melspectrogram + power_to_db",
            },
            "constants": {
                "sample_rate": {"value": audio.sample_rate, "dtype": "int64"},
                "duration": {"value": float(audio.duration), "dtype": "float32"},
            },
        }

    def bake_shard(
        self,
        shard: ShardPlan,
        spec_params: Mapping[str, Any],
        source_options: Mapping[str, Any],
        timings: dict[str, float],
    ) -> ShardOutput:
        from datakiln.etl.kernels.audio import DecodeWindow, featurize_audio
        from datakiln.readers.audio import AudioDecodeError, AudioInfo, decode_audio_native

        audio = AudioParams(**spec_params)
        params = _kernel_params(audio)
        rejections: list[Rejection] = []
        waves = np.zeros((shard.capacity, audio.samples), audio.wave_dtype)
        peaks = np.zeros(shard.capacity, np.float32)
        mels = np.zeros((shard.capacity, audio.n_mels, audio.frames), audio.mel_dtype)
        columns: dict[str, list[Any]] = {name: [] for name in META_SCHEMA.names}
        shapes: set[tuple[int, int, int]] = set()
        durations: list[float] = []
        padded = trimmed = 0
        bytes_in = n = 0
        # Only the source frames the output clip depends on are decoded (the leading ones for
        # align="start", a window around the middle for "center").
        window = DecodeWindow(audio.sample_rate, float(audio.duration), audio.align)

        def decode(item: tuple[int, bytes]) -> tuple[Any, str]:
            # the content hash too: hashlib releases the GIL, so it runs beside the kernel
            result: tuple[np.ndarray, int, AudioInfo] | AudioDecodeError
            try:
                result = decode_audio_native(item[1], uri=shard.inputs[item[0]].uri, window=window)
            except AudioDecodeError as err:
                result = err
            return result, content_hash(item[1])

        def decode_streamed(k: int) -> tuple[Any, str | None]:
            """A large input, read through: hashed in blocks, then decoded from the file."""
            import fsspec

            uri = shard.inputs[k].uri
            try:
                fs, path = fsspec.core.url_to_fs(uri, **dict(source_options))
                with fs.open(path, "rb", block_size=4 << 20) as f:
                    digest = content_hash_file(f)
                    f.seek(0)
                    return decode_audio_native(f, uri=uri, window=window), digest
            except (AudioDecodeError, OSError) as err:
                return err, None

        def start(first: int) -> list[tuple[int, Any]]:
            """Fetch one batch and queue its decodes; fetch failures become rejections."""
            nonlocal bytes_in
            batch = shard.inputs[first : first + DECODE_BATCH]
            # Large inputs are read through by a decode thread, which decodes only the window.
            streamed = {k for k, item in enumerate(batch, start=first) if item.size >= STREAM_BYTES}
            part = ShardPlan(
                shard_id=shard.shard_id,
                row_start=0,
                labels=None,
                inputs=tuple(i for k, i in enumerate(batch, start=first) if k not in streamed),
            )
            t0 = time.perf_counter()
            fetched = iter(fetch_all(part, source_options))
            timings["fetch"] += time.perf_counter() - t0
            queued = []
            for k in range(first, first + len(batch)):
                if k in streamed:
                    queued.append((k, pool.submit(decode_streamed, k)))
                    bytes_in += shard.inputs[k].size
                    continue
                data = next(fetched)
                if isinstance(data, BaseException):
                    rejections.append(rejection(shard.inputs[k].uri, "fetch", data, shard.shard_id))
                else:
                    queued.append((k, pool.submit(decode, (k, data))))
                    bytes_in += len(data)
            return queued

        # One batch is decoded ahead while the kernel runs on the current one, so memory
        # holds at most two batches of decoded clips.
        with ThreadPoolExecutor(DECODE_THREADS) as pool:
            pending = start(0) if shard.inputs else []
            for first in range(0, len(shard.inputs), DECODE_BATCH):
                t1 = time.perf_counter()
                kept = []
                for k, future in pending:
                    result, digest = future.result()
                    if isinstance(result, AudioDecodeError):
                        rejections.append(
                            rejection(shard.inputs[k].uri, result.stage, result, shard.shard_id)
                        )
                    elif isinstance(result, OSError):  # a streamed input that failed to read
                        rejections.append(
                            rejection(shard.inputs[k].uri, "fetch", result, shard.shard_id)
                        )
                    else:
                        kept.append((k, digest, result))
                t2 = time.perf_counter()
                timings["decode"] += t2 - t1  # the wait for this batch's decodes
                nxt = first + DECODE_BATCH
                pending = start(nxt) if nxt < len(shard.inputs) else []
                if not kept:
                    continue
                t2 = time.perf_counter()
                clips = [(samples, rate) for _, _, (samples, rate, _) in kept]
                spans = [(info.first_frame, info.frames) for _, _, (_, _, info) in kept]
                rows = slice(n, n + len(kept))
                featurize_audio(
                    clips,
                    out=(waves[rows], mels[rows]),
                    peaks=peaks[rows],
                    spans=spans,
                    **params,
                )
                n += len(kept)
                timings["kernel"] += time.perf_counter() - t2
                shapes |= kernel_shapes(clips)
                for k, digest, (_, rate, info) in kept:
                    length = _resampled_length(info.frames, rate, audio.sample_rate)
                    padded += length < audio.samples
                    trimmed += length > audio.samples
                    durations.append(info.duration_s)
                    for name, value in (
                        ("uri", shard.inputs[k].uri),
                        ("content_hash", digest),
                        ("sample_rate", info.sample_rate),
                        ("channels", info.channels),
                        ("frames", info.frames),
                        ("duration_s", info.duration_s),
                        ("format", info.format),
                        ("subtype", info.subtype),
                    ):
                        columns[name].append(value)
        stats = {
            "clips": n,
            "duration_sum_s": float(sum(durations)),
            "duration_min_s": min(durations) if durations else None,
            "duration_max_s": max(durations) if durations else None,
            "padded": int(padded),
            "trimmed": int(trimmed),
            "clipped": int(np.count_nonzero(peaks[:n] > 1.0)) if audio.wave_dtype == "int16" else 0,
        }
        return ShardOutput(
            rows=n,
            arrays={"audio": waves, "mel": mels},
            meta=pa.table(columns, schema=META_SCHEMA),
            rejections=rejections,
            bytes_in=bytes_in,
            stats=stats,
            # (source rate, row bucket, channels) of the kernel calls: the compiles they cost
            extra={"kernel_shapes": sorted(list(s) for s in shapes)},
        )

    def merge_stats(self, spec: BakeSpec, markers: Sequence[ShardMarker]) -> dict[str, Any]:
        stats = [m.stats for m in markers if m.stats.get("clips")]
        clips = sum(s["clips"] for s in stats)
        total = sum(s["duration_sum_s"] for s in stats)
        return {
            "clips": clips,
            "duration_min_s": min((s["duration_min_s"] for s in stats), default=None),
            "duration_mean_s": total / clips if clips else None,
            "duration_max_s": max((s["duration_max_s"] for s in stats), default=None),
            "duration_total_s": total,
            "target_duration_s": float(spec.audio.duration),
            "padded": sum(s["padded"] for s in stats),
            "trimmed": sum(s["trimmed"] for s in stats),
            # clips whose waveform went past [-1, 1] and was clipped by int16 storage
            "clipped": sum(s.get("clipped", 0) for s in stats),
        }


def kernel_shapes(clips: Sequence[tuple[np.ndarray, int]]) -> set[tuple[int, int, int]]:
    """The (rate, rows, channels) signatures ``featurize_audio`` compiles for a batch of clips.

    ``clips``: ``(samples, rate)`` pairs, as ``featurize_audio`` takes them.
    """
    by_rate: dict[int, list[int]] = {}
    for samples, rate in clips:
        by_rate.setdefault(int(rate), []).append(samples.shape[1] if samples.ndim == 2 else 1)
    shapes = set()
    for rate, channels in by_rate.items():
        for first in range(0, len(channels), DECODE_BATCH):
            group = channels[first : first + DECODE_BATCH]
            rows = min(max(_MIN_ROW_BUCKET, 1 << (len(group) - 1).bit_length()), DECODE_BATCH)
            shapes.add((rate, rows, max(group)))
    return shapes


MODALITY = AudioModality()
