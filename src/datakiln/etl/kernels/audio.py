"""Audio kernels: mono mix, resampling, pad/trim, peak normalisation, log-mel (jax + numpy).

``audio_features`` is the shard kernel: one jit-compiled call per (source rate, batch shape)
takes a zero-padded batch of clips of one source sample rate, with true lengths and channel
counts as data, and returns the waveform at ``sample_rate`` cut or padded to ``duration`` and
its log-mel spectrogram. ``featurize_audio`` groups decoded clips by rate and pads them to a few
shapes, so a bake over clips in a handful of rates compiles a handful of times. The steps are
also public as pure functions (``mix_to_mono``, ``resample``, ``fit_length``,
``peak_normalize``, ``log_mel_spectrogram``) with the filters built in numpy
(``resample_filter``, ``mel_filterbank``).

Conventions, matching librosa 0.11 where there is a counterpart:

* Resampling is band-limited: a Kaiser-windowed sinc (``RESAMPLE_ZEROS`` zero crossings per
  side, cutoff ``RESAMPLE_ROLLOFF`` of the lower Nyquist, Kaiser beta ``RESAMPLE_BETA``),
  applied as a polyphase strided convolution (one output channel per phase, at least
  ``_MIN_PHASES`` of them so that the CPU convolution is efficient). A clip of ``n``
  frames at ``orig_sr`` gives ``ceil(n * sample_rate / orig_sr)`` frames (``librosa.resample``'s
  ``fix=True`` length); sample 0 stays at time 0.
* Pad/trim to ``round(duration * sample_rate)`` samples: ``align="start"`` keeps the beginning
  and zero-pads the end; ``"center"`` keeps the middle and pads both ends equally. Either way
  a reader need decode only the source frames that ``DecodeWindow`` names: given each
  window's place in its source (``featurize_audio``'s ``spans``), the kept samples are those
  of the whole source.
* Peak normalisation divides by ``max |x|`` of the kept window, unless that is below
  ``PEAK_FLOOR`` (silence is left alone rather than amplified).
* STFT: periodic Hann window of ``n_fft`` (``win_length == n_fft``), ``center=True`` with
  **zero** padding of ``n_fft // 2`` on both sides -- librosa 0.11's default
  ``pad_mode="constant"`` (it was ``"reflect"`` before 0.10) -- and ``1 + T // hop_length``
  frames. Power spectrogram (power 2).
* Mel filters: ``librosa.filters.mel``'s construction, ``mel_scale="slaney"`` (librosa's
  default, ``htk=False``) or ``"htk"``, filter norm ``"slaney"`` (area) or ``None``.
* ``log="db"``: ``10 * log10(max(S, amin))`` with ``ref=1.0`` (absolute dB, no per-clip
  reference, so values compare across clips), then clipped below at ``max - top_db`` per
  clip: exactly ``librosa.power_to_db(S, ref=1.0, amin=amin, top_db=top_db)`` on one clip.
  ``log=None`` returns the mel power itself.

All arithmetic is float32.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

from datakiln.errors import SpecError
from datakiln.etl.spec import ALIGNS, MEL_DTYPES, MEL_NORMS, MEL_SCALES, WAVE_DTYPES

LOG_SCALES = ("db", None)
RESAMPLE_METHODS = ("auto", "polyphase", "direct")
# Windowed-sinc resampler: zero crossings of the sinc kept on each side, cutoff as a fraction
# of the lower of the two Nyquist frequencies, and Kaiser beta (about 86 dB stopband).
RESAMPLE_ZEROS = 32
RESAMPLE_ROLLOFF = 0.945
RESAMPLE_BETA = 8.6
# Above this many filter weights (phases x taps), ``resample(method="auto")`` switches from the
# polyphase convolution to the per-tap form (rate pairs with a huge lcm, e.g. 16001 -> 16000).
MAX_POLYPHASE_WEIGHTS = 2**22
# The polyphase convolution computes at least this many outputs (channels) per input stride.
_MIN_PHASES = 64
# Peak normalisation leaves clips quieter than this (about -120 dBFS) unchanged.
PEAK_FLOOR = 1e-6
# Batches of featurize_audio are padded to a power of two rows of at least this many.
MIN_ROW_BUCKET = 8
# Stored waveform encodings (featurize_audio's wave_dtype): int16 is 16-bit PCM, the sample
# x stored as round(clip(x, -1, 1) * INT16_SCALE); float16 and float32 as they are.
INT16_SCALE = 32767.0


# -- filters (numpy, built at trace time from static parameters) ------------------------------


def _hz_to_mel(hz: npt.ArrayLike, scale: str) -> npt.NDArray[np.float64]:
    hz = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    # Slaney: linear below 1 kHz, logarithmic above (librosa.hz_to_mel with htk=False).
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    safe = np.maximum(hz, min_log_hz)
    return np.where(hz >= min_log_hz, min_log_mel + np.log(safe / min_log_hz) / logstep, hz / f_sp)


def _mel_to_hz(mel: npt.ArrayLike, scale: str) -> npt.NDArray[np.float64]:
    mel = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(
        mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel
    )


def mel_filterbank(
    *,
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    mel_scale: str = "slaney",
    mel_norm: str | None = "slaney",
) -> npt.NDArray[np.float32]:
    """Triangular mel filters as float32 ``(n_mels, n_fft // 2 + 1)``, as ``librosa.filters.mel``.

    ``fmax=None`` means ``sample_rate / 2``. ``mel_norm="slaney"`` scales each triangle to
    unit area (``2 / (upper - lower)`` in Hz); ``None`` leaves peaks at 1.
    """
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    mel_points = np.linspace(
        _hz_to_mel(np.array(fmin), mel_scale), _hz_to_mel(np.array(fmax), mel_scale), n_mels + 2
    )
    mel_freqs = _mel_to_hz(mel_points, mel_scale)
    fdiff = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if mel_norm == "slaney":
        weights *= (2.0 / (mel_freqs[2 : n_mels + 2] - mel_freqs[:n_mels]))[:, None]
    return np.asarray(weights, dtype=np.float32)


def _kaiser_sinc(t: np.ndarray, cutoff: float, half_width: float) -> np.ndarray:
    """Low-pass impulse response at times ``t`` (input samples); DC gain 1 on the input grid."""
    inside = np.abs(t) < half_width
    ratio = np.clip(t / half_width, -1.0, 1.0)
    window = np.i0(RESAMPLE_BETA * np.sqrt(1.0 - ratio**2)) / np.i0(RESAMPLE_BETA)
    return np.where(inside, cutoff * np.sinc(cutoff * t) * window, 0.0)


def _rates(orig_sr: int, target_sr: int) -> tuple[int, int, float, int]:
    """``(up, down, half_width, pad)``: the reduced rate ratio and the filter's extent."""
    g = math.gcd(orig_sr, target_sr)
    up, down = target_sr // g, orig_sr // g
    cutoff = min(1.0, up / down) * RESAMPLE_ROLLOFF
    half_width = RESAMPLE_ZEROS / cutoff
    return up, down, half_width, math.ceil(half_width)


def resample_filter(
    orig_sr: int,
    target_sr: int,
    *,
    phases: int | None = None,
    first: int = 0,
    count: int | None = None,
) -> tuple[np.ndarray, int]:
    """Polyphase weights of phases ``first ... first + count - 1`` and their input offset.

    With ``up / down`` the reduced ratio ``target_sr / orig_sr``, ``phases`` a multiple of
    ``up`` (default ``up``) and ``stride = down * phases / up``, output sample
    ``q * phases + r`` (for ``r`` in the group) is the dot product of row ``r - first`` of
    the float32 ``(count, 1, taps)`` weights with input samples ``q * stride - pad + offset``
    onwards, ``pad = ceil(half width of the sinc)``. The window spans only what the group's
    phases need, ``taps = (last - first) phases' input span + 2 * pad + 2``.
    """
    up, down, half_width, pad = _rates(orig_sr, target_sr)
    phases = up if phases is None else phases
    if phases % up:
        raise SpecError(f"phases must be a multiple of {up}, got {phases}")
    count = phases - first if count is None else count
    if first < 0 or count < 1 or first + count > phases:
        raise SpecError(f"phases {first}..{first + count - 1} are not within 0..{phases - 1}")
    stride = down * (phases // up)
    cutoff = min(1.0, up / down) * RESAMPLE_ROLLOFF
    group = np.arange(first, first + count)
    offset = int(group[0] * stride // phases)
    taps = int(group[-1] * stride // phases) - offset + 2 * pad + 2
    lag = group[:, None] * stride / phases + pad - offset - np.arange(taps)[None, :]
    weights = _kaiser_sinc(lag, cutoff, half_width)
    return weights.astype(np.float32)[:, None, :], offset


# -- pure steps ------------------------------------------------------------------------------


def mix_to_mono(waves: jax.Array, channels: jax.Array) -> jax.Array:
    """Average the first ``channels[i]`` channels of each clip: ``(N, T, C) -> (N, T)``.

    Channels beyond a clip's count must be zero (padding).
    """
    total = jnp.sum(waves, axis=2)
    return total / jnp.maximum(channels, 1).astype(waves.dtype)[:, None]


def resample(
    x: jax.Array,
    lengths: jax.Array,
    *,
    orig_sr: int,
    target_sr: int,
    n_out: int | None = None,
    method: str = "auto",
) -> tuple[jax.Array, jax.Array]:
    """Band-limited resampling of zero-padded clips ``(N, T)`` from ``orig_sr`` to ``target_sr``.

    Samples at or past ``lengths`` are treated as zero, and outputs at or past the new lengths
    ``ceil(lengths * target_sr / orig_sr)`` are zero.

    Args:
        x: float32 ``(N, T)``.
        lengths: int32 ``(N,)`` true lengths.
        orig_sr: Input rate in Hz (static).
        target_sr: Output rate in Hz (static).
        n_out: Output samples to compute; ``None``: ``ceil(T * target_sr / orig_sr)``.
        method: ``"polyphase"`` (strided convolution, one output channel per phase),
            ``"direct"`` (one gather per tap; for rate pairs with very many phases), or
            ``"auto"`` (polyphase unless it needs more than ``MAX_POLYPHASE_WEIGHTS``).

    Returns:
        ``(y, new_lengths)``: float32 ``(N, n_out)`` and int32 ``(N,)``.
    """
    _n, t = x.shape
    up, down, _half_width, pad = _rates(orig_sr, target_sr)
    if n_out is None:
        n_out = -(-t * up // down)
    col = jnp.arange(t, dtype=jnp.int32)[None, :]
    x = jnp.where(col < lengths[:, None], x, 0.0)
    # ceil(lengths * up / down), written so that no product overflows int32.
    new_lengths = ((lengths // down) * up + (-(-((lengths % down) * up) // down))).astype(jnp.int32)
    if up == down:
        y = x[:, :n_out] if t >= n_out else jnp.pad(x, ((0, 0), (0, n_out - t)))
    else:
        if method == "auto":
            grow = -(-_MIN_PHASES // up)
            weights = up * grow * (down * grow + 2 * pad + 1)
            method = "polyphase" if weights <= MAX_POLYPHASE_WEIGHTS else "direct"
        if method == "polyphase":
            y = _resample_polyphase(x, orig_sr, target_sr, n_out)
        elif method == "direct":
            y = _resample_direct(x, orig_sr, target_sr, n_out)
        else:
            raise SpecError(f"resample method must be one of {RESAMPLE_METHODS}, got {method!r}")
    out_col = jnp.arange(n_out, dtype=jnp.int32)[None, :]
    return jnp.where(out_col < new_lengths[:, None], y, 0.0), new_lengths


def _resample_polyphase(x: jax.Array, orig_sr: int, target_sr: int, n_out: int) -> jax.Array:
    n = x.shape[0]
    up, down, _, pad = _rates(orig_sr, target_sr)
    # Few phases (48 kHz -> 16 kHz has one) make a convolution with too few output channels
    # to run well on CPU; treating `grow` consecutive outputs as one block gives it more.
    # Many phases (44.1 kHz -> 16 kHz has 160) make each phase's window span the whole block
    # of `down` inputs, mostly zero taps: phases are then split into groups, each with its
    # own, shorter window (two groups measured 1.2x faster; more groups were slower).
    grow = -(-_MIN_PHASES // up)
    phases, stride = up * grow, down * grow
    size = -(-phases // (2 if phases >= 2 * _MIN_PHASES else 1))
    blocks = -(-n_out // phases)
    x = jnp.pad(x, ((0, 0), (pad, pad + (blocks + 1) * stride + 2)))
    parts = []
    for first in range(0, phases, size):
        weights, offset = resample_filter(
            orig_sr, target_sr, phases=phases, first=first, count=min(size, phases - first)
        )
        window = x[:, offset : offset + (blocks - 1) * stride + weights.shape[-1]]
        parts.append(
            jax.lax.conv_general_dilated(
                window[:, None, :],
                jnp.asarray(weights),
                window_strides=(stride,),
                padding="VALID",
                dimension_numbers=("NCH", "OIH", "NCH"),
                precision=jax.lax.Precision.HIGHEST,
            )
        )  # (N, phases of the group, blocks)
    y = jnp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    # phase r of block q is output q * phases + r
    return jnp.swapaxes(y, 1, 2).reshape(n, blocks * phases)[:, :n_out]


def _resample_direct(x: jax.Array, orig_sr: int, target_sr: int, n_out: int) -> jax.Array:
    n, t = x.shape
    up, down, half_width, pad = _rates(orig_sr, target_sr)
    cutoff = min(1.0, up / down) * RESAMPLE_ROLLOFF
    out = np.arange(n_out, dtype=np.int64)
    base = (out * down) // up  # floor of each output's time in input samples
    frac = (out * down - base * up) / up
    x = jnp.pad(x, ((0, 0), (pad, max(0, int(base[-1]) + pad + 2 - t))))
    y = jnp.zeros((n, n_out), dtype=jnp.float32)
    for j in range(-pad, pad + 1):
        w = _kaiser_sinc(frac - j, cutoff, half_width).astype(np.float32)
        y = y + x[:, base + j + pad] * jnp.asarray(w)[None, :]
    return y


def fit_length(
    x: jax.Array,
    lengths: jax.Array,
    *,
    n_samples: int,
    align: str,
    offsets: jax.Array | None = None,
) -> jax.Array:
    """Cut or zero-pad each clip to ``n_samples``: ``(N, T) -> (N, n_samples)``.

    ``align="start"`` keeps samples ``[0, n_samples)``; ``"center"`` keeps the middle
    ``n_samples`` of a longer clip and centres a shorter one (an odd extra sample is trimmed,
    or padded, at the end). ``offsets`` (int32 ``(N,)``), when given, is where each clip's
    kept window starts instead (negative: zeros before the clip): a clip decoded from a window
    of its source keeps the samples the whole source's alignment would keep (``featurize_audio``
    computes them from its ``spans``).
    Samples at or past ``lengths`` count as padding.
    """
    n, t = x.shape
    col = jnp.arange(n_samples, dtype=jnp.int32)[None, :]
    if align not in ALIGNS:
        raise SpecError(f"align must be one of {ALIGNS}, got {align!r}")
    if offsets is not None:
        src = col + jnp.asarray(offsets, jnp.int32)[:, None]
    elif align == "start":
        src = jnp.broadcast_to(col, (n, n_samples))
    else:
        # Odd excess or shortfall: the extra sample is trimmed, or padded, at the end.
        excess = jnp.minimum(lengths, t) - n_samples
        offset = jnp.where(excess >= 0, excess // 2, -((-excess) // 2))
        src = col + offset[:, None]
    valid = (src >= 0) & (src < jnp.minimum(lengths, t)[:, None])
    taken = jnp.take_along_axis(x, jnp.clip(src, 0, max(t - 1, 0)), axis=1)
    return jnp.where(valid, taken, 0.0)


def peak_normalize(x: jax.Array) -> jax.Array:
    """Scale each clip ``(N, T)`` to peak ``|x| == 1`` (clips below ``PEAK_FLOOR`` unchanged)."""
    peak = jnp.max(jnp.abs(x), axis=1, keepdims=True)
    return jnp.where(peak >= PEAK_FLOOR, x / jnp.maximum(peak, PEAK_FLOOR), x)


def log_mel_spectrogram(
    x: jax.Array,
    *,
    sample_rate: int,
    n_fft: int = 1024,
    hop_length: int = 512,
    n_mels: int = 80,
    fmin: float = 0.0,
    fmax: float | None = None,
    mel_scale: str = "slaney",
    mel_norm: str | None = "slaney",
    log: str | None = "db",
    amin: float = 1e-10,
    top_db: float | None = 80.0,
) -> jax.Array:
    """Mel spectrogram of clips ``(N, T)`` as float32 ``(N, n_mels, 1 + T // hop_length)``.

    See the module docstring for the conventions (librosa 0.11's ``melspectrogram`` with
    ``center=True, pad_mode="constant", power=2`` then ``power_to_db(ref=1.0)``).
    """
    _n, t = x.shape
    half = n_fft // 2
    frames = 1 + t // hop_length
    padded = jnp.pad(x, ((0, 0), (half, half)))
    index = np.arange(frames)[:, None] * hop_length + np.arange(n_fft)[None, :]
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    spectrum = jnp.fft.rfft(padded[:, index] * jnp.asarray(window)[None, None, :], axis=-1)
    power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2  # (N, frames, bins)
    basis = mel_filterbank(
        sample_rate=sample_rate,
        n_fft=n_fft,
        n_mels=n_mels,
        fmin=fmin,
        fmax=fmax,
        mel_scale=mel_scale,
        mel_norm=mel_norm,
    )
    mel = jnp.einsum("mf,ntf->nmt", jnp.asarray(basis), power, precision=jax.lax.Precision.HIGHEST)
    if log is None:
        return mel
    db = 10.0 * jnp.log10(jnp.maximum(mel, amin))
    if top_db is not None:
        db = jnp.maximum(db, jnp.max(db, axis=(1, 2), keepdims=True) - top_db)
    return db


# -- the shard kernel ------------------------------------------------------------------------

_STATIC = (
    "orig_sr",
    "sample_rate",
    "duration",
    "n_fft",
    "hop_length",
    "n_mels",
    "fmin",
    "fmax",
    "mel_scale",
    "mel_norm",
    "normalize",
    "log",
    "amin",
    "top_db",
    "align",
    "wave_dtype",
    "mel_dtype",
)


def check_audio_params(
    *,
    sample_rate: int,
    duration: float,
    n_fft: int = 1024,
    hop_length: int = 512,
    n_mels: int = 80,
    fmin: float = 0.0,
    fmax: float | None = None,
    mel_scale: str = "slaney",
    mel_norm: str | None = "slaney",
    log: str | None = "db",
    amin: float = 1e-10,
    top_db: float | None = 80.0,
    align: str = "start",
    **_: Any,
) -> None:
    """Raise ``SpecError`` naming the first audio parameter whose value is not allowed."""

    def bad(name: str, value: object, allowed: str) -> SpecError:
        return SpecError(f"audio parameter {name}={value!r} is not allowed: {allowed}")

    if not (isinstance(sample_rate, numbers.Integral) and sample_rate > 0):
        raise bad("sample_rate", sample_rate, "a positive integer number of Hz")
    if not duration > 0 or round(duration * sample_rate) < 1:
        raise bad("duration", duration, "positive seconds, at least one sample long")
    if not (isinstance(n_fft, numbers.Integral) and n_fft >= 2):
        raise bad("n_fft", n_fft, "an integer >= 2")
    if not (isinstance(hop_length, numbers.Integral) and hop_length >= 1):
        raise bad("hop_length", hop_length, "a positive integer")
    if not (isinstance(n_mels, numbers.Integral) and n_mels >= 1):
        raise bad("n_mels", n_mels, "a positive integer")
    top = sample_rate / 2.0 if fmax is None else fmax
    if not 0.0 <= fmin < top <= sample_rate / 2.0:
        raise bad("fmin/fmax", (fmin, fmax), f"0 <= fmin < fmax <= {sample_rate / 2} (Nyquist)")
    if mel_scale not in MEL_SCALES:
        raise bad("mel_scale", mel_scale, f"one of {MEL_SCALES}")
    if mel_norm not in MEL_NORMS:
        raise bad("mel_norm", mel_norm, f"one of {MEL_NORMS}")
    if log not in LOG_SCALES:
        raise bad("log", log, f"one of {LOG_SCALES}")
    if not amin > 0:
        raise bad("amin", amin, "a positive power floor")
    if top_db is not None and not top_db >= 0:
        raise bad("top_db", top_db, "None or a non-negative number of dB")
    if align not in ALIGNS:
        raise bad("align", align, f"one of {ALIGNS}")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _audio_kernel(
    waves: jax.Array,
    lengths: jax.Array,
    channels: jax.Array,
    offsets: jax.Array | None = None,
    *,
    orig_sr: int,
    sample_rate: int,
    duration: float,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    fmin: float,
    fmax: float | None,
    mel_scale: str,
    mel_norm: str | None,
    normalize: bool,
    log: str | None,
    amin: float,
    top_db: float | None,
    align: str,
    wave_dtype: str = "float32",
    mel_dtype: str = "float32",
) -> tuple[jax.Array, jax.Array, jax.Array]:
    n_samples = round(duration * sample_rate)
    mono = mix_to_mono(waves, channels)
    # With align="start" only outputs [0, n_samples) are kept: resample just those.
    leading = align == "start" and offsets is None
    n_out = n_samples if leading else -(-mono.shape[1] * sample_rate // orig_sr)
    y, new_lengths = resample(mono, lengths, orig_sr=orig_sr, target_sr=sample_rate, n_out=n_out)
    audio = fit_length(y, new_lengths, n_samples=n_samples, align=align, offsets=offsets)
    if normalize:
        audio = peak_normalize(audio)
    mel = log_mel_spectrogram(
        audio,
        sample_rate=sample_rate,
        n_fft=n_fft,
        hop_length=hop_length,
        n_mels=n_mels,
        fmin=fmin,
        fmax=fmax,
        mel_scale=mel_scale,
        mel_norm=mel_norm,
        log=log,
        amin=amin,
        top_db=top_db,
    )
    peak = jnp.max(jnp.abs(audio), axis=1)
    return _encode_wave(audio, wave_dtype), mel.astype(mel_dtype), peak


def _encode_wave(audio: jax.Array, wave_dtype: str) -> jax.Array:
    """The waveform in its stored encoding (see ``WAVE_DTYPES``)."""
    if wave_dtype == "int16":
        return jnp.round(jnp.clip(audio, -1.0, 1.0) * INT16_SCALE).astype(jnp.int16)
    return audio.astype(wave_dtype)


def audio_features(
    waves: jax.Array | np.ndarray,
    lengths: jax.Array | np.ndarray,
    channels: jax.Array | np.ndarray | None = None,
    *,
    orig_sr: int,
    sample_rate: int,
    duration: float,
    n_fft: int = 1024,
    hop_length: int = 512,
    n_mels: int = 80,
    fmin: float = 0.0,
    fmax: float | None = None,
    mel_scale: str = "slaney",
    mel_norm: str | None = "slaney",
    normalize: bool = False,
    log: str | None = "db",
    amin: float = 1e-10,
    top_db: float | None = 80.0,
    align: str = "start",
    offsets: jax.Array | np.ndarray | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The audio shard kernel: mono, resample, pad/trim, normalise, log-mel (jit-compiled).

    One compile per (input shape, parameters): call it with the clips of one source rate,
    padded to a bucketed shape (``featurize_audio`` does this).

    Args:
        waves: float32 ``(N, T, C)`` (or ``(N, T)`` mono) clips at ``orig_sr``, zero-padded in
            time and channels.
        lengths: int32 ``(N,)`` true frame counts.
        channels: int32 ``(N,)`` true channel counts; ``None``: all ``C``.
        orig_sr: The clips' sample rate in Hz.
        sample_rate: Output rate in Hz.
        duration: Output length in seconds (``round(duration * sample_rate)`` samples).
        n_fft: FFT and window size (default 1024).
        hop_length: Samples between frames (default 512).
        n_mels: Mel bands (default 80).
        fmin: Lower band edge in Hz (default 0).
        fmax: Upper band edge in Hz (default: Nyquist).
        mel_scale: ``"slaney"`` (default) or ``"htk"``.
        mel_norm: ``"slaney"`` (default, unit-area filters) or ``None``.
        normalize: Peak-normalise each clip (default off).
        log: ``"db"`` (default) or ``None`` (mel power).
        amin: Power floor before the log (default 1e-10, librosa's).
        top_db: Dynamic range kept below each clip's max in dB (default 80, librosa's);
            ``None`` keeps all.
        align: ``"start"`` (default) or ``"center"``, see ``fit_length``.
        offsets: int32 ``(N,)`` first kept resampled sample of each clip, overriding
            ``align``'s choice, for clips decoded from a window of their source (see
            ``fit_length`` and ``DecodeWindow``); ``None``: ``align`` decides.

    Returns:
        ``(audio, mel)``: float32 ``(N, round(duration * sample_rate))`` and float32
        ``(N, n_mels, 1 + n_samples // hop_length)``.
    """
    raw: dict[str, Any] = {
        "n_fft": n_fft,
        "hop_length": hop_length,
        "n_mels": n_mels,
        "fmin": fmin,
        "fmax": fmax,
        "mel_scale": mel_scale,
        "mel_norm": mel_norm,
        "normalize": normalize,
        "log": log,
        "amin": amin,
        "top_db": top_db,
        "align": align,
    }
    check_audio_params(sample_rate=sample_rate, duration=duration, **raw)
    if not (isinstance(orig_sr, numbers.Integral) and orig_sr > 0):
        raise SpecError(f"orig_sr must be a positive integer number of Hz, got {orig_sr!r}")
    waves = jnp.asarray(waves, dtype=jnp.float32)
    if waves.ndim == 2:
        waves = waves[:, :, None]
    if waves.ndim != 3:
        raise ValueError(f"waves must be (N, T, C) or (N, T), got shape {waves.shape}")
    n, _, c = waves.shape
    lengths = jnp.asarray(lengths, dtype=jnp.int32)
    channels = (
        jnp.full((n,), c, jnp.int32) if channels is None else jnp.asarray(channels, jnp.int32)
    )
    if lengths.shape != (n,) or channels.shape != (n,):
        raise ValueError(
            f"lengths and channels must be ({n},), got {lengths.shape} and {channels.shape}"
        )
    if offsets is not None:
        offsets = jnp.asarray(offsets, jnp.int32)
        if offsets.shape != (n,):
            raise ValueError(f"offsets must be ({n},), got {offsets.shape}")
    params = _kernel_statics(sample_rate, duration, raw)
    audio, mel, _peak = _audio_kernel(
        waves, lengths, channels, offsets, orig_sr=int(orig_sr), **params
    )
    return audio, mel


def _next_pow2(x: int, least: int) -> int:
    return max(least, 1 << max(0, int(x) - 1).bit_length())


def _input_frames(orig_sr: int, sample_rate: int, duration: float) -> int:
    """Input frames that the first ``duration`` seconds of output depend on."""
    up, down, _, pad = _rates(orig_sr, sample_rate)
    n_samples = round(duration * sample_rate)
    return ((n_samples - 1) * down) // up + pad + 2


def _window_period(orig_sr: int, sample_rate: int) -> int:
    """Source frames per block of the polyphase resampler (a multiple of ``down``).

    A window of the source that starts at a multiple of this is cut into the same blocks as
    the whole clip: output ``j`` of the window is output ``start * up / down + j`` of the clip,
    from the same filter rows, so the two agree to float32 rounding.
    """
    up, down, _, _ = _rates(orig_sr, sample_rate)
    return down * -(-_MIN_PHASES // up)


def _center_frames(orig_sr: int, sample_rate: int, duration: float) -> int:
    """The most source frames a ``DecodeWindow(align="center")`` window spans at ``orig_sr``.

    Also at least the frames of a source short enough to be decoded whole.
    """
    up, down, _, pad = _rates(orig_sr, sample_rate)
    n_samples = round(duration * sample_rate)
    return ((n_samples - 1) * down) // up + 2 * pad + 4 + _window_period(orig_sr, sample_rate)


def _center_offset(length: int, n_samples: int) -> int:
    """``fit_length``'s first kept sample of a ``length``-sample clip under ``align="center"``."""
    excess = length - n_samples
    return excess // 2 if excess >= 0 else -((-excess) // 2)


def _kept_offset(
    start: int, total: int, *, orig_sr: int, sample_rate: int, n_samples: int, align: str
) -> int:
    """First kept resampled sample of a clip holding source frames ``start...`` of ``total``.

    That is the sample the alignment keeps first in the whole source's resampling, shifted by
    the ``start * up / down`` outputs before the window (``start`` is a multiple of ``down``).
    """
    up, down, _, _ = _rates(orig_sr, sample_rate)
    if start < 0 or (start * up) % down:
        raise ValueError(
            f"a window of a {orig_sr} Hz source must start at a multiple of {down} frames "
            f"(one resampler period to {sample_rate} Hz), got {start}"
        )
    first = _center_offset(-(-total * up // down), n_samples) if align == "center" else 0
    return first - start * up // down


@dataclasses.dataclass(frozen=True, slots=True)
class DecodeWindow:
    """Which source frames a clip's output depends on: what a reader needs to decode.

    ``frames(orig_sr, total)`` answers ``readers.audio.decode_audio_native(window=...)``.
    ``align="start"``: the leading frames. ``"center"``: the middle of the source, from a
    multiple of the resampler's block (``_window_period``) at least ``pad + 1`` frames before
    the first frame the kept outputs read, to ``pad + 2`` frames past the last one; given that
    window and its ``(start, total)`` span, ``featurize_audio`` computes the same rows as from
    the whole source (to float32 rounding). A source no longer than the output once resampled
    is decoded whole (it is padded, every frame counts).

    Attributes:
        sample_rate: The output rate in Hz.
        duration: The output length in seconds.
        align: ``"start"`` or ``"center"``, as ``fit_length``.
    """

    sample_rate: int
    duration: float
    align: str = "start"

    def __post_init__(self) -> None:
        check_audio_params(sample_rate=self.sample_rate, duration=self.duration, align=self.align)

    def frames(self, orig_sr: int, total: int) -> tuple[int, int]:
        """``(start, stop)``: decode frames ``[start, stop)`` of a ``total``-frame source."""
        if self.align == "start":
            return 0, max(0, min(total, _input_frames(orig_sr, self.sample_rate, self.duration)))
        up, down, _, pad = _rates(orig_sr, self.sample_rate)
        n_samples = round(self.duration * self.sample_rate)
        length = -(-total * up // down)
        if length <= n_samples:
            return 0, max(0, total)
        first = _center_offset(length, n_samples)
        period = _window_period(orig_sr, self.sample_rate)
        # output k reads source frames floor(k * down / up) - pad ... + pad + 1
        lo = (first * down) // up - pad - 1
        hi = ((first + n_samples - 1) * down) // up + pad + 2
        return max(0, lo // period * period), min(total, hi)


def featurize_audio(
    clips: Sequence[tuple[np.ndarray, int]],
    *,
    sample_rate: int,
    duration: float,
    batch_size: int = 64,
    wave_dtype: str = "float32",
    mel_dtype: str = "float32",
    out: tuple[np.ndarray, np.ndarray] | None = None,
    peaks: np.ndarray | None = None,
    spans: Sequence[tuple[int, int] | None] | None = None,
    **params: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``audio_features`` over decoded clips of any rates, on a few bucketed shapes.

    Clips are grouped by sample rate; each group is cut into batches of ``batch_size`` rows
    (the last padded to a power of two), channels padded to the group's most, and time padded
    to the frames the output depends on: a fixed count per rate (``align="start"``, and
    ``"center"`` for clips decoded through a ``DecodeWindow``), else a power of two.
    Compiles: about one per (source rate, row bucket, channels).

    Args:
        clips: ``(samples, rate)`` pairs, samples float32 ``(frames, channels)`` or
            ``(frames,)``, as ``decode_audio`` returns them (finite, at least one frame), or
            int16 PCM standing for ``value / 32768`` (``decode_audio_native``).
        sample_rate: As ``audio_features``.
        duration: As ``audio_features``.
        batch_size: Rows per kernel call.
        wave_dtype: Encoding of the returned waveform, one of ``WAVE_DTYPES`` (done inside
            the kernel, so the host copies the compact form only).
        mel_dtype: ``"float32"`` or ``"float16"`` for the returned mel.
        out: ``(audio, mel)`` arrays of at least ``len(clips)`` rows in those dtypes to fill
            (the first ``len(clips)`` rows) instead of allocating new ones.
        peaks: Optional float32 ``(len(clips),)`` receiving each clip's peak ``|x|`` before
            encoding (above 1 means ``wave_dtype="int16"`` clipped it).
        spans: Per clip, ``(start, total)`` when it holds source frames ``start...`` of a
            ``total``-frame source (a ``DecodeWindow`` decode), or ``None`` for a whole clip;
            ``None``: all whole. ``align="center"`` then keeps what the whole source would
            give; ``align="start"`` needs ``start == 0``.
        **params: The other keyword arguments of ``audio_features``.

    Returns:
        ``(audio, mel)`` as numpy, in the order of ``clips``.
    """
    align = params.get("align", "start")
    check_audio_params(sample_rate=sample_rate, duration=duration, **params)
    if batch_size < 1:
        raise SpecError(f"batch_size must be positive, got {batch_size}")
    if wave_dtype not in WAVE_DTYPES or mel_dtype not in MEL_DTYPES:
        raise SpecError(
            f"wave_dtype must be one of {WAVE_DTYPES} and mel_dtype one of {MEL_DTYPES}, "
            f"got {wave_dtype!r} and {mel_dtype!r}"
        )
    if spans is not None and len(spans) != len(clips):
        raise ValueError(f"spans must have one entry per clip ({len(clips)}), got {len(spans)}")
    n_samples = round(duration * sample_rate)
    hop = params.get("hop_length", 512)
    n_mels = params.get("n_mels", 80)
    if out is None:
        audio = np.zeros((len(clips), n_samples), dtype=wave_dtype)
        mel = np.zeros((len(clips), n_mels, 1 + n_samples // hop), dtype=mel_dtype)
    else:
        audio, mel = out
    kernel_params = _kernel_statics(sample_rate, duration, params)
    by_rate: dict[int, list[int]] = {}
    for i, (_, rate) in enumerate(clips):
        by_rate.setdefault(int(rate), []).append(i)
    for rate, members in by_rate.items():
        for first in range(0, len(members), batch_size):
            idx = members[first : first + batch_size]
            arrays = [_samples(clips[i][0]) for i in idx]
            rows = min(_next_pow2(len(idx), MIN_ROW_BUCKET), batch_size)
            lengths = np.array([a.shape[0] for a in arrays], dtype=np.int32)
            channels = np.array([a.shape[1] for a in arrays], dtype=np.int32)
            where = [_span(spans, i, int(lengths[j])) for j, i in enumerate(idx)]
            offsets = None
            if align == "start":
                if any(start for start, _ in where):
                    raise ValueError('align="start" needs clips decoded from their first frame')
                frames = _input_frames(rate, sample_rate, duration)
            else:
                # A DecodeWindow window, or a clip short enough to be decoded whole, fits a
                # fixed count per rate; a longer whole clip pads to a power of two.
                frames = _center_frames(rate, sample_rate, duration)
                if int(lengths.max()) > frames:
                    frames = _next_pow2(int(lengths.max()), 1024)
                offsets = np.array(
                    [
                        _kept_offset(
                            start,
                            total,
                            orig_sr=rate,
                            sample_rate=sample_rate,
                            n_samples=n_samples,
                            align=align,
                        )
                        for start, total in where
                    ]
                    + [0] * (rows - len(idx)),
                    dtype=np.int32,
                )
            batch = np.zeros((rows, frames, int(channels.max())), dtype=np.float32)
            for j, a in enumerate(arrays):
                kept = a[:frames]
                dst = batch[j, : kept.shape[0], : kept.shape[1]]
                if kept.dtype == np.int16:  # 16-bit PCM: only the frames used are converted
                    np.multiply(kept, np.float32(2.0**-15), out=dst)
                else:
                    dst[...] = kept
            out_audio, out_mel, out_peak = _audio_kernel(
                batch,
                np.pad(lengths, (0, rows - len(idx))),
                np.pad(channels, (0, rows - len(idx)), constant_values=1),
                offsets,
                orig_sr=rate,
                wave_dtype=wave_dtype,
                mel_dtype=mel_dtype,
                **kernel_params,
            )
            if len(idx) == idx[-1] - idx[0] + 1:  # consecutive rows: slices, not gathers
                audio[idx[0] : idx[-1] + 1] = np.asarray(out_audio)[: len(idx)]
                mel[idx[0] : idx[-1] + 1] = np.asarray(out_mel)[: len(idx)]
            else:
                audio[idx] = np.asarray(out_audio)[: len(idx)]
                mel[idx] = np.asarray(out_mel)[: len(idx)]
            if peaks is not None:
                peaks[idx] = np.asarray(out_peak)[: len(idx)]
    return audio, mel


def _span(spans: Sequence[tuple[int, int] | None] | None, i: int, frames: int) -> tuple[int, int]:
    """Clip ``i``'s ``(start, total)`` in its source; a whole clip's is ``(0, frames)``."""
    span = None if spans is None else spans[i]
    return (0, frames) if span is None else (int(span[0]), int(span[1]))


def _samples(samples: np.ndarray) -> np.ndarray:
    """A clip as ``(frames, channels)`` float32, or int16 PCM left for the batch copy."""
    samples = np.asarray(samples)
    if samples.dtype != np.int16:
        samples = samples.astype(np.float32, copy=False)
    return samples[:, None] if samples.ndim == 1 else samples


def _kernel_statics(sample_rate: int, duration: float, params: Mapping[str, Any]) -> dict[str, Any]:
    """``_audio_kernel``'s static keyword arguments from ``audio_features``-style ones."""
    defaults = {
        "n_fft": 1024,
        "hop_length": 512,
        "n_mels": 80,
        "fmin": 0.0,
        "fmax": None,
        "mel_scale": "slaney",
        "mel_norm": "slaney",
        "normalize": False,
        "log": "db",
        "amin": 1e-10,
        "top_db": 80.0,
        "align": "start",
    }
    unknown = set(params) - set(defaults)
    if unknown:
        raise TypeError(f"unknown audio parameters: {sorted(unknown)}")
    merged = {**defaults, **params}
    # Static arguments key the compile cache: plain types, so numpy scalars do not recompile.
    for name in ("n_fft", "hop_length", "n_mels"):
        merged[name] = int(merged[name])
    for name in ("fmin", "amin"):
        merged[name] = float(merged[name])
    for name in ("fmax", "top_db"):
        merged[name] = None if merged[name] is None else float(merged[name])
    merged["normalize"] = bool(merged["normalize"])
    return {"sample_rate": int(sample_rate), "duration": float(duration), **merged}
