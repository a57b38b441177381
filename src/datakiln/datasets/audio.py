"""Audio datasets of the seed guide: ``SyntheticAudioDataset`` and ``create_audio_dataset``.

Batches hold ``"audio"`` (float32 ``(B, n_samples)``, peak-normalised to ``[-1, 1]`` when the
config normalises), ``"audio_type"`` (list of ``B`` names), ``"sample_rate"`` (int64 ``(B,)``),
``"duration"`` (float32 ``(B,)``) and ``"indices"``. Sample keys are the same, ``"index"``
aside. Waveforms are rendered lazily and vectorised in JAX from ``fold_in(key, index)``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from datakiln.datasets import _lazy
from datakiln.datasets.base import BaseDataset
from datakiln.datasets.batching import collate
from datakiln.datasets.configs import AudioModalityConfig
from datakiln.errors import SpecError

AUDIO_TYPES: tuple[str, ...] = ("sine", "noise", "chirp")
# Frequency range in Hz of sines, and the sweep of chirps (the seed meant 200 -> 800 Hz).
MIN_FREQUENCY_HZ = 200.0
MAX_FREQUENCY_HZ = 800.0
# Standard deviation of "noise" clips before normalisation.
_NOISE_STD = 0.3


class SyntheticAudioDataset(BaseDataset):
    """Synthetic mono clips: sines, Gaussian noise and linear chirps.

    Sample ``i`` has type ``audio_types[i % len(audio_types)]`` (so sample 0 of the default
    dataset is a sine):

    * ``"sine"``: a sine of random frequency in [200, 800] Hz, amplitude and phase;
    * ``"noise"``: white Gaussian noise;
    * ``"chirp"``: a sweep whose instantaneous frequency rises linearly from 200 Hz at the
      start to 800 Hz at the end of the clip (phase ``2π(f0·t + (f1 - f0)·t²/(2T))``).

    Args:
        config: Sample rate, duration and normalisation (default ``AudioModalityConfig()``).
        n_samples: Number of clips in the dataset (the seed's name; not samples per clip).
        audio_types: Which types to cycle through, each one of :data:`AUDIO_TYPES`.
        split: Split name.
        rngs: Seed source (optional, seed 0); one key for the content is drawn at construction.

    Raises:
        SpecError: Unknown or empty audio types, negative size.
    """

    def __init__(
        self,
        config: AudioModalityConfig | None = None,
        n_samples: int = 1000,
        audio_types: Sequence[str] = AUDIO_TYPES,
        split: str = "train",
        *,
        rngs: Any = None,
    ) -> None:
        config = AudioModalityConfig() if config is None else config
        if not isinstance(config, AudioModalityConfig):
            raise SpecError(
                f"audio datasets need an AudioModalityConfig, got {type(config).__name__}"
            )
        super().__init__(config, split, rngs=rngs)
        types = tuple(audio_types)
        unknown = [t for t in types if t not in AUDIO_TYPES]
        if not types or unknown:
            raise SpecError(
                f"audio_types must be a non-empty list of {list(AUDIO_TYPES)}, got {list(types)}"
            )
        self.n_samples = _lazy.check_size(n_samples, "n_samples")
        self.audio_types = types
        self._codes = np.array([AUDIO_TYPES.index(t) for t in types], dtype=np.int32)
        self._key = self.rngs.key("default")

    def __len__(self) -> int:
        return self.n_samples

    def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
        cfg = self.config
        codes = self._codes[np.asarray(indices) % len(self._codes)]
        padded_codes = np.zeros(_lazy.bucket_size(len(indices)), dtype=np.int32)
        padded_codes[: len(codes)] = codes
        audio = _lazy.render(
            _synthetic_audio,
            self._key,
            indices,
            jnp.asarray(padded_codes),
            n=cfg.n_samples,
            sample_rate=cfg.sample_rate,
            normalize=cfg.normalize,
        )
        size = len(indices)
        return {
            "audio": audio,
            "audio_type": [AUDIO_TYPES[c] for c in codes],
            "sample_rate": np.full(size, cfg.sample_rate, dtype=np.int64),
            "duration": np.full(size, cfg.duration, dtype=np.float32),
            "indices": np.asarray(indices, dtype=np.int64),
        }

    @staticmethod
    def collate_fn(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Stack samples (``dataset[i]``) into a batch; see :func:`~datakiln.datasets.collate`."""
        return collate(samples)


@functools.partial(jax.jit, static_argnames=("n", "sample_rate", "normalize"))
def _synthetic_audio(
    key: jax.Array,
    indices: jax.Array,
    codes: jax.Array,
    *,
    n: int,
    sample_rate: int,
    normalize: bool,
) -> jax.Array:
    t = jnp.arange(n, dtype=jnp.float32) / sample_rate
    duration = n / sample_rate

    def one(k: jax.Array, code: jax.Array) -> jax.Array:
        u = jax.random.uniform(k, (3,))  # one draw for all scalars: one Threefry to compile
        freq = MIN_FREQUENCY_HZ + (MAX_FREQUENCY_HZ - MIN_FREQUENCY_HZ) * u[0]
        amp = 0.5 + 0.5 * u[1]
        phase = 2 * jnp.pi * u[2]
        sine = amp * jnp.sin(2 * jnp.pi * freq * t + phase)
        noise = _NOISE_STD * jax.random.normal(jax.random.fold_in(k, 1), (n,))
        sweep = (MAX_FREQUENCY_HZ - MIN_FREQUENCY_HZ) / (2 * duration)
        chirp = amp * jnp.sin(2 * jnp.pi * (MIN_FREQUENCY_HZ * t + sweep * t * t))
        wave = jnp.select([code == 0, code == 1], [sine, noise], chirp)
        if normalize:
            peak = jnp.max(jnp.abs(wave))
            wave = jnp.where(peak > 0, wave / jnp.where(peak > 0, peak, 1.0), wave)
        return wave

    return jax.vmap(one)(_lazy.sample_keys(key, indices), codes)


def create_audio_dataset(
    dataset_type: str = "synthetic",
    config: AudioModalityConfig | None = None,
    **kwargs: Any,
) -> BaseDataset:
    """Build an audio dataset by type name (``"synthetic"``: :class:`SyntheticAudioDataset`).

    Raises:
        SpecError: Unknown ``dataset_type``.
    """
    if dataset_type != "synthetic":
        raise SpecError(f"dataset_type={dataset_type!r} is not one of ['synthetic']")
    return SyntheticAudioDataset(config=config, **kwargs)
