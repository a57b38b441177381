"""Zip archives as record sources: members grouped by key, read by byte range.

The central directory is read once per archive at plan time (``zipfile`` reads the end of the
file). Tasks read each member's local header and data by range, decompress it (stored,
deflate, bzip2 or LZMA, the methods Python's zipfile writes) and check its CRC-32; a member
that fails (another method, a bad CRC, encryption) rejects its record.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from typing import Any

import fsspec

from datakiln.readers.listing import InputFile
from datakiln.readers.sources import MemberRef, register_source
from datakiln.readers.sources.archive import ArchiveSource

_METHODS = {
    zipfile.ZIP_STORED: "raw",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}


def list_zip(uri: str, storage_options: Mapping[str, Any]) -> tuple[list[MemberRef], str | None]:
    """The file members of a zip archive, and why the listing stopped early (``None``: whole)."""
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


class ZipSource(ArchiveSource):
    """Zip archives: records are keys, columns are member extensions."""

    name = "zip"
    extensions = (".zip",)

    def list_members(
        self, inp: InputFile, storage_options: Mapping[str, Any]
    ) -> tuple[list[MemberRef], str | None]:
        return list_zip(inp.uri, storage_options)


SOURCE = register_source(ZipSource())
