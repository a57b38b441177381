"""Sources: container formats that turn inputs into records.

A source knows one container format (a table, a tar shard, a zip archive). At plan time it
cuts an input into :class:`RecordUnit`s (row ranges, or groups of archive members with their
byte offsets); in a shard task it turns a unit into records (named values) and rejections.
It knows nothing of modalities: what a value means is the field codecs' business.

A new container format is one module that calls :func:`register_source`.
"""

from __future__ import annotations

import importlib
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from datakiln.errors import SpecError
from datakiln.readers.listing import InputFile
from datakiln.readers.rejections import redact_url


@dataclass(frozen=True, slots=True)
class MemberRef:
    """Bytes of an archive member, read by byte range: ``[offset, offset + size)`` of ``uri``.

    ``method`` is how the bytes are stored: ``"raw"`` (tar, zip stored), ``"deflate"``,
    ``"bzip2"`` (zip); ``crc`` the zip CRC-32 of the uncompressed bytes.
    ``header`` marks a zip member whose ``offset`` is its local header (data starts after it).
    """

    uri: str
    name: str
    offset: int
    size: int
    method: str = "raw"
    crc: int | None = None
    header: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "name": self.name,
            "offset": self.offset,
            "size": self.size,
            "method": self.method,
            "crc": self.crc,
            "header": self.header,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemberRef:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file a record names by path or URL (resolved against its table's folder)."""

    uri: str


# What a record holds under a column name.
Value = str | int | float | bool | bytes | None | MemberRef | FileRef | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a container.

    ``key`` names it for people (``row 12``, a tar key), ``position`` orders it within its
    input, ``values`` maps column names (or member extensions) to values.
    """

    key: str
    position: int
    values: Mapping[str, Value]


@dataclass(frozen=True, slots=True)
class PlanRejection:
    """A record the planner already knows is broken (a duplicate key, a truncated member)."""

    key: str
    position: int
    error_type: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "position": self.position,
            "error_type": self.error_type,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlanRejection:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class RecordUnit:
    """A planned run of records of one input: what a shard task reads.

    ``start``/``end`` are record positions (table rows, archive record ordinals). Archive
    units list their ``members`` (key -> member references) so that a task reads each by byte
    range without listing the archive again; ``refs`` are the files its records name, with
    their versions, so that a changed file behind an unchanged table changes this unit's key.
    """

    source: str
    input: InputFile
    start: int
    end: int
    members: tuple[tuple[str, tuple[MemberRef, ...]], ...] = ()
    refs: tuple[InputFile, ...] = ()
    rejections: tuple[PlanRejection, ...] = ()

    @property
    def capacity(self) -> int:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "input": self.input.to_dict(),
            "start": self.start,
            "end": self.end,
            "members": [[k, [m.to_dict() for m in ms]] for k, ms in self.members],
            "refs": [r.to_dict() for r in self.refs],
            "rejections": [r.to_dict() for r in self.rejections],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordUnit:
        return cls(
            source=data["source"],
            input=InputFile.from_dict(data["input"]),
            start=int(data["start"]),
            end=int(data["end"]),
            members=tuple(
                (k, tuple(MemberRef.from_dict(m) for m in ms)) for k, ms in data["members"]
            ),
            refs=tuple(InputFile.from_dict(r) for r in data["refs"]),
            rejections=tuple(PlanRejection.from_dict(r) for r in data["rejections"]),
        )


@dataclass(frozen=True, slots=True)
class ReadResult:
    """What a source read of one unit gives: records, and rejections of whole records."""

    records: list[Record] = field(default_factory=list)
    rejections: list[PlanRejection] = field(default_factory=list)
    # the codec a text container was decoded with, when it was not UTF-8 (detected)
    encoding: str | None = None


class Source(Protocol):
    """A container format.

    Implementations are registered by name with :func:`register_source`; ``extensions``
    decides which inputs it claims.
    """

    name: str

    @property
    def extensions(self) -> tuple[str, ...]:
        """Lower-case file name endings of the inputs this source claims.

        Read-only, so a class attribute such as ``(".tar",)`` satisfies it.
        """
        ...

    def columns(self, inp: InputFile, storage_options: Mapping[str, Any]) -> Sequence[str] | None:
        """The column names an input offers, to check the spec before baking.

        ``None``: unknown until read, as in archives whose members vary.
        """
        ...

    def plan(
        self,
        inp: InputFile,
        storage_options: Mapping[str, Any],
        *,
        records_per_unit: int,
        path_columns: Sequence[str],
    ) -> list[RecordUnit]:
        """Cut ``inp`` into units of at most ``records_per_unit`` records.

        ``path_columns`` name columns whose strings are file paths: their files become the
        units' ``refs``.
        """
        ...

    def read(self, unit: RecordUnit, storage_options: Mapping[str, Any]) -> ReadResult:
        """The records of ``unit`` (values may still be references to fetch)."""
        ...


_SOURCES: dict[str, Source] = {}
_BUILTIN = {
    "file": "datakiln.readers.sources.files",
    "table": "datakiln.readers.sources.table",
    "lines": "datakiln.readers.sources.table",
    "tar": "datakiln.readers.sources.tar",
    "zip": "datakiln.readers.sources.zip",
}


def register_source(source: Source) -> Source:
    """Make ``source`` available under ``source.name`` (a later registration replaces it)."""
    _SOURCES[source.name] = source
    return source


def _load_builtins() -> None:
    for module in _BUILTIN.values():
        importlib.import_module(module)


# Tar shards compressed whole: WebDataset writes them too, but they cannot be read by range.
_COMPRESSED_TARS = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst")


def get_source(name: str) -> Source:
    """The source registered as ``name``."""
    if name not in _SOURCES:
        _load_builtins()
    if name not in _SOURCES:
        raise SpecError(f"unknown source {name!r}; known: {', '.join(sorted(_SOURCES))}")
    return _SOURCES[name]


def source_for(uri: str, name: str | None = None) -> Source:
    """The source that reads ``uri``: the one named, else the one claiming its ending."""
    if name is not None:
        return get_source(name)
    _load_builtins()
    lower = uri.lower()
    for source in _claiming():
        if lower.endswith(source.extensions):
            return source
    if lower.endswith(_COMPRESSED_TARS):
        raise SpecError(
            f"{redact_url(uri)} is a compressed tar: its members have no byte offsets to read "
            "by range, so a task would have to decompress the whole archive; decompress the "
            "shards first (gunzip, unxz, ...) and bake the .tar files"
        )
    known = sorted(e for s in _claiming() for e in s.extensions)
    raise SpecError(
        f"no record source reads {uri!r}; name one with source_format, or use an input "
        f"ending in {', '.join(known)}"
    )


def _claiming() -> list[Source]:
    """The sources that claim inputs by their ending when no source is named.

    A source with ``by_ending = False`` reads only inputs it is named for.
    """
    return [s for s in _SOURCES.values() if getattr(s, "by_ending", True)]


def record_extensions(source_format: str | None = None) -> tuple[str, ...]:
    """The endings that folders given as sources are searched for.

    Those of the named source, or every ending some source claims.
    """
    if source_format is not None:
        return tuple(get_source(source_format).extensions)
    _load_builtins()
    return tuple(sorted({e for s in _claiming() for e in s.extensions}))


def resolve_path(value: str, base_uri: str) -> str:
    """A path a record names, as a URL.

    Absolute URLs and paths stay; relative ones are relative to the folder of ``base_uri``
    (the table's own URL).
    """
    if "://" in value:
        return value
    protocol, _, path = base_uri.rpartition("://")
    if value.startswith("/"):
        return f"{protocol}://{value}" if protocol else value
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), value))
    return f"{protocol}://{joined}" if protocol else joined


def split_key(name: str) -> tuple[str, str]:
    """WebDataset's member naming: ``dir/key.ext.more`` -> (``dir/key``, ``ext.more``)."""
    folder, base = posixpath.split(name)
    stem, dot, ext = base.partition(".")
    if not dot:
        return name, ""
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


__all__ = [
    "FileRef",
    "MemberRef",
    "PlanRejection",
    "ReadResult",
    "Record",
    "RecordUnit",
    "Source",
    "Value",
    "get_source",
    "record_extensions",
    "register_source",
    "resolve_path",
    "source_for",
    "split_key",
]
