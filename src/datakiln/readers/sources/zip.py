"""Zip archives as record sources: members grouped by key, read by byte range.

The central directory is read once per archive at plan time (``zipfile`` reads the end of the
file). Tasks read each member's local header and data by range, inflate it and check its
CRC-32; a member that fails (an unsupported method, a bad CRC, encryption) rejects its record.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import fsspec

from datakiln.readers.listing import InputFile
from datakiln.readers.sources import MemberRef, ReadResult, RecordUnit, register_source
from datakiln.readers.sources.archive import member_values, plan_archive, read_archive_unit

_METHODS = {zipfile.ZIP_STORED: "raw", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2"}


def list_zip(uri: str, storage_options: Mapping[str, Any]) -> tuple[list[MemberRef], str | None]:
    members: list[MemberRef] = []
    try:
        with (
            fsspec.open(uri, "rb", **dict(storage_options)) as f,
            zipfile.ZipFile(f) as archive,
        ):
            for info in archive.infolist():
                if info.is_dir():
                    continue
                method = _METHODS.get(info.compress_type, f"method {info.compress_type}")
                if info.flag_bits & 0x1:
                    method = "encrypted"
                members.append(
                    MemberRef(
                        uri,
                        info.filename,
                        info.header_offset,
                        info.compress_size,
                        method=method,
                        crc=info.CRC,
                        header=True,
                    )
                )
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        return members, f"the zip archive cannot be read: {err}"
    return members, None


class ZipSource:
    name = "zip"
    extensions = (".zip",)

    def columns(self, inp: InputFile, storage_options: Mapping[str, Any]) -> Sequence[str] | None:
        return None

    def column_values(
        self, inp: InputFile, column: str, storage_options: Mapping[str, Any]
    ) -> list[Any]:
        """Every member of extension ``column`` (label fields learn their class names)."""
        members, _ = list_zip(inp.uri, storage_options)
        return member_values(members, column, storage_options)

    def plan(
        self,
        inp: InputFile,
        storage_options: Mapping[str, Any],
        *,
        records_per_unit: int,
        path_columns: Sequence[str],
    ) -> list[RecordUnit]:
        members, broken = list_zip(inp.uri, storage_options)
        return plan_archive(self.name, inp, members, broken, records_per_unit)

    def read(self, unit: RecordUnit, storage_options: Mapping[str, Any]) -> ReadResult:
        return read_archive_unit(unit, storage_options)


SOURCE = register_source(ZipSource())
