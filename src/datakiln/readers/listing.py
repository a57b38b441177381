"""Listing raw inputs through fsspec: globs, folders and single files, in a stable order."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import fsspec

from datakiln.cache.layout import is_local
from datakiln.errors import SourceError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".gif",
    ".bmp",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
    ".pbm",
)
# Audio files taken from folders: what libsndfile (soundfile) decodes.
AUDIO_EXTENSIONS = (
    ".wav",
    ".wave",
    ".flac",
    ".ogg",
    ".oga",
    ".opus",
    ".mp3",
    ".aif",
    ".aiff",
    ".aifc",
    ".au",
    ".snd",
    ".caf",
    ".w64",
    ".rf64",
)
_GLOB_CHARS = "*?["


@dataclass(frozen=True, slots=True)
class InputFile:
    """One raw input: where it is and what identifies its current content."""

    uri: str
    size: int
    version: str  # mtime, etag or generation: changes when the content changes

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "size": self.size, "version": self.version}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputFile:
        return cls(uri=data["uri"], size=int(data["size"]), version=str(data["version"]))


def _version(info: Mapping[str, Any]) -> str:
    for key in (
        "ETag",
        "etag",
        "generation",
        "md5Hash",
        "mtime",
        "LastModified",
        "last_modified",
        "created",
    ):
        value = info.get(key)
        if value is not None:
            return f"{key}={value}"
    return ""


def _open_fs(source: str, storage_options: Mapping[str, Any]) -> tuple[Any, str]:
    try:
        fs_and_path: tuple[Any, str] = fsspec.core.url_to_fs(source, **dict(storage_options))
        return fs_and_path
    except (ValueError, ImportError) as err:
        protocol = source.split("://", 1)[0] if "://" in source else "file"
        raise SourceError(
            f"cannot read {source!r}: protocol {protocol!r} is not available ({err}); "
            "check the URL or install the fsspec implementation for it"
        ) from err


def list_inputs(
    sources: Iterable[str],
    storage_options: Mapping[str, Any] | None = None,
    *,
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
) -> list[InputFile]:
    """List every input named by ``sources``, sorted by URI, without duplicates.

    A glob matches files; a folder is searched recursively for ``extensions``; a file is taken
    as it is. A source that names nothing raises ``SourceError``.
    """
    found: dict[str, InputFile] = {}
    for source in sources:
        try:
            _list_one(source, storage_options or {}, extensions, found)
        except SourceError:
            raise
        except Exception as err:  # the store said no: credentials, permissions, network
            raise SourceError(access_hint(source, err)) from err
    return [found[uri] for uri in sorted(found)]


def access_hint(url: str, err: BaseException, verb: str = "read") -> str:
    """One actionable line for a store that refused or could not be reached."""
    text = f"{type(err).__name__}: {err}"
    if any(
        w in text.lower()
        for w in (
            "credential",
            "accessdenied",
            "access denied",
            "forbidden",
            "permission",
            "signature",
        )
    ):
        hint = (
            "check the credentials: the standard AWS/GCS environment variables or "
            "storage_options in the spec"
        )
    else:
        hint = "check the URL, the network and the store's endpoint"
    return f"cannot {verb} {url!r} ({text}); {hint}"


def _list_one(
    source: str,
    storage_options: Mapping[str, Any],
    extensions: tuple[str, ...],
    found: dict[str, InputFile],
) -> None:
    fs, path = _open_fs(source, storage_options)
    if any(c in path for c in _GLOB_CHARS):
        entries = fs.glob(path, detail=True)
        what = "glob"
    elif fs.isdir(path):
        if is_local(fs):
            # A local walk gives absolute POSIX paths, whose URL is "file://" + path (fsspec's
            # unstrip_protocol re-parses each one: a third of listing a 10k-file folder).
            listed = _walk_local(path, extensions)
            if not listed:
                raise SourceError(
                    f"source {source!r} (folder) matched no files (looked for "
                    f"{', '.join(extensions)})"
                )
            found.update((i.uri, i) for i in listed)
            logger.debug("source %s: %d files", source, len(listed))
            return
        entries = {
            p: info
            for p, info in fs.find(path, detail=True).items()
            if p.lower().endswith(extensions)
        }
        what = "folder"
    elif fs.exists(path):
        entries = {path: fs.info(path)}
        what = "file"
    else:
        raise SourceError(f"source {source!r} does not exist; check the path or URL")
    # Local symlinks list as "other" with the link's own mtime: describe their targets.
    entries = {p: fs.info(p) if info.get("islink") else info for p, info in entries.items()}
    files = {p: info for p, info in entries.items() if info.get("type", "file") == "file"}
    if not files:
        hint = (
            f" (looked for {', '.join(extensions)})"
            if what == "folder"
            else "; quote the glob so the shell does not expand it, and check the pattern"
        )
        raise SourceError(f"source {source!r} ({what}) matched no files{hint}")
    for p, info in files.items():
        uri = fs.unstrip_protocol(p)
        found[uri] = InputFile(uri=uri, size=int(info.get("size") or 0), version=_version(info))
    logger.debug("source %s: %d files", source, len(files))


def _walk_local(root: str, extensions: tuple[str, ...]) -> list[InputFile]:
    """The regular files under a local folder that end in ``extensions``, as inputs.

    What ``fs.find(root, detail=True)`` then ``fs.info`` of each link would list, with one
    ``stat`` per file instead of fsspec's two and no per-file dict (a million-file tree: the
    dicts were most of the listing's memory): symlinks described by their targets, links to
    folders not followed (as fsspec), a version of ``mtime=<float>`` as ``_version`` gives
    for fsspec's entries. A dangling link is listed (size 0, no version), so that the bake
    rejects it with its reason rather than failing.
    """
    listed: list[InputFile] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as scan:
            for entry in scan:
                path = f"{folder}/{entry.name}"
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(path)
                        continue
                    if not entry.name.lower().endswith(extensions):
                        continue
                    st = entry.stat()
                except FileNotFoundError:
                    if entry.is_symlink():  # dangling: listed, so the bake rejects it by name
                        listed.append(InputFile(uri=f"file://{path}", size=0, version=""))
                    continue  # else removed since the scan saw it
                if stat.S_ISREG(st.st_mode):
                    listed.append(
                        InputFile(
                            uri=f"file://{path}", size=st.st_size, version=f"mtime={st.st_mtime}"
                        )
                    )
    return listed
