"""The bake spec: what to read, how to preprocess it, where to write it.

A ``BakeSpec`` is frozen data. It round-trips through plain JSON/TOML dicts
(``to_dict``/``from_dict``), never through pickle, and the part of it that decides what
the cache holds (``key_dict``) feeds the cache key.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from datakiln.errors import SpecError

# Re-exported (``as``): the CLI's choices come from here.
from datakiln.etl.kernels.text import TOKENIZERS as TOKENIZERS
from datakiln.readers.image import DEFAULT_MAX_PIXELS
from datakiln.readers.image import FITS as FITS
from datakiln.readers.image import REPRESENTATIONS as CHANNELS
from datakiln.readers.text import ERROR_POLICIES
from datakiln.readers.text import TEXT_FORMATS as LINE_TEXT_FORMATS

# Each constant below has its home here; those above are the readers' and kernels' own.
REPRESENTATIONS = tuple(CHANNELS)
TEXT_ERRORS = ERROR_POLICIES
LABEL_SOURCES = (None, "parent")
MODALITIES = ("image", "text", "audio", "records")
# Samples per bake shard when the spec names none: short text lines are cheap per sample, so
# text shards are large enough that per-shard costs (writes, markers) stay small.
DEFAULT_SHARD_SIZES = {"image": 1024, "text": 16384, "audio": 1024, "records": 1024}
# None: inferred from each file's ending
TEXT_FORMATS = (None, *LINE_TEXT_FORMATS)
MEL_SCALES = ("slaney", "htk")
MEL_NORMS = ("slaney", None)
MEL_DTYPES = ("float16", "float32")
WAVE_DTYPES = ("int16", "float16", "float32")
ALIGNS = ("start", "center")
# Local Dask schedulers a spec may name; anything else must be a distributed address.
LOCAL_SCHEDULERS = ("auto", "threads", "processes", "synchronous")
# How stored images are compressed (datakiln.cache.chunk_codecs.CODECS, without importing it);
# "auto" picks by the stored image size, see ImageParams.stored_codec.
IMAGE_CODECS = ("auto", "none", "zstd", "blosc-lz4", "png", "jpeg")
# "auto" stores images of at least this many bytes (128 x 128 RGB) compressed: below it raw
# pixels cost little disk and the memory-mapped reader beats decoding (BENCHMARKS.md, issue 19).
AUTO_COMPRESS_MIN_BYTES = 128 * 128 * 3


def _check_choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise SpecError(f"{name} must be one of {shown}; got {value!r}")


def _check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpecError(f"{name} must be a positive integer; got {value!r}")


def _reject_unknown(section: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(allowed)}"
            raise SpecError(f"unknown field {key!r} in {section}{hint}")


@dataclass(frozen=True, kw_only=True)
class ImageParams:
    """How images are preprocessed; follows the seed's ``ImageModalityConfig``.

    ``normalize`` picks the read-time range: ``True`` gives [0, 1], ``False`` gives [-1, 1].
    Pixels are stored as uint8 either way, each image compressed by ``codec``: ``"none"``
    (raw, memory-mapped when read), ``"zstd"``, ``"blosc-lz4"``, ``"png"`` (all lossless) or
    ``"jpeg"`` at ``quality`` (1-100, default 90), decoded when read. ``"auto"`` (the
    default) is ``"none"`` for images under ``AUTO_COMPRESS_MIN_BYTES`` (128 x 128 RGB) and
    ``"jpeg"`` (``"png"`` for rgba) from there on: see :attr:`stored_codec`.
    """

    representation: str = "rgb"
    height: int = 64
    width: int = 64
    normalize: bool = True
    fit: str = "stretch"
    labels: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    codec: str = "auto"
    quality: int = 90

    def __post_init__(self) -> None:
        _check_choice("image.codec", self.codec, IMAGE_CODECS)
        if (
            not isinstance(self.quality, int)
            or isinstance(self.quality, bool)
            or not 1 <= self.quality <= 100
        ):
            raise SpecError(f"image.quality must be an integer in 1..100; got {self.quality!r}")
        if self.codec == "jpeg" and self.representation == "rgba":
            raise SpecError("image.codec 'jpeg' has no alpha channel; use 'png' for rgba images")
        _check_choice("image.representation", self.representation, REPRESENTATIONS)
        _check_choice("image.fit", self.fit, FITS)
        _check_choice("image.labels", self.labels, LABEL_SOURCES)
        _check_positive("image.height", self.height)
        _check_positive("image.width", self.width)
        _check_positive("image.max_pixels", self.max_pixels)
        if not isinstance(self.normalize, bool):
            raise SpecError(f"image.normalize must be true or false; got {self.normalize!r}")

    @property
    def channels(self) -> int:
        return CHANNELS[self.representation]

    @property
    def stored_codec(self) -> str:
        """The codec the pixels are stored with (``codec``, with ``"auto"`` decided)."""
        if self.codec != "auto":
            return self.codec
        if self.height * self.width * self.channels < AUTO_COMPRESS_MIN_BYTES:
            return "none"
        return "png" if self.representation == "rgba" else "jpeg"

    def to_dict(self) -> dict[str, Any]:
        # The codec as stored, and the quality only where it decides the bytes; "none" is
        # left out, so the keys of caches baked before codecs existed stay as they were.
        data = dataclasses.asdict(self)
        data["codec"] = self.stored_codec
        if data["codec"] == "none":
            del data["codec"]
        if data.get("codec") != "jpeg":
            del data["quality"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageParams:
        _reject_unknown("[image]", data, [f.name for f in dataclasses.fields(cls)])
        values = dict(data)
        if "size" in values:  # not a field; accepted for symmetry with --size
            raise SpecError("use image.height and image.width (the flag --size sets both)")
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class _Params:
    """Shared plumbing of the per-modality parameter tables."""

    SECTION: ClassVar[str]  # the table's name in a spec file

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        section = f"[{cls.SECTION}]"
        _reject_unknown(section, data, [f.name for f in dataclasses.fields(cls)])
        return cls(**dict(data))


@dataclass(frozen=True, kw_only=True)
class TextBakeParams(_Params):
    """How text is read and tokenized; the token parameters follow the seed's text_params.

    ``format`` is inferred from the file extension when ``None``; ``field`` names the JSON
    key or CSV/Parquet column; ``one_per_file`` makes each .txt file one sample.
    ``encoding`` is a Python codec name, or ``"auto"`` to detect each file's codec when planned.
    ``tokenizer`` is ``word_hash`` (the seed's scheme with a stable FNV-1a hash) or ``byte``.
    ``target_bytes`` is the size of the byte ranges a large file is cut into.
    """

    SECTION = "text"
    format: str | None = None
    field: str | None = None
    one_per_file: bool = False
    encoding: str = "utf-8"
    errors: str = "reject"
    tokenizer: str = "word_hash"
    vocab_size: int = 10000
    max_length: int = 512
    pad_token_id: int = 0
    unk_token_id: int = 1
    bos_token_id: int = 2
    eos_token_id: int = 3
    case_sensitive: bool = False
    target_bytes: int = 64 * 2**20

    def __post_init__(self) -> None:
        _check_choice("text.format", self.format, TEXT_FORMATS)
        _check_choice("text.tokenizer", self.tokenizer, TOKENIZERS)
        _check_choice("text.errors", self.errors, TEXT_ERRORS)
        for name in ("vocab_size", "max_length", "target_bytes"):
            _check_positive(f"text.{name}", getattr(self, name))
        if self.format in ("jsonl", "csv", "tsv", "parquet") and not self.field:
            raise SpecError(f"text.field must name the {self.format} field that holds the text")
        if self.tokenizer == "byte" and self.vocab_size < 260:
            raise SpecError(
                f"text.vocab_size must be >= 260 for the byte tokenizer; got {self.vocab_size}"
            )
        ids = [self.pad_token_id, self.unk_token_id, self.bos_token_id, self.eos_token_id]
        if any(not 0 <= i < 4 for i in ids) or len(set(ids)) != 4:
            raise SpecError(f"text special token ids must be 0..3 and distinct; got {ids}")
        if self.max_length < 2:
            raise SpecError("text.max_length must leave room for BOS and EOS (>= 2)")


@dataclass(frozen=True, kw_only=True)
class AudioParams(_Params):
    """How audio is resampled and featurized; follows the seed's AudioModalityConfig.

    Every clip is mixed to mono, resampled to ``sample_rate`` (Kaiser-windowed sinc), cut or
    zero-padded to ``duration`` seconds (``align="start"`` keeps the beginning, ``"center"``
    the middle), peak-normalised when ``normalize`` (default on), and turned into a log-mel
    spectrogram: periodic Hann window of ``n_fft`` (default 1024), ``hop_length`` (default
    512), centred frames with zero padding, ``n_mels`` (default 80) filters between ``fmin``
    (default 0) and ``fmax`` (default Nyquist) on the ``mel_scale`` (``"slaney"``, default, or
    ``"htk"``) with ``mel_norm`` (``"slaney"`` area normalisation, default, or none), then
    ``10 * log10(max(power, 1e-10))`` clipped to ``top_db`` (default 80; unset keeps all)
    below the clip's peak: librosa's ``melspectrogram`` + ``power_to_db(ref=1.0)``.

    Both are stored compactly and read back as float32. The waveform as ``wave_dtype``:
    ``"int16"`` (default) is 16-bit PCM, ``round(x * 32767)`` with ``x`` clipped to
    ``[-1, 1]``: a step of 3e-5 (-90 dBFS), the resolution of the usual 16-bit sources, at
    half the bytes of float32; peak-normalised clips never clip, and clips that did are
    counted in the manifest's ``clipped``. ``"float16"`` (no clipping, 2**-11 relative) and
    ``"float32"`` are the alternatives. The mel as ``mel_dtype`` (float16 by default: dB
    values below 128 in magnitude keep a resolution of 1/16 dB or better, about 2**-11
    relative, and it halves the field).
    """

    SECTION = "audio"
    sample_rate: int = 16000
    duration: float = 1.0
    n_mels: int = 80
    hop_length: int = 512
    n_fft: int = 1024
    fmin: float = 0.0
    fmax: float | None = None
    mel_scale: str = "slaney"
    mel_norm: str | None = "slaney"
    normalize: bool = True
    top_db: float | None = 80.0
    mel_dtype: str = "float16"
    wave_dtype: str = "int16"
    align: str = "start"

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_mels", "hop_length", "n_fft"):
            _check_positive(f"audio.{name}", getattr(self, name))
        _check_choice("audio.align", self.align, ALIGNS)
        if not isinstance(self.normalize, bool):
            raise SpecError(f"audio.normalize must be true or false; got {self.normalize!r}")
        if self.top_db is not None and not (
            isinstance(self.top_db, int | float) and self.top_db >= 0
        ):
            raise SpecError(
                f"audio.top_db must be a non-negative number of dB or unset; got {self.top_db!r}"
            )
        if not isinstance(self.fmin, int | float) or not 0 <= self.fmin < self.sample_rate / 2:
            raise SpecError(f"audio.fmin must be in [0, {self.sample_rate / 2}); got {self.fmin!r}")
        if not isinstance(self.duration, int | float) or self.duration <= 0:
            raise SpecError(
                f"audio.duration must be a positive number of seconds; got {self.duration!r}"
            )
        _check_choice("audio.mel_scale", self.mel_scale, MEL_SCALES)
        _check_choice("audio.mel_norm", self.mel_norm, MEL_NORMS)
        _check_choice("audio.mel_dtype", self.mel_dtype, MEL_DTYPES)
        _check_choice("audio.wave_dtype", self.wave_dtype, WAVE_DTYPES)
        nyquist = self.sample_rate / 2
        if self.fmax is not None and not self.fmin < self.fmax <= nyquist:
            raise SpecError(f"audio.fmax must be in (fmin, {nyquist}]; got {self.fmax}")

    @property
    def samples(self) -> int:
        return round(self.sample_rate * self.duration)

    @property
    def frames(self) -> int:
        """Mel frames per clip (centred STFT frames, as librosa counts them)."""
        return 1 + self.samples // self.hop_length


# Text parameters that belong to reading line files, not to a record's text field.
_LINE_TEXT_ONLY = ("format", "field", "one_per_file", "target_bytes")


@dataclass(frozen=True, kw_only=True)
class FieldSpec:
    """One field of a record: where it is, and how its modality's codec preprocesses it.

    Where: which column (or archive member extension) holds it.

    ``column`` defaults to the field's name. Alternatives are separated by ``;`` (the first
    present wins: ``"jpg;png;webp"``), and ``"json.caption"`` reads the key ``caption`` of a
    JSON member or struct column. A record whose required field is missing, empty or
    undecodable is rejected whole; a field with ``required = false`` gets a per-row validity
    mask ``<name>_valid`` instead. ``params`` is the codec's parameter table (``ImageParams``
    for images, ``TextBakeParams`` for text, ``AudioParams`` for audio, ...).
    """

    name: str
    modality: str
    column: str | None = None
    required: bool = True
    params: Any = None

    def __post_init__(self) -> None:
        from datakiln.etl.fields import get_codec

        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise SpecError(f"field names must be identifiers; got {self.name!r}")
        codec = get_codec(self.modality)
        if self.column is None:
            object.__setattr__(self, "column", self.name)
        if not isinstance(self.column, str) or not self.column.strip(";"):
            raise SpecError(f"fields.{self.name}.column must name a column; got {self.column!r}")
        if not isinstance(self.required, bool):
            raise SpecError(f"fields.{self.name}.required must be true or false")
        kind = codec.params_type
        if kind is None:
            if self.params:
                raise SpecError(f"fields.{self.name}: a {self.modality} field takes no parameters")
        elif self.params is None or isinstance(self.params, Mapping):
            object.__setattr__(
                self, "params", _field_params(self.name, kind, dict(self.params or {}))
            )
        elif not isinstance(self.params, kind):
            raise SpecError(
                f"fields.{self.name}.params must be {_class_name(kind, self.params)} or a "
                f"table; got {_class_name(type(self.params), kind)}"
            )
        if self.modality == "image" and self.params.labels is not None:
            raise SpecError(
                f"fields.{self.name}: labels of records come from a label field, not image.labels"
            )

    @functools.cached_property
    def columns(self) -> tuple[str, ...]:
        """The alternatives of ``column``, in order (looked up once per record in a bake)."""
        return tuple(c.strip() for c in str(self.column).split(";") if c.strip())

    def to_dict(self) -> dict[str, Any]:
        params = self.params.to_dict() if self.params is not None else {}
        if self.modality == "text":
            params = {k: v for k, v in params.items() if k not in _LINE_TEXT_ONLY}
        if self.modality == "image":
            params.pop("labels", None)
        return {
            "modality": self.modality,
            "column": self.column,
            "required": self.required,
            **params,
        }

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> FieldSpec:
        if not isinstance(data, Mapping):
            raise SpecError(f"[fields.{name}] must be a table")
        values = dict(data)
        if "modality" not in values:
            from datakiln.etl.fields import known_modalities

            raise SpecError(
                f"[fields.{name}] needs modality, one of {', '.join(known_modalities())}"
            )
        modality = values.pop("modality")
        column = values.pop("column", None)
        required = values.pop("required", True)
        return cls(name=name, modality=modality, column=column, required=required, params=values)


def _field_params(name: str, kind: Any, values: dict[str, Any]) -> Any:
    section = f"[fields.{name}]"
    allowed = [f.name for f in dataclasses.fields(kind)]
    if kind is TextBakeParams:
        allowed = [a for a in allowed if a not in _LINE_TEXT_ONLY]
    if kind is ImageParams:
        allowed = [a for a in allowed if a != "labels"]
    _reject_unknown(section, values, [*allowed, "modality", "column", "required"])
    try:
        return kind(**values)
    except SpecError as err:
        raise SpecError(f"{section}: {err}") from None


@dataclass(frozen=True, kw_only=True)
class BakeSpec:
    """Everything a bake needs.

    Args:
        sources: URLs, paths or globs of the raw inputs (any fsspec protocol).
        output: URL or path of the cache store to write.
        modality: What the inputs are: ``"image"``, ``"text"`` or ``"audio"``.
        image: Image preprocessing parameters (used when ``modality == "image"``).
        text: Text reading and tokenization parameters (``modality == "text"``).
        audio: Audio featurization parameters (``modality == "audio"``).
            Each also takes a plain dict of the table's fields.
        shard_size: Samples per bake shard (one Dask task each): images or clips, or for
            text an upper bound on lines (a Parquet row group is never split). Default:
            ``DEFAULT_SHARD_SIZES`` of the modality (1024 images or clips, 16384 text lines).
        storage_options: fsspec options for the sources (credentials stay out of logs and of
            the manifest).
        output_storage_options: fsspec options for the output store.
        scheduler: ``"auto"`` (default: for images, Dask's local ``processes`` scheduler
            with one worker process per CPU when this machine has several CPUs and the bake
            several shards; otherwise ``"threads"``), ``"threads"``, ``"processes"``,
            ``"synchronous"``, or the address of a running ``distributed`` scheduler
            (``tcp://host:8786``).
        workers: Start a ``distributed.LocalCluster`` of this many worker processes on this
            machine and bake on it (with ``"auto"`` or ``"threads"`` only).
        max_rejected: Fail the bake (exit non-zero) when more inputs than this are rejected.
        fields: The fields of a records bake, by name (``FieldSpec`` or a plain table with
            ``modality``, ``column``, ``required`` and the codec's parameters). Naming fields
            makes the bake a records bake (``modality = "records"``): sources are tables
            (CSV, TSV, JSON Lines, Parquet), tar shards or zip archives, and each row of the
            cache holds every field of one record.
        source_format: The record source of every input (``table``, ``tar``, ``zip``, or a
            registered one); by default each input's ending picks it.
        transforms: The user's JAX functions over each shard's stored fields, in order
            (``TransformSpec``, a ``{"function": "pkg.mod:fn", "version", "params"}`` table,
            the name, or a module-level function); see ``datakiln.etl.transforms``.
        filters: Rows to leave out: a JAX function returning a bool per row, or host-side
            checks (``{"min_side": 32}``); see ``datakiln.etl.filters``.
        dedup: ``"exact"`` (content hashes of the raw bytes) or ``"near"`` (image pHash,
            text MinHash) rejects later copies of a row; ``dedup_distance`` is the number of
            differing pHash bits (of 64) that still counts as a copy.
    """

    sources: tuple[str, ...]
    output: str
    modality: str = "image"
    image: ImageParams = field(default_factory=ImageParams)
    text: TextBakeParams = field(default_factory=TextBakeParams)
    audio: AudioParams = field(default_factory=AudioParams)
    shard_size: int | None = None
    # repr=False: these hold credentials, which must never reach a log or a traceback.
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    output_storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    scheduler: str = "auto"
    workers: int | None = None
    max_rejected: int | None = None
    fields: Mapping[str, FieldSpec] = field(default_factory=dict)
    source_format: str | None = None
    transforms: Sequence[Any] = ()
    filters: Sequence[Any] = ()
    dedup: str | None = None
    dedup_distance: int = 4  # datakiln.etl.dedup.DEFAULT_DISTANCE

    def __post_init__(self) -> None:
        sources = (self.sources,) if isinstance(self.sources, str) else tuple(self.sources)
        object.__setattr__(self, "sources", sources)
        self._check_fields()
        self._check_steps()
        for name, kind in _MODALITY_PARAMS.items():
            table = getattr(self, name)
            if isinstance(table, Mapping):  # a plain table, as in a TOML spec
                object.__setattr__(self, name, kind.from_dict(table))
            elif not isinstance(table, kind):
                raise SpecError(
                    f"{name} must be {_class_name(kind, table)} or a table of its fields; got "
                    f"{_class_name(type(table), kind)}"
                )
        if not sources or not all(isinstance(s, str) and s for s in sources):
            raise SpecError("sources must name at least one URL, path or glob")
        if not isinstance(self.output, str) or not self.output:
            raise SpecError("output must be the URL or path of the cache to write")
        _check_choice("modality", self.modality, MODALITIES)
        if self.shard_size is None:
            object.__setattr__(self, "shard_size", DEFAULT_SHARD_SIZES[self.modality])
        _check_positive("shard_size", self.shard_size)
        if self.workers is not None:
            _check_positive("workers", self.workers)
        if self.max_rejected is not None and (
            not isinstance(self.max_rejected, int) or self.max_rejected < 0
        ):
            raise SpecError(
                f"max_rejected must be a non-negative integer; got {self.max_rejected!r}"
            )
        if self.scheduler not in LOCAL_SCHEDULERS and "://" not in self.scheduler:
            raise SpecError(
                f"scheduler must be one of {', '.join(LOCAL_SCHEDULERS)} or a distributed "
                f"address such as tcp://host:8786; got {self.scheduler!r}"
            )

    @property
    def source_options(self) -> dict[str, Any]:
        """``storage_options`` as the sources are read.

        With datakiln's retry and timeout defaults where a source is on S3, so that a stalled
        read is retried rather than waited on for ever.
        """
        from datakiln.cache.layout import with_source_defaults

        return with_source_defaults(self.sources, self.storage_options)

    def _check_fields(self) -> None:
        if not isinstance(self.fields, Mapping):
            raise SpecError("fields must be a table of field tables, by field name")
        fields = {}
        for name, value in self.fields.items():
            if isinstance(value, FieldSpec):
                if value.name != name:
                    value = dataclasses.replace(value, name=name)
                fields[name] = value
            else:
                fields[name] = FieldSpec.from_dict(name, value)
        object.__setattr__(self, "fields", fields)
        if fields and self.modality not in ("image", "records"):
            raise SpecError(
                f"a spec with [fields] bakes records; modality {self.modality!r} cannot have "
                "fields (drop modality, or the fields)"
            )
        if fields:
            object.__setattr__(self, "modality", "records")
        elif self.modality == "records":
            raise SpecError("a records bake needs at least one [fields.NAME] table")
        stored = [n for f in fields.values() for n in _stored_names(f)]
        clash = sorted({n for n in stored if stored.count(n) > 1})
        if clash:
            raise SpecError(f"fields store arrays under the same name: {', '.join(clash)}")
        if self.source_format is not None and not isinstance(self.source_format, str):
            raise SpecError(f"source_format must be a source name; got {self.source_format!r}")

    def _check_steps(self) -> None:
        from datakiln.etl.dedup import check_dedup
        from datakiln.etl.filters import FilterSpec, check_filters
        from datakiln.etl.transforms import TransformSpec

        for name in ("transforms", "filters"):
            value = getattr(self, name)
            if isinstance(value, Mapping | str) or callable(value):
                value = [value]
            if not isinstance(value, Sequence):
                raise SpecError(f"{name} must be a list of [[{name}]] tables")
            kind = TransformSpec if name == "transforms" else FilterSpec
            object.__setattr__(self, name, tuple(kind.from_value(v) for v in value))
        modality = "records" if self.fields else self.modality
        check_filters(self.filters, modality)
        check_dedup(self.dedup, self.dedup_distance, modality)

    def steps_key(self) -> dict[str, Any]:
        """The user steps' part of the cache key.

        Each function's name, code, version and params; the filters' checks; the dedup
        mode. Empty when there are none, so that the keys of bakes without steps stay what
        they were.
        """
        out: dict[str, Any] = {}
        if self.transforms:
            out["transforms"] = [t.key_dict() for t in self.transforms]
        if self.filters:
            out["filters"] = [f.key_dict() for f in self.filters]
        if self.dedup:
            out["dedup"] = {"mode": self.dedup, "distance": self.dedup_distance}
        return out

    def _steps_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.transforms:
            out["transforms"] = [t.to_dict() for t in self.transforms]
        if self.filters:
            out["filters"] = [f.to_dict() for f in self.filters]
        if self.dedup:
            out["dedup"] = self.dedup
            out["dedup_distance"] = self.dedup_distance
        return out

    @property
    def params(self) -> Any:
        """The parameter table of the spec's modality."""
        if self.modality == "records":
            return RecordParams(fields=dict(self.fields), source_format=self.source_format)
        return getattr(self, self.modality)

    def key_dict(self) -> dict[str, Any]:
        """The fields that decide what the cache holds (no paths, credentials or scheduling)."""
        return {
            "modality": self.modality,
            self.modality: self.params.to_dict(),
            "shard_size": self.shard_size,
            **self.steps_key(),
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; storage options are left out so credentials never leak."""
        if self.modality == "records":
            return {
                "sources": list(self.sources),
                "output": self.output,
                "fields": {n: f.to_dict() for n, f in self.fields.items()},
                "source_format": self.source_format,
                "shard_size": self.shard_size,
                "scheduler": self.scheduler,
                "workers": self.workers,
                "max_rejected": self.max_rejected,
                **self._steps_dict(),
            }
        return {
            "sources": list(self.sources),
            "output": self.output,
            "modality": self.modality,
            self.modality: self.params.to_dict(),
            "shard_size": self.shard_size,
            "scheduler": self.scheduler,
            "workers": self.workers,
            "max_rejected": self.max_rejected,
            **self._steps_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BakeSpec:
        names = [f.name for f in dataclasses.fields(cls)]
        _reject_unknown("the bake spec", data, names)
        values = dict(data)
        for name, kind in _MODALITY_PARAMS.items():
            if name in values:
                table = values[name]
                if not isinstance(table, Mapping | kind):
                    raise SpecError(f"[{name}] must be a table of {name} parameters")
                values[name] = kind.from_dict(table) if isinstance(table, Mapping) else table
        if "fields" in values and not isinstance(values["fields"], Mapping):
            raise SpecError("fields must be a table: [fields.NAME] with modality and column")
        for required in ("sources", "output"):
            if required not in values:
                raise SpecError(f"the bake spec needs {required!r}")
        try:
            return cls(**values)
        except TypeError as err:
            raise SpecError(f"bad bake spec: {err}") from err

    @classmethod
    def from_toml(cls, path: str | Path) -> BakeSpec:
        """Load a spec from a TOML file; relative local paths resolve against its folder."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise SpecError(f"spec file {str(path)!r} does not exist") from err
        except tomllib.TOMLDecodeError as err:
            raise SpecError(f"spec file {str(path)!r} is not valid TOML: {err}") from err
        base = path.resolve().parent
        if isinstance(data.get("sources"), str):
            data["sources"] = [data["sources"]]
        if isinstance(data.get("sources"), list):
            data["sources"] = [_resolve(s, base) for s in data["sources"]]
        if isinstance(data.get("output"), str):
            data["output"] = _resolve(data["output"], base)
        return cls.from_dict(data)


@dataclass(frozen=True, kw_only=True)
class RecordParams:
    """The parameters of a records bake: its fields, and the source format if named."""

    fields: Mapping[str, FieldSpec]
    source_format: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "fields": {n: f.to_dict() for n, f in self.fields.items()},
            "source_format": self.source_format,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordParams:
        return cls(
            fields={n: FieldSpec.from_dict(n, f) for n, f in data["fields"].items()},
            source_format=data.get("source_format"),
        )


# The parameter table of each single-modality bake: BakeSpec's field of that name holds one.
_MODALITY_PARAMS: dict[str, type[ImageParams | TextBakeParams | AudioParams]] = {
    "image": ImageParams,
    "text": TextBakeParams,
    "audio": AudioParams,
}


def _class_name(kind: type, other: Any) -> str:
    """``kind``'s name, with its module where the name alone could mislead.

    The module is named when ``other`` (a class or a value) is another class of the same
    name, or when ``kind`` is neither a builtin nor defined here: a ``datakiln.TextParams``
    (the dataset config) passed where ``TextBakeParams`` is wanted says where each comes from.
    """
    other_type = other if isinstance(other, type) else type(other)
    same_name = other_type is not kind and other_type.__name__ == kind.__name__
    if same_name or (kind.__module__ != "builtins" and not kind.__module__.startswith(__name__)):
        return f"{kind.__module__}.{kind.__qualname__}"
    return kind.__name__


def _stored_names(spec: FieldSpec) -> list[str]:
    from datakiln.etl.fields import get_codec

    names = [layout.name for layout in get_codec(spec.modality).layouts(spec, "", 1)]
    return [*names, f"{spec.name}_valid"] if not spec.required else names


def _resolve(url: Any, base: Path) -> Any:
    if not isinstance(url, str) or "://" in url or Path(url).is_absolute():
        return url
    return str(base / url)
