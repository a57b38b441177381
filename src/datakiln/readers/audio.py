"""Audio sources: decode whatever libsndfile reads, through ``soundfile``, into float32 frames.

WAV (PCM 8/16/24/32-bit, float, double), FLAC, OGG/Vorbis and the other formats of
``soundfile.available_formats()`` decode to float32 in ``[-1, 1]`` (integer PCM is scaled by
libsndfile), any sample rate and channel count. What cannot be used raises ``AudioDecodeError``
with the ``stage`` it failed at, which the bake turns into a ``Rejection``:

* stage ``decode``: empty input, unknown or unsupported container, corrupt header, a body
  shorter than its header says (truncated download);
* stage ``validate``: no frames, a non-positive sample rate, NaN or infinite samples.

libsndfile reads a truncated WAV without complaint (it shortens the clip), so the RIFF ``data``
chunk size is checked against the bytes present, and for other formats the frames read against
the frames the header announces.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import struct
from collections.abc import Callable
from typing import IO, Any, Protocol, runtime_checkable

import numpy as np
import soundfile

from datakiln.errors import AudioDecodeError as AudioDecodeError  # its old home re-exports it
from datakiln.readers.rejections import (
    STAGE_DECODE,
    STAGE_VALIDATE,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class AudioInfo:
    """What the container says about a decoded clip (its Parquet metadata).

    Attributes:
        sample_rate: Frames per second.
        channels: Channels per frame.
        frames: Frames decoded.
        frames: The source's frames (a windowed decode returns fewer, see ``first_frame``).
        format: libsndfile container name (``"WAV"``, ``"FLAC"``, ``"OGG"``, ...).
        subtype: Sample encoding (``"PCM_16"``, ``"FLOAT"``, ``"VORBIS"``, ...).
        first_frame: The source frame that the decoded samples start at (0 unless a
            ``window`` asked for frames further in); not part of ``to_dict``.
    """

    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str
    first_frame: int = 0

    @property
    def duration_s(self) -> float:
        """Length of the clip in seconds."""
        return self.frames / self.sample_rate

    def to_dict(self) -> dict[str, Any]:
        """The info as plain JSON types, with ``duration_s``."""
        info = dataclasses.asdict(self)
        del info["first_frame"]  # where a decode began, not what the container says
        return {**info, "duration_s": self.duration_s}


@runtime_checkable
class FrameWindow(Protocol):
    """Which frames of a source a caller uses (``etl.kernels.audio.DecodeWindow`` is one).

    ``frames(sample_rate, total)`` gets the source's rate and frame count (from the header)
    and returns ``(start, stop)``: only frames ``[start, stop)`` are decoded. It must be
    deterministic; ``(0, total)`` means the whole source.
    """

    def frames(self, sample_rate: int, total: int) -> tuple[int, int]:
        """``(start, stop)`` frames wanted of a ``total``-frame source at ``sample_rate``."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class _Leading:
    """The window of the leading ``frames_needed(sample_rate)`` frames."""

    frames_needed: Callable[[int], int]

    def frames(self, sample_rate: int, total: int) -> tuple[int, int]:
        return 0, self.frames_needed(sample_rate)


def decode_audio(
    data: bytes | bytearray | memoryview | IO[bytes], *, uri: str | None = None
) -> tuple[np.ndarray, int, AudioInfo]:
    """Decode one audio file's bytes.

    Args:
        data: The whole file, as bytes or a binary file object (read to its end).
        uri: Names the input in error messages only.

    Returns:
        ``(samples, sample_rate, info)``: float32 ``(frames, channels)`` C-contiguous samples,
        the sample rate in Hz, and the container's ``AudioInfo``.

    Raises:
        AudioDecodeError: The input is empty, not audio, truncated, or holds no frames or
            non-finite samples; ``err.stage`` says which stage.
    """
    samples, rate, info = decode_audio_native(data, uri=uri)
    if samples.dtype == np.int16:
        samples = np.multiply(samples, np.float32(2.0**-15), dtype=np.float32)
    return samples, rate, info


def decode_audio_native(
    data: bytes | bytearray | memoryview | IO[bytes],
    *,
    uri: str | None = None,
    frames_needed: Callable[[int], int] | None = None,
    window: FrameWindow | None = None,
) -> tuple[np.ndarray, int, AudioInfo]:
    """``decode_audio``, except that a 16-bit PCM WAV comes back as its int16 samples.

    Those stand for ``value / 32768``; leaving the conversion to the consumer lets it convert
    only the frames it uses, straight into its own buffer (``featurize_audio`` does). Any
    other input comes back as float32, as from ``decode_audio``.

    ``window``, when given, says which frames the caller uses (from the rate and the frame
    count in the header): only those are decoded (a 3-hour FLAC cut to a 2-second clip
    decodes about 2 seconds, not 3 hours), and only they are checked for NaN;
    ``info.frames`` stays the file's length, ``info.first_frame`` is where the samples
    start, and the file's last frame is still read to catch a truncated body. A seekable
    binary file object is then read through, never whole: a 3-hour WAV costs its clip, not
    its size. A source that libsndfile cannot seek in is decoded whole (``first_frame`` 0).
    ``frames_needed(sample_rate)`` is the older form of a window of leading frames.
    """
    if window is None and frames_needed is not None:
        window = _Leading(frames_needed)
    if window is not None and not isinstance(data, bytes | bytearray | memoryview):
        head = data.read(_HEAD_BYTES)
        total = data.seek(0, io.SEEK_END)
        data.seek(0)
        if not total:
            raise AudioDecodeError(
                "empty input (0 bytes), not an audio file", stage=STAGE_DECODE, uri=uri
            )
        return _decode_with_soundfile(data, head, total, uri=uri, window=window)
    raw = bytes(data) if isinstance(data, bytes | bytearray | memoryview) else data.read()
    if not raw:
        raise AudioDecodeError(
            "empty input (0 bytes), not an audio file", stage=STAGE_DECODE, uri=uri
        )
    plain = _plain_pcm16_wav(raw)
    if plain is not None:
        pcm, info = plain
        start, stop = _wanted(window, info.sample_rate, info.frames)
        if (start, stop) != (0, info.frames):  # a view of the window: nothing is copied
            pcm, info = pcm[start:stop], dataclasses.replace(info, first_frame=start)
        return pcm, info.sample_rate, info
    return _decode_with_soundfile(
        io.BytesIO(raw), raw[:_HEAD_BYTES], len(raw), uri=uri, window=window
    )


# What is read of a streamed file before decoding: enough for any RIFF header's chunk list.
_HEAD_BYTES = 1 << 16


def _decode_with_soundfile(
    source: IO[bytes],
    head: bytes,
    total: int,
    *,
    uri: str | None,
    window: FrameWindow | None,
) -> tuple[np.ndarray, int, AudioInfo]:
    """Libsndfile's decode of ``source`` (``total`` bytes, starting with ``head``)."""
    try:
        with soundfile.SoundFile(source) as f:
            announced = f.frames
            # Everything (soundfile reads to the end only where it can seek; elsewhere the
            # header's count), unless a window asks for less and the source can seek there.
            start, wanted = 0, -1 if f.seekable() else max(0, announced)
            lead = 0  # frames decoded before the window and dropped (a lossy decoder's preroll)
            if window is not None and f.seekable() and f.samplerate > 0:
                start, stop = _wanted(window, int(f.samplerate), announced)
                if (start, stop) != (0, announced):
                    wanted = stop - start
                    if start:
                        lead = min(start, _PREROLL_FRAMES.get(str(f.subtype), 0))
                        _seek(f, start - lead, announced, uri)
            count = wanted + lead if wanted > 0 else wanted
            native = _INTEGER_READS.get(f.subtype)
            if native is None:
                samples = f.read(count, dtype="float32", always_2d=True)
            else:
                # libsndfile's own int -> float conversion is about half of a PCM decode; the
                # same power-of-two scaling in numpy gives identical values in half the time.
                dtype, scale = native
                samples = np.multiply(
                    f.read(count, dtype=dtype, always_2d=True), np.float32(scale), dtype=np.float32
                )
            samples = samples[lead:]
            frames = start + int(samples.shape[0])
            if wanted > 0 and frames == start + wanted < announced:
                frames = announced if _last_frame_present(f, source, announced) else frames
            info = AudioInfo(
                sample_rate=int(f.samplerate),
                channels=int(f.channels),
                frames=frames,
                format=str(f.format),
                subtype=str(f.subtype),
                first_frame=start,
            )
    except (soundfile.SoundFileError, RuntimeError) as err:
        raise AudioDecodeError(
            f"not decodable by libsndfile ({type(err).__name__}: {err}); it reads WAV, FLAC, "
            "OGG/Vorbis, AIFF and the rest of soundfile.available_formats()",
            stage=STAGE_DECODE,
            uri=uri,
        ) from err
    missing = _riff_missing_bytes(head, total) if info.format in ("WAV", "WAVEX") else 0
    if missing > 0 or info.frames < announced:
        raise AudioDecodeError(
            f"truncated {info.format}: the header announces more than is there "
            f"({missing} bytes / {announced - info.frames} frames missing); re-fetch the file",
            stage=STAGE_DECODE,
            uri=uri,
        )
    if info.sample_rate <= 0:
        raise AudioDecodeError(
            f"invalid sample rate {info.sample_rate} Hz", stage=STAGE_VALIDATE, uri=uri
        )
    if info.frames == 0:
        raise AudioDecodeError(
            f"no audio frames in this {info.format} file", stage=STAGE_VALIDATE, uri=uri
        )
    finite = np.isfinite(samples) if native is None else None  # integers are finite
    if finite is not None and not np.all(finite):
        first = info.first_frame + int(np.argmin(finite.all(axis=1)))
        raise AudioDecodeError(
            f"{int(finite.size - np.count_nonzero(finite))} NaN or infinite samples (first at "
            f"frame {first}); such clips cannot be normalised or turned into spectrograms",
            stage=STAGE_VALIDATE,
            uri=uri,
        )
    return np.ascontiguousarray(samples), info.sample_rate, info


def _wanted(window: FrameWindow | None, sample_rate: int, total: int) -> tuple[int, int]:
    """The window's ``(start, stop)`` within ``[0, total)``, at least one frame long."""
    if window is None or total < 1:
        return 0, total
    start, stop = window.frames(sample_rate, total)
    start = min(max(0, int(start)), total - 1)
    return start, min(total, max(start + 1, int(stop)))


def _seek(f: soundfile.SoundFile, start: int, announced: int, uri: str | None) -> None:
    """Seek to a window's first frame; failing there means the body ends before it."""
    try:
        f.seek(start)
    except (soundfile.SoundFileError, RuntimeError) as err:
        raise AudioDecodeError(
            f"truncated {f.format}: frame {start} of the {announced} the header announces "
            f"cannot be reached ({type(err).__name__}: {err}); re-fetch the file",
            stage=STAGE_DECODE,
            uri=uri,
        ) from err


def _last_frame_present(f: soundfile.SoundFile, source: IO[bytes], announced: int) -> bool:
    """Whether the frame the header announces last can be decoded (else: truncated).

    libsndfile's Vorbis seek, after a read from the middle of a file, can land a page short
    of a frame near the end and then read nothing (a 6-second stereo OGG: ``seek(264603)``
    answered 263680); a fresh handle on the same source seeks there exactly, so a miss is
    asked again of one before the file counts as truncated.
    """
    if _reads_frame(f, announced - 1):
        return True
    try:
        source.seek(0)
        with soundfile.SoundFile(source) as fresh:
            return _reads_frame(fresh, announced - 1)
    except (soundfile.SoundFileError, RuntimeError, OSError):
        return False


def _reads_frame(f: soundfile.SoundFile, frame: int) -> bool:
    try:
        return bool(f.seek(frame) == frame and f.read(1, dtype="int16").shape[0] == 1)
    except (soundfile.SoundFileError, RuntimeError):
        return False


# Frames a lossy decoder is started before a window and then dropped: after a seek, MP3's
# decoder lacks the bit reservoir of the frames before (a 22.05 kHz MP3 differed by 0.027
# over a window's first frames); four of its 1,152-sample frames cover the reservoir.
_PREROLL_FRAMES = {
    "MPEG_LAYER_I": 4 * 1152,
    "MPEG_LAYER_II": 4 * 1152,
    "MPEG_LAYER_III": 4 * 1152,
    "VORBIS": 4096,
    "OPUS": 4096,
}


# Integer PCM subtypes read as integers and scaled to [-1, 1) in numpy: (dtype, scale).
# libsndfile widens 8-bit samples to int16 and 24-bit ones to int32 (shifted left).
_INTEGER_READS = {
    "PCM_S8": ("int16", 2.0**-15),
    "PCM_U8": ("int16", 2.0**-15),
    "PCM_16": ("int16", 2.0**-15),
    "PCM_24": ("int32", 2.0**-31),
    "PCM_32": ("int32", 2.0**-31),
}


# KSDATAFORMAT_SUBTYPE_PCM, the sub-format GUID of a WAVE_FORMAT_EXTENSIBLE PCM file.
_PCM_SUBFORMAT = bytes.fromhex("0100000000001000800000aa00389b71")


def _plain_pcm16_wav(raw: bytes) -> tuple[np.ndarray, AudioInfo] | None:
    """The int16 ``(frames, channels)`` samples of a complete 16-bit PCM WAV, else None.

    The most common training-audio file is parsed here directly: libsndfile spends ~0.1 ms a
    clip on opening and converting it, a view of the ``data`` chunk costs nothing. Only
    little-endian RIFF files with a PCM (or extensible PCM) ``fmt`` chunk of 16-bit samples
    and a ``data`` chunk that is all there qualify; anything else (other encodings, RIFX, RF64,
    truncated or streamed files, no frames) returns None and goes through libsndfile, which
    also gives the error messages.
    """
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        return None
    pos, fmt = 12, None
    while pos + 8 <= len(raw):
        chunk_id = raw[pos : pos + 4]
        size = int.from_bytes(raw[pos + 4 : pos + 8], "little")
        body = pos + 8
        if body + size > len(raw):
            return None
        if chunk_id == b"fmt ":
            if size < 16:
                return None
            tag, channels, rate, _, align, bits = struct.unpack_from("<HHIIHH", raw, body)
            container = {1: "WAV", 0xFFFE: "WAVEX"}.get(tag)
            if container == "WAVEX" and (
                size < 40
                or raw[body + 24 : body + 40] != _PCM_SUBFORMAT
                or int.from_bytes(raw[body + 18 : body + 20], "little") != 16
            ):
                return None
            if container is None or bits != 16 or channels < 1 or rate < 1:
                return None
            if align != 2 * channels:
                return None
            fmt = (channels, rate, container)
        elif chunk_id == b"data":
            if fmt is None or size // (2 * fmt[0]) == 0:
                return None
            channels, rate, container = fmt
            frames = size // (2 * channels)
            samples = np.frombuffer(raw, "<i2", frames * channels, body)
            info = AudioInfo(
                sample_rate=rate,
                channels=channels,
                frames=frames,
                format=container,
                subtype="PCM_16",
            )
            return samples.reshape(frames, channels), info
        pos = body + size + (size & 1)
    return None


def _riff_missing_bytes(raw: bytes, total: int | None = None) -> int:
    """How many bytes of a RIFF/WAVE ``data`` chunk are absent (0 if complete or unknown).

    ``raw`` is the file or its head; ``total`` the file's size when ``raw`` is only its head.
    """
    total = len(raw) if total is None else total
    if len(raw) < 12 or raw[:4] not in (b"RIFF", b"RIFX") or raw[8:12] != b"WAVE":
        return 0
    fmt = "<I" if raw[:4] == b"RIFF" else ">I"
    pos = 12
    while pos + 8 <= len(raw):
        chunk_id = raw[pos : pos + 4]
        size = int(struct.unpack(fmt, raw[pos + 4 : pos + 8])[0])
        if chunk_id == b"data":
            if size == 0xFFFFFFFF:  # streamed WAV of unknown length
                return 0
            return max(0, size - (total - pos - 8))
        pos += 8 + size + (size & 1)
    return 0
