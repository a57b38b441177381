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


def _tree(root):
    for name in ("a/x.jpg", "a/b/y.PNG", "a/z.txt", "c/w.jpeg", ".hidden.jpg", "d.jpg/q.jpg"):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"123" * len(name))
    (root / "c" / "link.jpg").symlink_to(root / "a" / "x.jpg")
    (root / "c" / "dirlink").symlink_to(root / "a" / "b")
    (root / "c" / "dirlink.jpg").symlink_to(root / "a" / "b")


def test_local_folders_list_as_fsspec_does(tmp_path, monkeypatch):
    """The local fast walk gives exactly what fsspec's find gives (links, case, dot files)."""
    import datakiln.readers.listing as listing

    _tree(tmp_path)
    fast = list_inputs([str(tmp_path)])
    monkeypatch.setattr(listing, "is_local", lambda fs: False)
    assert list_inputs([str(tmp_path)]) == fast
    assert len(fast) == 6
    link = next(f for f in fast if f.uri.endswith("c/link.jpg"))
    target = next(f for f in fast if f.uri.endswith("a/x.jpg"))
    assert (link.size, link.version) == (target.size, target.version)


def test_a_dangling_link_is_rejected_by_the_bake_not_fatal(tmp_path):
    from tests.conftest import write_small_images

    from datakiln.etl.bake import bake
    from datakiln.etl.spec import BakeSpec, ImageParams

    write_small_images(tmp_path / "raw", ["ok.png"])
    (tmp_path / "raw" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    report = bake(
        BakeSpec(
            sources=(str(tmp_path / "raw"),),
            output=str(tmp_path / "cache"),
            image=ImageParams(height=8, width=8),
        )
    )
    assert (report.inputs, report.baked, report.rejected) == (2, 1, 1)
    assert "FileNotFoundError" in str(report.rejected_by_reason)
