"""What tar and zip sources share: members grouped into records by key, read by byte range.

Members named ``KEY.EXT`` (WebDataset's convention) form the record ``KEY``, whose columns are
the extensions. The member index is listed once per archive at plan time and travels in the
units, so a task reads exactly its members with ranged reads (``cat_ranges``) and no task holds
a whole archive in memory, on a local disk or an object store.
"""

from __future__ import annotations

import bz2
import contextlib
import io
import lzma
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import fsspec

from datakiln.readers.listing import InputFile
from datakiln.readers.sources import (
    MemberRef,
    PlanRejection,
    ReadResult,
    Record,
    RecordUnit,
    split_key,
)

# A zip member's local header: signature, versions, flags, method, times, crc, sizes, lengths.
_ZIP_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_ZIP_LOCAL_SIGNATURE = b"PK\x03\x04"


def group_members(
    members: Sequence[MemberRef], truncated: str | None
) -> tuple[list[tuple[str, tuple[MemberRef, ...]]], dict[str, PlanRejection]]:
    """Members grouped by key in order of first appearance, and rejections of duplicates.

    A key that holds a duplicate member is rejected. ``truncated``: why the listing stopped
    early (its last key is rejected).
    """
    order: dict[str, dict[str, MemberRef]] = {}
    rejected: dict[str, PlanRejection] = {}
    for member in members:
        key, ext = split_key(member.name)
        group = order.setdefault(key, {})
        if ext in group and key not in rejected:
            rejected[key] = PlanRejection(
                key,
                -1,
                "DuplicateKey",
                f"member {member.name!r} repeats column {ext!r} of record {key!r}",
            )
        group[ext] = member
    grouped = [(key, tuple(group.values())) for key, group in order.items()]
    if truncated and grouped:
        last = grouped[-1][0]
        rejected.setdefault(last, PlanRejection(last, -1, "TruncatedArchive", truncated))
    positions = {key: k for k, (key, _) in enumerate(grouped)}
    rejected = {
        key: PlanRejection(key, positions[key], r.error_type, r.message)
        for key, r in rejected.items()
    }
    return grouped, rejected


def plan_archive(
    source: str,
    inp: InputFile,
    members: Sequence[MemberRef],
    truncated: str | None,
    records_per_unit: int,
) -> list[RecordUnit]:
    """Cut an archive's listed ``members`` into units of at most ``records_per_unit`` keys.

    Rejected keys travel with their unit; an archive whose listing found nothing at all
    (``truncated``) becomes one unit holding its rejection.
    """
    grouped, rejected = group_members(members, truncated)
    if truncated and not grouped:  # nothing listed at all: the archive itself is one rejection
        rejected = {"": PlanRejection("(archive)", 0, "TruncatedArchive", truncated)}
        grouped = [("(archive)", ())]
    units = []
    for start in range(0, len(grouped), records_per_unit):
        part = grouped[start : start + records_per_unit]
        units.append(
            RecordUnit(
                source=source,
                input=inp,
                start=start,
                end=start + len(part),
                members=tuple(part),
                rejections=tuple(rejected[k] for k, _ in part if k in rejected)
                + ((rejected[""],) if "" in rejected else ()),
            )
        )
    return units


def member_values(
    members: Sequence[MemberRef], column: str, storage_options: Mapping[str, Any]
) -> list[bytes]:
    """The bytes of every member whose extension is ``column`` (unreadable ones left out)."""
    wanted = [m for m in members if split_key(m.name)[1] == column]
    return [d for d in fetch_members(wanted, storage_options) if isinstance(d, bytes)]


def read_archive_unit(unit: RecordUnit, storage_options: Mapping[str, Any]) -> ReadResult:
    """The records of an archive unit, members left as references.

    The caller fetches them, batched with the other byte ranges of the shard.
    """
    bad = {r.key for r in unit.rejections}
    records = [
        Record(key=key, position=unit.start + k, values={split_key(m.name)[1]: m for m in members})
        for k, (key, members) in enumerate(unit.members)
        if key not in bad
    ]
    return ReadResult(records=records, rejections=list(unit.rejections))


def fetch_members(
    members: Sequence[MemberRef], storage_options: Mapping[str, Any]
) -> list[bytes | BaseException]:
    """The bytes of every member (decompressed and CRC-checked for zip), or why not, per member.

    One batched ``cat_ranges`` per archive for the data; zip members first read their local
    headers (whose extra field may differ from the central directory's) in one more batch.
    """
    out: list[bytes | BaseException] = [b""] * len(members)
    by_uri: dict[str, list[int]] = {}
    for k, m in enumerate(members):
        by_uri.setdefault(m.uri, []).append(k)
    for uri, index in by_uri.items():
        fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options))
        starts = [members[k].offset for k in index]
        headers: dict[int, int | BaseException] = {}
        zipped = [k for k in index if members[k].header]
        if zipped:
            got = fs.cat_ranges(
                [path] * len(zipped),
                [members[k].offset for k in zipped],
                [members[k].offset + _ZIP_LOCAL.size for k in zipped],
                on_error="return",
            )
            for k, raw in zip(zipped, got, strict=True):
                headers[k] = raw if isinstance(raw, BaseException) else _zip_data_offset(raw)
            starts = []
            for k in index:
                header = headers.get(k, 0)
                starts.append(members[k].offset + header if isinstance(header, int) else 0)
        ends = [s + members[k].size for s, k in zip(starts, index, strict=True)]
        datas = fs.cat_ranges([path] * len(index), starts, ends, on_error="return")
        for k, data in zip(index, datas, strict=True):
            header = headers.get(k, 0)
            if isinstance(header, BaseException):
                out[k] = header
            elif isinstance(data, BaseException):
                out[k] = data
            else:
                out[k] = _member_bytes(members[k], data)
    return out


def can_open_member(member: MemberRef) -> bool:
    """Whether ``open_member`` can read ``member`` in place: stored bytes at a known offset.

    A zip member needs its local header read and its CRC checked over the whole: fetched.
    """
    return member.method == "raw" and not member.header and member.crc is None


@contextlib.contextmanager
def open_member(member: MemberRef, storage_options: Mapping[str, Any]) -> Iterator[io.RawIOBase]:
    """A seekable binary file of ``member``'s bytes, read from the archive as asked, never whole.

    For members ``can_open_member`` accepts (tar members).
    """
    if not can_open_member(member):
        raise ValueError(f"member {member.name!r} is not stored in place; fetch it")
    fs, path = fsspec.core.url_to_fs(member.uri, **dict(storage_options))
    with fs.open(path, "rb", block_size=4 << 20) as f:
        yield _MemberFile(f, member.offset, member.size)


class _MemberFile(io.RawIOBase):
    """``[offset, offset + size)`` of an open binary file, as a file of its own."""

    def __init__(self, f: Any, offset: int, size: int) -> None:
        super().__init__()
        self._f, self._offset, self._size, self._pos = f, offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + pos < 0:
            raise ValueError(f"negative seek position {base + pos}")
        self._pos = base + pos
        return self._pos

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), max(0, self._size - self._pos))
        if not want:
            return 0
        self._f.seek(self._offset + self._pos)
        data = self._f.read(want)
        if len(data) < want:
            raise EOFError(f"the archive ends inside a member ({self._pos + len(data)} bytes)")
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _zip_data_offset(raw: bytes) -> int | BaseException:
    if len(raw) < _ZIP_LOCAL.size:
        return EOFError("the archive ends inside a member's local header")
    fields = _ZIP_LOCAL.unpack(raw)
    if fields[0] != _ZIP_LOCAL_SIGNATURE:
        return ValueError("no zip local header at the member's offset")
    return _ZIP_LOCAL.size + int(fields[9]) + int(fields[10])  # name and extra lengths


def _zip_lzma(data: bytes) -> bytes:
    """A zip member's LZMA data (method 14): a 4-byte header, the LZMA1 properties, the stream.

    The header is the encoder's version (2 bytes) and the properties' length (2 bytes,
    little-endian); the properties are one byte packing ``lc``, ``lp`` and ``pb`` and the
    dictionary size (4 bytes, little-endian).
    """
    if len(data) < 4:
        raise ValueError("no LZMA header")
    size = int.from_bytes(data[2:4], "little")
    props = data[4 : 4 + size]
    if size < 5 or len(props) < 5:
        raise ValueError("LZMA properties too short")
    packed, rest = divmod(props[0], 9)
    pb, lp = divmod(packed, 5)
    lzma_filter = {
        "id": lzma.FILTER_LZMA1,
        "dict_size": int.from_bytes(props[1:5], "little"),
        "lc": rest,
        "lp": lp,
        "pb": pb,
    }
    decompressor = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma_filter])
    return decompressor.decompress(data[4 + size :])


def _member_bytes(member: MemberRef, data: bytes) -> bytes | BaseException:
    if len(data) < member.size:
        return EOFError(f"member {member.name!r} is truncated: {len(data)} of {member.size} bytes")
    try:
        if member.method == "deflate":
            data = zlib.decompress(data, -15)
        elif member.method == "bzip2":
            data = bz2.decompress(data)
        elif member.method == "lzma":
            data = _zip_lzma(data)
        elif member.method != "raw":
            return ValueError(f"member {member.name!r}: compression {member.method!r} unsupported")
    except (zlib.error, lzma.LZMAError, OSError, ValueError) as err:
        return ValueError(f"member {member.name!r} does not decompress: {err}")
    if member.crc is not None and zlib.crc32(data) != member.crc:
        return ValueError(f"member {member.name!r} fails its CRC-32 check")
    return data


class ArchiveSource:
    """A container of members named ``KEY.EXT``: records are keys, columns are extensions.

    Subclasses say how to list an archive's members (``list_members``); planning, reading,
    and class names for label fields are the same for every archive format.
    """

    name = ""
    extensions: tuple[str, ...] = ()

    def list_members(
        self, inp: InputFile, storage_options: Mapping[str, Any]
    ) -> tuple[list[MemberRef], str | None]:
        """The regular-file members, and why the listing stopped early (``None``: whole)."""
        raise NotImplementedError

    def columns(self, inp: InputFile, storage_options: Mapping[str, Any]) -> Sequence[str] | None:
        return None  # members vary from record to record

    def column_values(
        self, inp: InputFile, column: str, storage_options: Mapping[str, Any]
    ) -> list[Any]:
        """Every member of extension ``column`` (label fields learn their class names)."""
        members, _ = self.list_members(inp, storage_options)
        return member_values(members, column, storage_options)

    def plan(
        self,
        inp: InputFile,
        storage_options: Mapping[str, Any],
        *,
        records_per_unit: int,
        path_columns: Sequence[str],
    ) -> list[RecordUnit]:
        members, broken = self.list_members(inp, storage_options)
        return plan_archive(self.name, inp, members, broken, records_per_unit)

    def read(self, unit: RecordUnit, storage_options: Mapping[str, Any]) -> ReadResult:
        return read_archive_unit(unit, storage_options)
