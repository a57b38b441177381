"""Per-field compression of a field's inner chunks (one sample each), as Zarr v3 codecs.

A sharded field stores each sample as one inner chunk of its shard objects. ``none`` keeps the
raw bytes (the memory-mapped fast path reads those); the other codecs compress each inner
chunk on its own, so a random batch still decodes only the samples it asks for:

* ``zstd``: Zarr v3's ``zstd`` codec (level 3) after ``bytes``;
* ``blosc-lz4``: Zarr v3's ``blosc`` codec (lz4, level 5, byte shuffle) after ``bytes``;
* ``png`` (lossless) and ``jpeg`` (``quality``): the array-to-bytes codecs
  ``imagecodecs_png`` and ``imagecodecs_jpeg``, named and configured as the ``imagecodecs``
  package names its own Zarr 3 codecs, so a reader with ``imagecodecs-zarr`` resolves them
  without datakiln. datakiln carries its own implementation of the two (below) because that
  package needs a newer Python than datakiln; importing this module registers them with
  zarr, and datakiln's ``zarr.codecs`` entry points make zarr find them on its own.

Every codec here decodes with the GIL released (imagecodecs' C code), straight into the
caller's buffer, so a thread pool decodes a batch in parallel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import imagecodecs
import numpy as np
import zarr
from numpy.typing import NDArray
from zarr.abc.codec import ArrayBytesCodec

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer

CODECS = ("none", "zstd", "blosc-lz4", "png", "jpeg")
# Codecs that read an inner chunk as an image: samples must be (H, W, C) uint8.
IMAGE_CODECS = ("png", "jpeg")
ZSTD_LEVEL = 3
BLOSC_LEVEL = 5
PNG_LEVEL = 1  # zlib level: higher levels cost much more time for a few percent of disk


# imagecodecs' stubs are narrower than its C code: that takes any contiguous buffer (numpy
# arrays included) as input and as ``out``, an encoder given no ``out`` returns ``bytes`` (the
# stubs say ``bytes | bytearray``), and a decoder returns the ``out`` array it filled. These
# two Protocols state the calls made here; each imagecodecs function is cast to one at its call.
class _Encoder(Protocol):
    def __call__(self, data: NDArray[Any], /, *, level: int | None, **options: Any) -> bytes: ...


class _DecoderInto(Protocol):
    def __call__(self, data: Any, /, *, out: NDArray[Any]) -> NDArray[Any]: ...


@dataclass(frozen=True)
class _ImageChunkCodec(ArrayBytesCodec):
    """An inner chunk of shape ``(1, H, W, C)`` (or ``(H, W, C)``) stored as one image file."""

    is_fixed_size = False
    level: int | None = None
    _NAME = ""

    def __init__(self, *, level: int | None = None) -> None:
        object.__setattr__(self, "level", None if level is None else int(level))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        config = dict(data.get("configuration") or {})
        return cls(level=config.get("level"))

    def to_dict(self) -> dict[str, Any]:
        if self.level is None:
            return {"name": self._NAME}
        return {"name": self._NAME, "configuration": {"level": self.level}}

    def _encode_array(self, image: np.ndarray) -> bytes:
        raise NotImplementedError

    def _decode_array(self, data: Any, out: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        def decode() -> NDBuffer:
            image = self._decode_array(chunk_bytes.as_numpy_array(), None)
            return chunk_spec.prototype.nd_buffer.from_numpy_array(image.reshape(chunk_spec.shape))

        return await asyncio.to_thread(decode)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer:
        def encode() -> Buffer:
            array = chunk_array.as_numpy_array()
            data = self._encode_array(_as_image(array.reshape(array.shape[-3:])))
            return chunk_spec.prototype.buffer.from_bytes(data)

        return await asyncio.to_thread(encode)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError  # variable: the shard index records each chunk's size


@dataclass(frozen=True)
class ImagecodecsJpeg(_ImageChunkCodec):
    """``imagecodecs_jpeg``: baseline JPEG of quality ``level`` (libjpeg-turbo)."""

    _NAME = "imagecodecs_jpeg"

    def _encode_array(self, image: np.ndarray) -> bytes:
        return cast("_Encoder", imagecodecs.jpeg8_encode)(image, level=self.level)

    def _decode_array(self, data: Any, out: np.ndarray | None) -> np.ndarray:
        return imagecodecs.jpeg8_decode(data, out=out)


@dataclass(frozen=True)
class ImagecodecsPng(_ImageChunkCodec):
    """``imagecodecs_png``: lossless PNG at zlib level ``level``."""

    _NAME = "imagecodecs_png"

    def _encode_array(self, image: np.ndarray) -> bytes:
        return cast("_Encoder", imagecodecs.png_encode)(image, level=self.level)

    def _decode_array(self, data: Any, out: np.ndarray | None) -> np.ndarray:
        return imagecodecs.png_decode(data, out=out)


def _as_image(sample: np.ndarray) -> np.ndarray:
    """A ``(H, W, C)`` sample as the contiguous array an image encoder takes (2-D for C=1)."""
    if sample.ndim == 3 and sample.shape[-1] == 1:
        sample = sample[..., 0]
    return np.ascontiguousarray(sample)


def register_zarr_codecs() -> None:
    """Make zarr resolve ``imagecodecs_jpeg``/``imagecodecs_png`` (idempotent)."""
    for cls in (ImagecodecsJpeg, ImagecodecsPng):
        zarr.registry.register_codec(cls._NAME, cls)


register_zarr_codecs()


@dataclass(frozen=True, slots=True)
class ChunkCodec:
    """How one field's inner chunks are compressed; ``quality`` matters for ``jpeg`` only."""

    name: str = "none"
    quality: int = 90

    def __post_init__(self) -> None:
        if self.name not in CODECS:
            raise ValueError(f"unknown codec {self.name!r}; known: {', '.join(CODECS)}")

    @property
    def compressed(self) -> bool:
        return self.name != "none"

    def check_layout(self, dtype: str, sample_shape: Sequence[int]) -> str | None:
        """Why this codec cannot store samples of ``dtype`` and ``sample_shape`` (None: it can)."""
        if self.name not in IMAGE_CODECS:
            return None
        if dtype != "uint8" or len(sample_shape) != 3:
            return f"{self.name} stores uint8 (height, width, channels) images only"
        allowed = (1, 3) if self.name == "jpeg" else (1, 2, 3, 4)
        if sample_shape[2] not in allowed:
            return f"{self.name} cannot store {sample_shape[2]} channels (only {allowed})"
        return None

    def zarr_codecs(self) -> tuple[Any, Any]:
        """``(serializer, compressors)`` for ``zarr.create_array`` of the inner chunks."""
        from zarr.codecs import BloscCodec, ZstdCodec

        if self.name == "zstd":
            return "auto", (ZstdCodec(level=ZSTD_LEVEL),)
        if self.name == "blosc-lz4":
            return "auto", (
                BloscCodec(typesize=1, cname="lz4", clevel=BLOSC_LEVEL, shuffle="shuffle"),
            )
        if self.name == "png":
            return ImagecodecsPng(level=PNG_LEVEL), None
        if self.name == "jpeg":
            return ImagecodecsJpeg(level=self.quality), None
        return "auto", None

    @classmethod
    def from_inner(cls, inner: Sequence[Mapping[str, Any]]) -> ChunkCodec | None:
        """The codec whose inner codec chain (``zarr.json``) is ``inner``; None if not ours."""
        names = [c.get("name") for c in inner]
        conf = [c.get("configuration") or {} for c in inner]
        little = names[:1] == ["bytes"] and conf[0].get("endian", "little") == "little"
        if names == ["bytes"]:
            return cls("none")
        if little and names[1:] == ["zstd"] and not conf[1].get("checksum", False):
            return cls("zstd")
        if little and names[1:] == ["blosc"] and conf[1].get("cname") == "lz4":
            return cls("blosc-lz4")
        if names == ["imagecodecs_png"]:
            return cls("png")
        if names == ["imagecodecs_jpeg"]:
            return cls("jpeg", int(conf[0].get("level") or 75))  # libjpeg's default quality
        return None

    def encode(self, sample: np.ndarray) -> bytes:
        """One sample's inner chunk, byte for byte what zarr-python writes for it."""
        if self.name == "zstd":
            zstd = cast("_Encoder", imagecodecs.zstd_encode)
            return zstd(np.ascontiguousarray(sample), level=ZSTD_LEVEL)
        if self.name == "blosc-lz4":
            return cast("_Encoder", imagecodecs.blosc_encode)(
                np.ascontiguousarray(sample),
                level=BLOSC_LEVEL,
                compressor="lz4",
                shuffle=imagecodecs.BLOSC.SHUFFLE.SHUFFLE,
                typesize=1,
                numthreads=1,
            )
        if self.name == "png":
            return ImagecodecsPng(level=PNG_LEVEL)._encode_array(_as_image(sample))
        if self.name == "jpeg":
            return ImagecodecsJpeg(level=self.quality)._encode_array(_as_image(sample))
        return np.ascontiguousarray(sample).tobytes()

    def decode_into(self, data: Any, out: np.ndarray) -> None:
        """Decode one inner chunk into ``out`` (one sample, C-contiguous); releases the GIL.

        Raises ``ValueError`` when ``data`` does not decode to exactly ``out``'s bytes.
        """
        try:
            if self.name in ("zstd", "blosc-lz4"):
                flat = out.reshape(-1).view(np.uint8)
                decode_bytes = (
                    cast("_DecoderInto", imagecodecs.zstd_decode)
                    if self.name == "zstd"
                    else _blosc_decode
                )
                got = decode_bytes(data, out=flat)
                if got.nbytes != flat.nbytes:
                    raise ValueError(f"{got.nbytes} bytes, not {flat.nbytes}")
            elif self.name in IMAGE_CODECS:
                target = out.reshape(out.shape[:-1]) if out.shape[-1] == 1 else out
                decode_image = (
                    imagecodecs.jpeg8_decode if self.name == "jpeg" else imagecodecs.png_decode
                )
                got = decode_image(data, out=target)
                if got.shape != target.shape:
                    raise ValueError(f"an image of {got.shape}, not {target.shape}")
            else:
                out.reshape(-1).view(np.uint8)[:] = np.frombuffer(data, np.uint8)
        except Exception as err:  # imagecodecs raises its own error class per codec
            raise ValueError(f"{self.name} chunk does not decode: {err}") from err


def _blosc_decode(data: Any, /, *, out: NDArray[Any]) -> NDArray[Any]:
    decode = cast("Callable[..., NDArray[Any]]", imagecodecs.blosc_decode)  # see _Encoder
    return decode(data, numthreads=1, out=out)
