from __future__ import annotations

import fsspec
import pytest

from datakiln.errors import SourceError
from datakiln.readers.listing import list_inputs


def _touch(fs, path, data=b"x"):
    fs.pipe_file(path, data)


def test_lists_globs_folders_and_files_sorted_without_duplicates(tmp_path):
    for name in ("b/2.jpg", "a/1.png", "a/notes.txt", "c.jpg"):
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"data")
    found = list_inputs([str(tmp_path / "*/*.jpg"), str(tmp_path), str(tmp_path / "c.jpg")])
    uris = [f.uri for f in found]
    assert uris == sorted(uris)
    assert [u.rsplit("/", 2)[-2:] for u in uris] == [
        ["a", "1.png"],
        ["b", "2.jpg"],
        [tmp_path.name, "c.jpg"],
    ]
    assert all(f.size == 4 and f.version for f in found)


def test_memory_protocol(memory_root):
    fs = fsspec.filesystem("memory")
    root = memory_root.removeprefix("memory://")
    _touch(fs, f"{root}/x/1.jpg")
    _touch(fs, f"{root}/x/2.jpg")
    found = list_inputs([f"{memory_root}/x/*.jpg"])
    assert [f.uri.rsplit("/", 1)[1] for f in found] == ["1.jpg", "2.jpg"]
    assert all(f.uri.startswith("memory://") and root in f.uri for f in found)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("nowhere/*.jpg", "matched no files"),
        ("nowhere", "does not exist"),
        ("nosuchproto://x/*.jpg", "not available"),
    ],
)
def test_sources_that_name_nothing_raise(tmp_path, source, message):
    with pytest.raises(SourceError, match=message):
        list_inputs([source if "://" in source else str(tmp_path / source)])


def test_empty_folder_says_what_it_looked_for(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(SourceError, match=r"looked for \.jpg"):
        list_inputs([str(tmp_path)])
