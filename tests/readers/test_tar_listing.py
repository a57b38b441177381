"""The tar listing's own ustar walk gives what ``tarfile`` gives, for every header format."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from datakiln.readers.sources import tar as tar_source


def _archive(fmt: int, names: list[str], *, extras: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        if extras:
            folder = tarfile.TarInfo("dir")
            folder.type = tarfile.DIRTYPE
            archive.addfile(folder)
            link = tarfile.TarInfo("link.jpg")
            link.type = tarfile.SYMTYPE
            link.linkname = names[0]
            archive.addfile(link)
        for k, name in enumerate(names):
            data = bytes([k % 251]) * (700 * k + 3)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


SHORT = [f"{k:06d}.{ext}" for k in range(5) for ext in ("jpg", "txt")]
# 130 characters: ustar splits it into prefix and name; GNU and pax need extra headers
LONG = [f"{'d' * 60}/{'e' * 60}/{k:04d}.jpg" for k in range(3)]


def _both(path: Path) -> tuple[object, object, bool]:
    size = path.stat().st_size
    with path.open("rb") as f:
        walked = tar_source._walk_ustar(f, str(path), size)
        f.seek(0)
        reference = tar_source._list_with_tarfile(f, str(path), size)
    return walked, reference, walked is not None


@pytest.mark.parametrize(
    ("fmt", "names", "extras", "fast"),
    [
        (tarfile.PAX_FORMAT, SHORT, False, True),
        (tarfile.GNU_FORMAT, SHORT, True, True),
        (tarfile.USTAR_FORMAT, SHORT + LONG, True, True),
        (tarfile.GNU_FORMAT, LONG, False, False),  # ././@LongLink headers
        (tarfile.PAX_FORMAT, [*SHORT, "é" * 120 + ".jpg"], False, False),  # pax records
    ],
)
def test_walk_matches_tarfile_or_defers(tmp_path, fmt, names, extras, fast):
    path = tmp_path / "a.tar"
    path.write_bytes(_archive(fmt, names, extras=extras))
    walked, reference, took_fast = _both(path)
    assert took_fast is fast
    if fast:
        assert walked == reference
        assert [m.name for m in walked[0]] == names
    members, truncated = tar_source.list_tar(str(path), path.stat().st_size, {})
    assert (members, truncated) == reference
    data = path.read_bytes()
    for m, k in zip(members, range(len(names)), strict=True):
        assert data[m.offset : m.offset + m.size] == bytes([k % 251]) * (700 * k + 3)


@pytest.mark.parametrize("cut", [512 * 7 + 100, 512 * 9 + 300, 512 * 13])
def test_walk_matches_tarfile_on_truncated_archives(tmp_path, cut):
    whole = _archive(tarfile.PAX_FORMAT, SHORT)
    path = tmp_path / "cut.tar"
    path.write_bytes(whole[:cut])
    size = path.stat().st_size
    members, truncated = tar_source.list_tar(str(path), size, {})
    with path.open("rb") as f:
        walked = tar_source._walk_ustar(f, str(path), size)
    assert walked is not None
    assert walked[0] == members
    assert truncated is not None  # cut inside a member, or the tail check names the damage


def test_bad_checksum_is_left_to_tarfile(tmp_path):
    data = bytearray(_archive(tarfile.PAX_FORMAT, SHORT))
    data[0] ^= 0x01  # the first header's name: its checksum no longer matches
    path = tmp_path / "bad.tar"
    path.write_bytes(bytes(data))
    with path.open("rb") as f:
        assert tar_source._walk_ustar(f, str(path), len(data)) is None
    members, truncated = tar_source.list_tar(str(path), len(data), {})
    assert members == []
    assert "truncated or damaged" in truncated


def test_an_opened_member_reads_its_own_bytes_only(tmp_path):
    """``open_member``: the member's bytes through reads and seeks, nothing of its neighbours;
    an archive cut short under it raises; zip members (CRC, local headers) are fetched."""
    import hashlib

    from datakiln.readers.sources import MemberRef
    from datakiln.readers.sources.archive import can_open_member, open_member

    path = tmp_path / "a.tar"
    path.write_bytes(_archive(tarfile.PAX_FORMAT, SHORT))
    members, _ = tar_source.list_tar(str(path), path.stat().st_size, {})
    with tarfile.open(path) as archive:
        expected = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}
    for member in members:
        assert can_open_member(member)
        with open_member(member, {}) as f:
            assert f.read() == expected[member.name]
            assert f.read() == b""
            f.seek(-2, io.SEEK_END)
            assert f.read(10) == expected[member.name][-2:]
            f.seek(0)
            assert (
                hashlib.file_digest(f, "sha256").digest()
                == hashlib.sha256(expected[member.name]).digest()
            )
    last = members[-1]
    path.write_bytes(path.read_bytes()[: last.offset + last.size // 2])
    with open_member(last, {}) as f, pytest.raises(EOFError, match="ends inside a member"):
        f.read()
    zipped = MemberRef(str(path), "a.wav", 30, 10, method="raw", crc=123, header=True)
    assert not can_open_member(zipped)
