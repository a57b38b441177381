"""Audio fields: soundfile decode on the host, one jit featurizer (resample, mel) per shard.

Stored: ``<name>`` the waveform in ``wave_dtype`` and the log-mel spectrogram under ``mel``
for a field named ``audio`` (the single-modality bake's key), else ``<name>_mel``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from datakiln.etl.fields import register_codec
from datakiln.etl.fields.base import Context, Encoded, FieldError
from datakiln.etl.spec import AudioParams, FieldSpec
from datakiln.writers.zarr_region import FieldLayout


def mel_name(spec: FieldSpec) -> str:
    """The stored name of the field's mel spectrogram."""
    return "mel" if spec.name == "audio" else f"{spec.name}_mel"


class AudioCodec:
    """The codec of ``audio`` fields: the waveform and its log-mel spectrogram (see above)."""

    modality = "audio"
    media = True
    streams = True  # decode_audio_native reads only the window it needs from an open file
    params_type = AudioParams
    worker_modules: tuple[str, ...] = ("datakiln.etl.kernels.audio", "datakiln.readers.audio")

    @property
    def batch_rows(self) -> int:
        """Records a records bake decodes and featurizes at a time: decoded clips are large."""
        from datakiln.etl.modalities.audio import DECODE_BATCH

        return DECODE_BATCH

    def layouts(self, spec: FieldSpec, generation: str, shard_rows: int) -> list[FieldLayout]:
        a: AudioParams = spec.params
        mel = mel_name(spec)
        return [
            FieldLayout(
                spec.name, f"{generation}/{spec.name}", a.wave_dtype, (a.samples,), shard_rows
            ),
            FieldLayout(mel, f"{generation}/{mel}", a.mel_dtype, (a.n_mels, a.frames), shard_rows),
        ]

    def transforms(self, spec: FieldSpec) -> dict[str, dict[str, Any] | None]:
        from datakiln.etl.modalities.audio import MODALITY
        from datakiln.etl.spec import BakeSpec

        single = MODALITY.transforms(
            BakeSpec(sources=("-",), output="-", modality="audio", audio=spec.params)
        )
        return {spec.name: single["audio"], mel_name(spec): single["mel"]}

    def sample_bytes(self, spec: FieldSpec) -> int:
        a: AudioParams = spec.params
        mel = a.n_mels * a.frames * np.dtype(a.mel_dtype).itemsize
        return max(a.samples * np.dtype(a.wave_dtype).itemsize, mel)

    def identity(self, spec: FieldSpec) -> dict[str, Any]:
        from datakiln.etl.modalities.audio import FEATURIZER_VERSION

        return {"featurizer_version": FEATURIZER_VERSION}

    def decode(self, value: Any, spec: FieldSpec, context: Context) -> Any:
        """``(samples, rate, info)`` of the window the clip needs, from bytes or an open file."""
        from datakiln.etl.kernels.audio import DecodeWindow
        from datakiln.readers.audio import AudioDecodeError, decode_audio_native

        a: AudioParams = spec.params
        # only the source frames the output clip depends on (leading ones, or the middle)
        window = DecodeWindow(a.sample_rate, float(a.duration), a.align)
        try:
            return decode_audio_native(value, window=window)
        except AudioDecodeError as err:
            raise FieldError(err.stage, type(err).__name__, str(err)) from err

    def encode(
        self, decoded: Sequence[Any], spec: FieldSpec, capacity: int, context: Context
    ) -> Encoded:
        from datakiln.etl.kernels.audio import featurize_audio
        from datakiln.etl.modalities.audio import DECODE_BATCH, _kernel_params, kernel_shapes

        a: AudioParams = spec.params
        waves = np.zeros((capacity, a.samples), a.wave_dtype)
        mels = np.zeros((capacity, a.n_mels, a.frames), a.mel_dtype)
        present = [k for k, d in enumerate(decoded) if d is not None]
        shapes: set[tuple[int, int, int]] = set()
        for first in range(0, len(present), DECODE_BATCH):
            rows = present[first : first + DECODE_BATCH]
            w = np.zeros((len(rows), a.samples), a.wave_dtype)
            m = np.zeros((len(rows), a.n_mels, a.frames), a.mel_dtype)
            clips = [(decoded[k][0], decoded[k][1]) for k in rows]
            shapes |= kernel_shapes(clips)
            featurize_audio(
                clips,
                out=(w, m),
                spans=[(decoded[k][2].first_frame, decoded[k][2].frames) for k in rows],
                **_kernel_params(a),
            )
            waves[rows], mels[rows] = w, m
        infos = [d[2] if d is not None else None for d in decoded]
        n = spec.name
        durations = [i.duration_s for i in infos if i is not None]
        return Encoded(
            arrays={n: waves, mel_name(spec): mels},
            meta={
                f"{n}_sample_rate": [i.sample_rate if i else None for i in infos],
                f"{n}_duration_s": [i.duration_s if i else None for i in infos],
            },
            stats={"clips": len(durations), "duration_sum_s": float(sum(durations))},
            kernel_shapes=[list(s) for s in sorted(shapes)],
        )

    def merge_stats(self, spec: FieldSpec, stats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        clips = sum(s["clips"] for s in stats)
        total = sum(s["duration_sum_s"] for s in stats)
        return {
            "clips": clips,
            "duration_total_s": total,
            "duration_mean_s": total / clips if clips else None,
            "target_duration_s": float(spec.params.duration),
        }


CODEC = register_codec(AudioCodec())
