"""Versions of the files that records name, listed once per folder at plan time.

The cache key covers every referenced file by version, so a changed image behind an unchanged
table rebakes the shard that holds it. A file that does not exist gets the version
``"missing"``: its record is rejected at bake time, and the file appearing later changes the key.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec

from datakiln.readers.listing import InputFile, _version

MISSING = "missing"
# Folders listed concurrently (object stores answer one listing per request).
LIST_THREADS = 8


def stat_refs(uris: Iterable[str], storage_options: Mapping[str, Any]) -> dict[str, InputFile]:
    """``uri -> InputFile`` (size and version) of every uri, by one listing per folder."""
    by_folder: dict[tuple[str, str], list[str]] = {}
    for uri in set(uris):
        protocol = uri.split("://", 1)[0] if "://" in uri else "file"
        by_folder.setdefault((protocol, posixpath.dirname(uri)), []).append(uri)

    def list_folder(item: tuple[tuple[str, str], list[str]]) -> dict[str, InputFile]:
        (_, folder), members = item
        fs, path = fsspec.core.url_to_fs(folder, **dict(storage_options))
        try:
            listing = {
                posixpath.basename(info["name"].rstrip("/")): info
                for info in fs.ls(path, detail=True)
            }
        except (FileNotFoundError, NotADirectoryError):
            listing = {}
        out = {}
        for uri in members:
            info = listing.get(posixpath.basename(uri))
            if info is not None and info.get("islink"):
                try:
                    info = fs.info(fs._strip_protocol(uri))
                except FileNotFoundError:
                    info = None
            if info is None or info.get("type", "file") != "file":
                out[uri] = InputFile(uri=uri, size=0, version=MISSING)
            else:
                out[uri] = InputFile(uri, int(info.get("size") or 0), _version(info))
        return out

    found: dict[str, InputFile] = {}
    with ThreadPoolExecutor(LIST_THREADS) as pool:
        for part in pool.map(list_folder, by_folder.items()):
            found.update(part)
    return found
