"""Modality configurations of the seed guide, as frozen, JSON-round-tripping dataclasses.

* :class:`ImageModalityConfig` (with :class:`ImageRepresentation`) for images;
* :class:`AudioModalityConfig` for audio;
* :class:`ModalityConfiguration` for anything described by a name, a type and free
  ``metadata``; text reads its tokenizer settings from ``metadata["text_params"]``, parsed and
  checked by :class:`TextParams`.

All are keyword-only, immutable (``dataclasses.replace`` makes variants), validated on
construction (:class:`~datakiln.errors.SpecError` names the field, the value and what is
allowed) and serialise with ``to_dict()`` / ``from_dict()`` over plain JSON types.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

from datakiln.errors import SpecError


class BaseModalityConfig:
    """Base of every modality configuration: JSON round-trip for frozen dataclasses.

    The seed guide uses this name only as a type annotation; any config object is accepted
    where it appears.
    """

    __slots__ = ()
    if TYPE_CHECKING:  # every subclass is a dataclass: what dataclasses.fields() looks for
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON types (enums by value, mappings as dicts)."""
        return {f.name: _thaw(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Rebuild a config from :meth:`to_dict` output.

        Raises:
            SpecError: ``data`` has a key that is not a field of the config.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SpecError(f"{cls.__name__} has no field(s) {unknown}; fields are {sorted(names)}")
        return cls(**data)


class ImageRepresentation(enum.Enum):
    """How an image's channels are laid out."""

    RGB = "rgb"
    RGBA = "rgba"
    GRAYSCALE = "grayscale"

    @property
    def channels(self) -> int:
        """Number of channels: 3, 4 or 1."""
        return {"rgb": 3, "rgba": 4, "grayscale": 1}[self.value]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ImageModalityConfig(BaseModalityConfig):
    """Images of a fixed size and channel layout.

    Attributes:
        representation: Channel layout; ``channels`` follows from it.
        height: Height in pixels (>= 1).
        width: Width in pixels (>= 1).
        normalize: Whether pixel values are floats in ``[0, 1]`` (``True``) or in
            ``[0, 255]`` (``False``).
    """

    representation: ImageRepresentation = ImageRepresentation.RGB
    height: int = 32
    width: int = 32
    normalize: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.representation, str):
            object.__setattr__(self, "representation", _enum(ImageRepresentation, self))
        if not isinstance(self.representation, ImageRepresentation):
            raise SpecError(
                f"ImageModalityConfig.representation must be an ImageRepresentation, "
                f"got {self.representation!r}"
            )
        _positive_int(self, "height")
        _positive_int(self, "width")

    @property
    def channels(self) -> int:
        """Channels per pixel of ``representation``."""
        return self.representation.channels

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(height, width, channels)`` of one image."""
        return (self.height, self.width, self.channels)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class AudioModalityConfig(BaseModalityConfig):
    """Mono waveforms of a fixed duration, and the spectrogram settings that go with them.

    Attributes:
        sample_rate: Samples per second (>= 1).
        duration: Clip length in seconds (> 0); ``n_samples = round(sample_rate * duration)``.
        n_mels: Mel bands of a spectrogram.
        hop_length: Samples between spectrogram frames.
        n_fft: FFT window of a spectrogram.
        normalize: Whether waveforms are peak-normalised to ``[-1, 1]``.
    """

    sample_rate: int = 16000
    duration: float = 1.0
    n_mels: int = 80
    hop_length: int = 512
    n_fft: int = 2048
    normalize: bool = True

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_mels", "hop_length", "n_fft"):
            _positive_int(self, name)
        if not (isinstance(self.duration, int | float) and math.isfinite(self.duration)):
            raise SpecError(f"AudioModalityConfig.duration must be a number, got {self.duration!r}")
        if self.duration <= 0 or self.n_samples < 1:
            raise SpecError(
                f"AudioModalityConfig.duration={self.duration} gives {self.n_samples} samples "
                f"at sample_rate={self.sample_rate}; it must give at least one"
            )

    @property
    def n_samples(self) -> int:
        """Samples per clip: ``round(sample_rate * duration)``."""
        return round(self.sample_rate * self.duration)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class TextParams:
    """Tokenizer settings of text data (``metadata["text_params"]`` of the seed guide).

    Token ids 0-3 are reserved by default (pad, unk, bos, eos); words hash into
    ``[4, vocab_size)`` (see :mod:`datakiln.datasets.tokenize`).
    """

    vocab_size: int = 10000
    max_length: int = 512
    pad_token_id: int = 0
    unk_token_id: int = 1
    bos_token_id: int = 2
    eos_token_id: int = 3
    case_sensitive: bool = False

    def __post_init__(self) -> None:
        _positive_int(self, "max_length")
        if not isinstance(self.vocab_size, int) or self.vocab_size < 5:
            raise SpecError(
                f"text_params.vocab_size must be an integer >= 5 (4 reserved ids and at least "
                f"one word id), got {self.vocab_size!r}"
            )
        for name in ("pad_token_id", "unk_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise SpecError(
                    f"text_params.{name} must be an integer in [0, {self.vocab_size}), "
                    f"got {value!r}"
                )

    @classmethod
    def from_config(cls, config: Any) -> TextParams:
        """Text parameters from a :class:`ModalityConfiguration`, a mapping, or ``None``.

        Raises:
            SpecError: An unknown or invalid parameter.
        """
        if config is None:
            return cls()
        if isinstance(config, TextParams):
            return config
        if isinstance(config, ModalityConfiguration):
            params = config.metadata.get("text_params", {})
        elif isinstance(config, Mapping):
            params = config.get("text_params", config)
        else:
            raise SpecError(
                "a text dataset needs a ModalityConfiguration with metadata['text_params'], "
                f"got {type(config).__name__}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise SpecError(f"unknown text_params {unknown}; allowed are {sorted(names)}")
        return cls(**dict(params))

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a plain dict (the ``text_params`` mapping)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ModalityConfiguration(BaseModalityConfig):
    """A modality described by name, type and free-form metadata.

    ``metadata`` is frozen on construction (read-only mappings, tuples for lists) so the config
    stays immutable; ``to_dict`` gives plain dicts and lists back.

    Attributes:
        name: Name of the modality (``"text"``).
        modality_type: Kind of data (``"text"``, ``"image"``, ``"audio"``, ...).
        metadata: Free-form settings; text reads ``metadata["text_params"]``.
    """

    name: str
    modality_type: str
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for field in ("name", "modality_type"):
            if not isinstance(getattr(self, field), str) or not getattr(self, field):
                raise SpecError(
                    f"ModalityConfiguration.{field} must be a non-empty string, "
                    f"got {getattr(self, field)!r}"
                )
        if not isinstance(self.metadata, Mapping):
            raise SpecError(
                f"ModalityConfiguration.metadata must be a mapping, got {self.metadata!r}"
            )
        object.__setattr__(self, "metadata", _freeze(self.metadata))
        if "text_params" in self.metadata:
            TextParams.from_config(self)  # validate early, where the mistake was made

    @property
    def text_params(self) -> TextParams:
        """``metadata["text_params"]`` parsed and checked (defaults where missing)."""
        return TextParams.from_config(self)


def _positive_int(config: Any, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{type(config).__name__}.{name} must be an integer >= 1, got {value!r}")


def _enum(kind: type[enum.Enum], config: Any) -> enum.Enum:
    value = config.representation
    try:
        return kind(value.lower())
    except ValueError:
        allowed = [member.value for member in kind]
        raise SpecError(
            f"{type(config).__name__}.representation={value!r} is not one of {allowed}"
        ) from None


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return types.MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_thaw(v) for v in value]
    return value
