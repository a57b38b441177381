"""Multi-modal datasets of the seed guide.

* :class:`MultiModalDataset` (built by :func:`create_synthetic_multi_modal_dataset`): image,
  text and audio rendered from one shared latent vector per sample, with
  ``alignment_strength`` setting how much of each modality the latent determines.
* :class:`MultiModalPairedDataset`: given arrays of several modalities, row-aligned, served as
  samples together with their alignment scores.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import NDArray

from datakiln.datasets import _lazy
from datakiln.datasets.base import BaseDataset
from datakiln.errors import SpecError

MODALITIES: tuple[str, ...] = ("image", "text", "audio")
# Side of the low-resolution colour grid an image is upsampled from.
_IMAGE_GRID = 4
# Sinusoidal partials of a clip, and their frequency range in Hz.
_PARTIALS = 4
_MIN_HZ, _MAX_HZ = 200.0, 800.0
# Token ids below this are reserved (pad, unk, bos, eos), as in the text datasets.
_RESERVED_IDS = 4


class _ReadsFields(Protocol):
    """A dataset that reads only the fields asked for, as a baked cache does."""

    def read_batch(
        self, indices: np.ndarray, fields: Sequence[str] | None = None
    ) -> dict[str, Any]: ...


class MultiModalDataset(BaseDataset):
    """Synthetic samples whose modalities share a latent vector.

    Sample ``i`` draws a latent ``z ~ N(0, I)`` of ``latent_dim`` and, per modality ``m``,
    independent noise ``e_m ~ N(0, I)``; the modality is decoded from
    ``u_m = a·z + sqrt(1 - a²)·e_m`` with ``a = alignment_strength``, by fixed random decoders
    drawn once per dataset. So ``a = 1`` makes every modality a function of ``z`` (perfectly
    aligned; :meth:`decode` reproduces them from ``latent``) and ``a = 0`` makes them
    independent of it and of each other.

    * ``"image"``: float32 ``image_shape`` in ``(0, 1)``, a smooth upsampled colour field;
    * ``"text"``: int32 ``(text_sequence_length,)`` token ids in ``[4, text_vocab_size)``
      (no special tokens);
    * ``"audio"``: float32 ``(round(rate·duration),)``, four partials in [200, 800] Hz,
      peak-normalised to ``[-1, 1]``;
    * ``"alignment_score"``: float32, ``alignment_strength``; ``"latent"``: float32
      ``(latent_dim,)``; ``"indices"``.

    Raises:
        SpecError: Unknown modality, or a parameter out of range.
    """

    def __init__(
        self,
        modalities: Sequence[str] = MODALITIES,
        num_samples: int = 1000,
        alignment_strength: float = 0.8,
        image_shape: tuple[int, int, int] = (32, 32, 3),
        text_vocab_size: int = 1000,
        text_sequence_length: int = 50,
        audio_sample_rate: int = 16000,
        audio_duration: float = 1.0,
        latent_dim: int = 32,
        split: str = "train",
        *,
        rngs: Any = None,
    ) -> None:
        super().__init__(None, split, rngs=rngs)
        mods = tuple(modalities)
        if not mods or any(m not in MODALITIES for m in mods) or len(set(mods)) != len(mods):
            raise SpecError(
                f"modalities must be distinct names from {list(MODALITIES)}, got {list(mods)}"
            )
        if not 0.0 <= float(alignment_strength) <= 1.0:
            raise SpecError(f"alignment_strength must be in [0, 1], got {alignment_strength!r}")
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise SpecError(f"image_shape must be (height, width, channels), got {image_shape!r}")
        if text_vocab_size <= _RESERVED_IDS or text_sequence_length < 1 or latent_dim < 1:
            raise SpecError(
                "need text_vocab_size >= 5, text_sequence_length >= 1 and latent_dim >= 1, got "
                f"{text_vocab_size}, {text_sequence_length}, {latent_dim}"
            )
        audio_len = round(audio_sample_rate * audio_duration)
        if audio_len < 1:
            raise SpecError(
                f"audio_sample_rate={audio_sample_rate} x audio_duration={audio_duration} "
                "gives no samples"
            )
        self.modalities = mods
        self.num_samples = _lazy.check_size(num_samples, "num_samples")
        self.alignment_strength = float(alignment_strength)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.text_vocab_size = int(text_vocab_size)
        self.text_sequence_length = int(text_sequence_length)
        self.audio_sample_rate = int(audio_sample_rate)
        self.audio_duration = float(audio_duration)
        self.latent_dim = int(latent_dim)
        self._audio_len = audio_len
        self._key, decoder_key = jax.random.split(self.rngs.key("default"))
        self._decoders = _decoders(
            decoder_key,
            latent_dim=self.latent_dim,
            channels=self.image_shape[2],
            text_length=self.text_sequence_length,
        )

    def __len__(self) -> int:
        return self.num_samples

    def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
        out = _lazy.render(
            _multi_modal,
            self._key,
            indices,
            self._decoders,
            jnp.float32(self.alignment_strength),
            **self._static(),
        )
        batch: dict[str, Any] = {m: out[m] for m in MODALITIES if m in out}
        batch["alignment_score"] = np.full(len(indices), self.alignment_strength, np.float32)
        batch["latent"] = out["latent"]
        batch["indices"] = np.asarray(indices, dtype=np.int64)
        return batch

    def decode(self, latents: Any) -> dict[str, np.ndarray]:
        """Render every modality from latent vectors ``(B, latent_dim)`` with no modality noise.

        This is what samples are at ``alignment_strength=1``.
        """
        z = jnp.asarray(latents, jnp.float32)
        return {
            k: np.asarray(v)
            for k, v in _decode(
                self._decoders, {m: z for m in self.modalities}, **self._static()
            ).items()
        }

    def _static(self) -> dict[str, Any]:
        return {
            "modalities": self.modalities,
            "latent_dim": self.latent_dim,
            "image_shape": self.image_shape,
            "vocab_size": self.text_vocab_size,
            "audio_len": self._audio_len,
            "sample_rate": self.audio_sample_rate,
        }


@functools.partial(jax.jit, static_argnames=("latent_dim", "channels", "text_length"))
def _decoders(
    key: jax.Array, *, latent_dim: int, channels: int, text_length: int
) -> dict[str, jax.Array]:
    """Fixed random projections from the latent to each modality (columns of unit norm)."""
    k_img, k_txt, k_freq, k_amp = jax.random.split(key, 4)
    scale = 1.0 / math.sqrt(latent_dim)
    return {
        "image": jax.random.normal(k_img, (latent_dim, _IMAGE_GRID * _IMAGE_GRID * channels))
        * scale,
        "text": jax.random.normal(k_txt, (latent_dim, text_length)) * scale,
        "freq": jax.random.normal(k_freq, (latent_dim, _PARTIALS)) * scale,
        "amp": jax.random.normal(k_amp, (latent_dim, _PARTIALS)) * scale,
    }


_STATIC = ("modalities", "latent_dim", "image_shape", "vocab_size", "audio_len", "sample_rate")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _multi_modal(
    key: jax.Array,
    indices: jax.Array,
    decoders: dict[str, jax.Array],
    strength: jax.Array,
    *,
    modalities: tuple[str, ...],
    latent_dim: int,
    image_shape: tuple[int, int, int],
    vocab_size: int,
    audio_len: int,
    sample_rate: int,
) -> dict[str, jax.Array]:
    keys = _lazy.sample_keys(key, indices)
    # Row 0 is the shared latent, row 1 + m the noise of modality m: one draw per sample.
    draws = jax.vmap(lambda k: jax.random.normal(k, (1 + len(MODALITIES), latent_dim)))(keys)
    z = draws[:, 0]
    mixed = {
        m: strength * z + jnp.sqrt(1.0 - strength * strength) * draws[:, 1 + n]
        for n, m in enumerate(MODALITIES)
        if m in modalities
    }
    out: dict[str, jax.Array] = _decode(
        decoders,
        mixed,
        modalities=modalities,
        latent_dim=latent_dim,
        image_shape=image_shape,
        vocab_size=vocab_size,
        audio_len=audio_len,
        sample_rate=sample_rate,
    )
    out["latent"] = z
    return out


@functools.partial(jax.jit, static_argnames=_STATIC)
def _decode(
    decoders: dict[str, jax.Array],
    u: dict[str, jax.Array],
    *,
    modalities: tuple[str, ...],
    latent_dim: int,
    image_shape: tuple[int, int, int],
    vocab_size: int,
    audio_len: int,
    sample_rate: int,
) -> dict[str, jax.Array]:
    del latent_dim  # part of the static signature shared with _multi_modal
    out: dict[str, jax.Array] = {}
    if "image" in modalities:
        b = u["image"].shape[0]
        h, w, c = image_shape
        grid = (u["image"] @ decoders["image"]).reshape(b, _IMAGE_GRID, _IMAGE_GRID, c)
        field = jax.image.resize(grid, (b, h, w, c), method="linear")
        out["image"] = jax.nn.sigmoid(2.0 * field)
    if "text" in modalities:
        # u·w is N(0, 1) when u is: its normal CDF is uniform, quantised to word ids.
        q = jax.scipy.stats.norm.cdf(u["text"] @ decoders["text"])
        ids = _RESERVED_IDS + jnp.floor(q * (vocab_size - _RESERVED_IDS)).astype(jnp.int32)
        out["text"] = jnp.clip(ids, _RESERVED_IDS, vocab_size - 1)
    if "audio" in modalities:
        freq = _MIN_HZ + (_MAX_HZ - _MIN_HZ) * jax.scipy.stats.norm.cdf(
            u["audio"] @ decoders["freq"]
        )
        amp = 0.2 + 0.8 * jax.scipy.stats.norm.cdf(u["audio"] @ decoders["amp"])
        t = jnp.arange(audio_len, dtype=jnp.float32) / sample_rate
        wave = jnp.einsum("bk,bkt->bt", amp, jnp.sin(2 * jnp.pi * freq[:, :, None] * t))
        peak = jnp.max(jnp.abs(wave), axis=1, keepdims=True)
        out["audio"] = wave / jnp.where(peak > 0, peak, 1.0)
    return out


def create_synthetic_multi_modal_dataset(
    modalities: Sequence[str] = MODALITIES,
    num_samples: int = 1000,
    alignment_strength: float = 0.8,
    image_shape: tuple[int, int, int] = (32, 32, 3),
    text_vocab_size: int = 1000,
    text_sequence_length: int = 50,
    audio_sample_rate: int = 16000,
    audio_duration: float = 1.0,
    *,
    latent_dim: int = 32,
    split: str = "train",
    rngs: Any = None,
) -> MultiModalDataset:
    """An aligned synthetic multi-modal dataset; see :class:`MultiModalDataset`."""
    return MultiModalDataset(
        modalities=modalities,
        num_samples=num_samples,
        alignment_strength=alignment_strength,
        image_shape=image_shape,
        text_vocab_size=text_vocab_size,
        text_sequence_length=text_sequence_length,
        audio_sample_rate=audio_sample_rate,
        audio_duration=audio_duration,
        latent_dim=latent_dim,
        split=split,
        rngs=rngs,
    )


class MultiModalPairedDataset(BaseDataset):
    """Row-aligned arrays of several modalities, served as samples with alignment scores.

    Args:
        pairs: Which modalities are paired, as ``(a, b)`` name tuples; every name must be a
            key of ``data``.
        data: Modality name -> array (NumPy or JAX) with one row per sample; all the same
            number of rows. Or a baked records cache (``open_cache(url)``), whose fields are
            read on demand: nothing is loaded up front, and ``pair_batch`` reads only the two
            fields of its pair.
        alignments: Optional per-row alignment scores ``(N,)``; ones by default. Over a
            cache, also the name of a stored scalar field holding them.
        split: Split name.
        config: Optional config object.
        rngs: Seed source of ``get_batch``'s random draws.

    A sample holds every array of ``data`` at its row, ``"alignment_scores"`` (float32) and
    ``"index"``; :meth:`pair_batch` reads one pair only.

    Raises:
        SpecError: Pairs name missing modalities, or row counts differ.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str, str]],
        data: Mapping[str, Any],
        alignments: Any = None,
        split: str = "train",
        *,
        config: Any = None,
        rngs: Any = None,
    ) -> None:
        super().__init__(config, split, rngs=rngs)
        self._source: BaseDataset | None = None
        # per-row scores of in-memory data; None over a cache (read from its field instead)
        self.alignments: NDArray[np.float32] | None
        if isinstance(data, BaseDataset):
            self._init_from_dataset(pairs, data, alignments)
            return
        self.data = {name: np.asarray(value) for name, value in data.items()}
        rows = {name: (int(a.shape[0]) if a.ndim else None) for name, a in self.data.items()}
        if not rows or None in rows.values() or len(set(rows.values())) != 1:
            raise SpecError(
                f"data must map modality names to arrays of one row count, got rows {rows}"
            )
        self._len = next(n for n in rows.values() if n is not None)
        self.pairs = tuple((str(a), str(b)) for a, b in pairs)
        missing = sorted({m for pair in self.pairs for m in pair} - set(self.data))
        if not self.pairs or missing:
            raise SpecError(
                f"pairs must name modalities of data {sorted(self.data)}; missing {missing}"
            )
        if alignments is None:
            self.alignments = np.ones(self._len, dtype=np.float32)
        else:
            self.alignments = np.asarray(alignments, dtype=np.float32)
            if self.alignments.shape != (self._len,):
                raise SpecError(
                    f"alignments must have shape ({self._len},), got {self.alignments.shape}"
                )

    def _init_from_dataset(self, pairs: Any, source: BaseDataset, alignments: Any) -> None:
        names = list(getattr(source, "field_names", []))
        self.pairs = tuple((str(a), str(b)) for a, b in pairs)
        missing = sorted({m for pair in self.pairs for m in pair} - set(names))
        if not self.pairs or missing:
            raise SpecError(
                f"pairs must name fields of the cache {sorted(names)}; missing {missing}"
            )
        if alignments is not None and not isinstance(alignments, str):
            raise SpecError("over a cache, alignments is the name of a stored field, or None")
        if alignments is not None and alignments not in names:
            raise SpecError(f"alignments field {alignments!r} is not one of {sorted(names)}")
        self._source = source
        self._alignment_field = alignments
        self._len = len(source)
        self.data = {}
        self.alignments = None

    def _read(self, indices: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
        """The fields ``names`` at ``indices`` (from the cache, or the arrays)."""
        if self._source is None:
            out = {name: self.data[name][indices] for name in names}
            assert self.alignments is not None  # set by __init__ for in-memory data
            out["alignment_scores"] = self.alignments[indices]
            return out
        wanted = list(names) + ([self._alignment_field] if self._alignment_field else [])
        batch = cast("_ReadsFields", self._source).read_batch(indices, fields=wanted)
        out = {name: batch[name] for name in names}
        scores = (
            np.asarray(batch[self._alignment_field], np.float32)
            if self._alignment_field
            else np.ones(len(indices), np.float32)
        )
        out["alignment_scores"] = scores
        return out

    def __len__(self) -> int:
        return self._len

    def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
        if self._source is not None:
            names = list(dict.fromkeys(m for pair in self.pairs for m in pair))
            out = self._read(indices, names)
            out["indices"] = np.asarray(indices, dtype=np.int64)
            return out
        out = {name: a[indices] for name, a in self.data.items()}
        assert self.alignments is not None  # set by __init__ for in-memory data
        out["alignment_scores"] = self.alignments[indices]
        out["indices"] = np.asarray(indices, dtype=np.int64)
        return out

    def pair_batch(self, pair: tuple[str, str], indices: Any) -> dict[str, Any]:
        """The two modalities of ``pair`` (one of ``pairs``) at ``indices``, with scores.

        Raises:
            SpecError: ``pair`` is not one of the dataset's pairs.
        """
        if tuple(pair) not in self.pairs:
            raise SpecError(f"pair {tuple(pair)} is not one of {list(self.pairs)}")
        idx = self.check_indices(indices)
        out = self._read(idx, list(pair))
        out["indices"] = idx
        return out
