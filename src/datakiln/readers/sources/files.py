"""Plain files as record sources: each image or audio file is one record.

Its columns are ``file`` (the file itself, fetched when a media field reads it), ``name`` (the
file name), ``stem`` (without its ending) and ``parent`` (the folder's name, the usual class
label). So a folder of class folders bakes as records with
``--fields images=image:file,labels=label:parent``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from datakiln.readers.listing import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, InputFile
from datakiln.readers.sources import FileRef, ReadResult, Record, RecordUnit, register_source

COLUMNS = ("file", "name", "stem", "parent")


class FileSource:
    """Plain media files as records, one per file (the source of image and audio bakes)."""

    name = "file"
    extensions = IMAGE_EXTENSIONS + AUDIO_EXTENSIONS

    def columns(self, inp: InputFile, storage_options: Mapping[str, Any]) -> Sequence[str]:
        return COLUMNS

    def column_values(
        self, inp: InputFile, column: str, storage_options: Mapping[str, Any]
    ) -> list[Any]:
        """The file's ``name``, ``stem`` or ``parent`` (label fields learn class names)."""
        values = _values(inp.uri)
        return [values[column]] if column in values and column != "file" else []

    def plan(
        self,
        inp: InputFile,
        storage_options: Mapping[str, Any],
        *,
        records_per_unit: int,
        path_columns: Sequence[str],
    ) -> list[RecordUnit]:
        return [RecordUnit(source=self.name, input=inp, start=0, end=1)]

    def read(self, unit: RecordUnit, storage_options: Mapping[str, Any]) -> ReadResult:
        values: dict[str, Any] = {**_values(unit.input.uri), "file": FileRef(unit.input.uri)}
        return ReadResult(records=[Record(key=values["name"], position=0, values=values)])


def _values(uri: str) -> dict[str, str]:
    path = uri.split("://", 1)[-1]
    name = posixpath.basename(path)
    return {
        "name": name,
        "stem": name.split(".", 1)[0],
        "parent": posixpath.basename(posixpath.dirname(path)),
    }


SOURCE = register_source(FileSource())
