"""Tar shards (WebDataset style) as record sources: members grouped by key.

The planner walks the member headers once per archive (``tarfile`` seeks past the data, so on
an object store it reads the headers' blocks, not the archive) and records each member's data
offset and size. A truncated archive keeps the members that are whole; the record cut short is
rejected.
"""

from __future__ import annotations

import tarfile
from collections.abc import Mapping
from typing import Any

import fsspec

from datakiln.readers.listing import InputFile
from datakiln.readers.sources import MemberRef, register_source
from datakiln.readers.sources.archive import ArchiveSource

# Read-ahead of the member listing (fsspec's block size for the archive's file object).
LIST_BLOCK_BYTES = 2**16


def list_tar(
    uri: str, size: int, storage_options: Mapping[str, Any]
) -> tuple[list[MemberRef], str | None]:
    """Regular-file members with their data offsets, and why the listing stopped early."""
    members: list[MemberRef] = []
    truncated = None
    # Small blocks: a listing seeks from header to header, and on an object store each block
    # read is a ranged request; big members are skipped, not downloaded.
    fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options))
    with fs.open(path, "rb", block_size=LIST_BLOCK_BYTES) as f:
        try:
            with tarfile.open(fileobj=f, mode="r:") as archive:
                while True:
                    info = archive.next()
                    if info is None:
                        break
                    if not info.isfile():
                        continue
                    if info.offset_data + info.size > size:
                        # listed, so that its record is rejected by name rather than lost
                        members.append(MemberRef(uri, info.name, info.offset_data, info.size))
                        truncated = (
                            f"the archive ends inside member {info.name!r} "
                            f"({size - info.offset_data} of {info.size} bytes)"
                        )
                        break
                    members.append(MemberRef(uri, info.name, info.offset_data, info.size))
            if truncated is None:
                truncated = _trailing_damage(f, members, size)
        except (tarfile.TarError, EOFError, OSError) as err:
            truncated = f"the archive is truncated or damaged after {len(members)} members: {err}"
    return members, truncated


# Bytes after the last member that are checked for the end-of-archive zero blocks.
_TAIL_CHECK = 2**20


def _trailing_damage(f: Any, members: list[MemberRef], size: int) -> str | None:
    """Why the bytes after the last member are not an end-of-archive marker, if they are not.

    ``tarfile`` ends a listing quietly at a header cut short, so a truncated archive would lose
    its last records without a word; a well-formed one ends in zero blocks.
    """
    end = -(-(members[-1].offset + members[-1].size) // 512) * 512 if members else 0
    if end >= size:
        return None
    f.seek(end)
    tail = f.read(min(size - end, _TAIL_CHECK))
    if tail.strip(b"\x00"):
        last = repr(members[-1].name) if members else "its start"
        return f"the archive is truncated or damaged after member {last}"
    return None


class TarSource(ArchiveSource):
    name = "tar"
    extensions = (".tar",)

    def list_members(
        self, inp: InputFile, storage_options: Mapping[str, Any]
    ) -> tuple[list[MemberRef], str | None]:
        return list_tar(inp.uri, inp.size, storage_options)


SOURCE = register_source(TarSource())
