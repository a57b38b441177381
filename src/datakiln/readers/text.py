r"""Text sources: read samples from ``.txt``, ``.jsonl``, ``.csv``/``.tsv`` and ``.parquet`` files.

Every source is read through fsspec, so any URL fsspec understands works. A large
line-oriented file is never read whole by one task: ``plan_text_ranges`` cuts it into byte
ranges that start at line starts, and ``read_text_range`` reads one range, so a task's memory
is bounded by the range size (Parquet files are cut into runs of row groups instead).

Decoding rules, the same for every format:

* UTF-8 by default; a UTF-8 byte-order mark at the start of a file is dropped. ``encoding=``
  takes any Python codec, or ``"auto"``: each file's codec is detected once, when the bake is
  planned, from a bounded sample (``detect_text_encoding``); the range readers take the
  detected codec, so every range of a file is read alike. Codecs in
  which ``"\n"`` is the byte ``0x0A`` (UTF-8, Latin-1, cp1252, Shift-JIS, GB18030, ...) are
  split by byte range; the others (UTF-16, UTF-32, given or detected from a byte-order mark)
  are read whole, one range per file.
* Line endings: ``"\r\n"`` becomes ``"\n"``, in line splitting and inside every text returned.
  A file with ``"\r"`` but no ``"\n"`` has classic Mac OS line endings: there a ``"\r"`` ends
  each line (a lone ``"\r"`` in a file of ``"\n"`` lines stays in its line).
* Invalid bytes follow ``errors``: ``"reject"`` turns the sample (the line, or the whole file in
  one-per-file mode) into a ``Rejection`` at stage ``decode``; ``"replace"`` decodes them as
  U+FFFD.
* Binary files posing as text: a range whose first ``BINARY_SNIFF_BYTES`` hold a NUL byte is
  rejected whole (stage ``decode``, ``BinaryContent``), as is any other line holding one
  (ASCII-compatible codecs only, since UTF-16 text is full of NULs).
* Empty samples (nothing but whitespace, a JSON null, an empty file) are skipped and returned
  as rejections with ``error_type == "EmptySample"`` at stage ``validate``, so that
  ``samples == records + rejections`` and none is lost silently.

Positions: ``TextRecord.position`` and ``Rejection.position`` are the byte offset of the
sample's first byte in the file for line-oriented formats (stable however the file is cut;
for the whole-file codecs UTF-16/32 it is the 0-based line number instead), the row index in
the file for Parquet, and 0 for one-sample-per-file text.

CSV/TSV: the first line of the file is the header; ``field`` names a column. A quoted field
may span lines only within one range: if a cut falls inside such a field the rows around it
come out malformed and are rejected (plan with ``target_bytes >= size`` for such files).
Fields longer than Python's ``csv.field_size_limit()`` (128 KiB by default) are rejected.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import itertools
import json
import logging
import os
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np

from datakiln.errors import SpecError
from datakiln.readers.encoding import (
    AUTO_ENCODING,
    FALLBACK_ENCODING,
    detect_file_encoding,
    detect_values_encoding,
)
from datakiln.readers.rejections import (
    EMPTY_SAMPLE,
    STAGE_DECODE,
    STAGE_FETCH,
    STAGE_PARSE,
    STAGE_VALIDATE,
    Rejection,
    redact_url,
)

if TYPE_CHECKING:
    from fsspec.spec import AbstractFileSystem

logger = logging.getLogger(__name__)

TEXT_FORMATS = ("txt", "jsonl", "csv", "tsv", "parquet")
# File name endings and the format they are read as (``infer_text_format``).
TEXT_EXTENSIONS: Mapping[str, str] = types.MappingProxyType(
    {
        ".txt": "txt",
        ".text": "txt",
        ".jsonl": "jsonl",
        ".ndjson": "jsonl",
        ".csv": "csv",
        ".tsv": "tsv",
        ".parquet": "parquet",
        ".pq": "parquet",
    }
)
ERROR_POLICIES = ("reject", "replace")
# A range whose first this-many bytes hold a NUL byte is binary, not text (git's rule).
BINARY_SNIFF_BYTES = 8192
# Default byte size of one range of a line-oriented file (``plan_text_ranges``).
DEFAULT_TARGET_BYTES = 64 * 2**20
# Block size for scanning forward to the next line start when planning.
_SCAN_BYTES = 64 * 2**10
# Block size for counting the lines of a range (``split_line_range``).
_COUNT_BYTES = 2**20
_UTF8_BOM = codecs.BOM_UTF8
# Codecs (canonical name prefixes) whose decoding carries state from byte to byte (escape
# sequences, shifts): their lines are decoded one by one, never a range at once.
_STATEFUL_CODECS = ("iso2022", "utf-7", "hz")


@dataclasses.dataclass(frozen=True, slots=True)
class TextRecord:
    r"""One text sample and where it came from.

    Attributes:
        text: The decoded sample, ``"\r\n"`` normalised to ``"\n"``; never only whitespace.
        uri: The source file.
        position: Byte offset of the sample in the file (line formats), row index (Parquet) or
            0 (one sample per file); see the module docstring.
    """

    text: str
    uri: str
    position: int


def infer_text_format(url: str) -> str:
    """The text format of ``url`` by its file name ending, one of ``TEXT_FORMATS``.

    Raises:
        SpecError: The ending is not one of ``TEXT_EXTENSIONS``.
    """
    ext = os.path.splitext(url.rstrip("/"))[1].lower()
    try:
        return TEXT_EXTENSIONS[ext]
    except KeyError:
        raise SpecError(
            f"cannot tell the text format of {url!r} from its ending {ext!r}; known endings: "
            f"{sorted(TEXT_EXTENSIONS)}. Pass fmt= one of {TEXT_FORMATS}."
        ) from None


def plan_text_ranges(
    url: str,
    size: int,
    target_bytes: int = DEFAULT_TARGET_BYTES,
    *,
    fmt: str | None = None,
    one_per_file: bool = False,
    encoding: str = "utf-8",
    storage_options: Mapping[str, Any] | None = None,
) -> list[tuple[int, int]]:
    """Cut one text file into ranges of about ``target_bytes`` for ``read_text_range``.

    Line-oriented files (txt, jsonl, csv, tsv) are cut into byte ranges ``[start, end)`` that
    cover ``[0, size)`` without gaps, each starting at a line start; the planner reads a few
    bytes after each nominal cut to find the next line start, never the whole file. A line
    longer than ``target_bytes`` makes its range longer. Parquet files are cut into runs of
    whole row groups, returned as row-group index ranges ``[first, last)``. One-per-file text,
    ASCII-incompatible codecs and files of at most ``target_bytes`` give one range.

    Args:
        url: The file (any fsspec URL).
        size: Its size in bytes, from the listing.
        target_bytes: Wanted bytes per range (compressed bytes for Parquet).
        fmt: One of ``TEXT_FORMATS``; ``None`` infers it from the file name.
        one_per_file: Text files hold one sample each (no cutting).
        encoding: The file's codec (decides whether byte ranges are possible).
        storage_options: fsspec options for ``url``.

    Returns:
        The ranges, in file order; ``[(0, 0)]`` for an empty file (so that reading it reports
        the empty file).

    Raises:
        SpecError: Bad ``fmt``, ``target_bytes`` or ``encoding``.
        OSError: The file cannot be opened or read.
    """
    fmt = _check_format(url, fmt)
    if target_bytes < 1:
        raise SpecError(f"target_bytes must be a positive number of bytes, got {target_bytes}")
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    if fmt == "parquet":
        return _plan_parquet(fs, path, target_bytes)
    _, ascii_compatible = _check_codec(encoding)
    if size <= target_bytes or one_per_file or not ascii_compatible:
        return [(0, size)]
    cuts = [0]
    with fs.open(path, "rb") as f:
        nominal = target_bytes
        while nominal < size:
            cut = _next_line_start(f, nominal, size)
            if cut >= size:
                break
            cuts.append(cut)
            nominal = cut + target_bytes
    cuts.append(size)
    logger.debug("planned %d ranges for %s", len(cuts) - 1, redact_url(url))
    return list(itertools.pairwise(cuts))


def split_line_range(
    url: str,
    start: int,
    end: int,
    max_lines: int | None,
    *,
    fmt: str | None = None,
    encoding: str = "utf-8",
    storage_options: Mapping[str, Any] | None = None,
) -> list[tuple[int, int, int]]:
    """Count the lines of one range of a line-oriented file, cutting it every ``max_lines``.

    Reads ``[start, end)`` in blocks of ``_COUNT_BYTES`` (memory stays bounded) and returns
    sub-ranges ``(start, end, lines)`` that cover it without gaps, each starting at a line
    start, where ``lines`` (newlines, plus one for a last line without one) bounds the samples
    ``read_text_range`` can return for the sub-range. A sub-range is cut after its
    ``max_lines``-th line, or at the first later line end where a cut is safe: for CSV/TSV,
    where an even number of ``"`` lies between the range start and the line end (not inside a
    quoted field, for well-formed files). Codecs that are not ASCII-compatible (UTF-16/32)
    are never cut, and count their 0x0A bytes, an upper bound on their lines.

    Args:
        url: The file (any fsspec URL).
        start: The range's first byte, from ``plan_text_ranges`` (at a line start).
        end: The byte after the range's last.
        max_lines: Lines per sub-range; ``None`` never cuts.
        fmt: One of ``"txt"``, ``"jsonl"``, ``"csv"``, ``"tsv"``; ``None`` infers it.
        encoding: The file's codec.
        storage_options: fsspec options for ``url``.

    Raises:
        SpecError: A Parquet file, or a bad codec.
        OSError: The file cannot be read.
    """
    import numpy as np

    fmt = _check_format(url, fmt)
    if fmt == "parquet":
        raise SpecError(f"{url!r}: Parquet files are cut by row groups, not lines")
    _, cuttable = _check_codec(encoding)
    if max_lines is None or not cuttable:
        max_lines = None
    quoted = fmt in ("csv", "tsv")
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    units: list[tuple[int, int, int]] = []
    unit_start, lines, quotes, pos, last = start, 0, 0, start, ord("\n")
    returns, seen_newline = 0, False  # a range without "\n" has its lines end at "\r"
    with fs.open(path, "rb") as f:
        f.seek(start)
        while pos < end:
            block = f.read(min(_COUNT_BYTES, end - pos))
            if not block:
                break
            data = np.frombuffer(block, dtype=np.uint8)
            newlines = np.flatnonzero(data == ord("\n"))
            returns += int(np.count_nonzero(data == ord("\r")))
            seen_newline = seen_newline or bool(newlines.size)
            taken = 0  # newlines of this block already counted
            if max_lines is not None and newlines.size:
                if quoted:
                    running = np.cumsum(data == ord('"'), dtype=np.int64) + quotes
                    safe = (running[newlines] & 1) == 0
                    quotes = int(running[-1])
                else:
                    safe = np.ones(newlines.size, dtype=bool)
                while True:
                    k = taken + max(max_lines - lines, 1) - 1
                    later = np.flatnonzero(safe[k:]) if k < newlines.size else np.empty(0, int)
                    if not len(later):
                        break
                    j = k + int(later[0])
                    cut = pos + int(newlines[j]) + 1
                    lines += j - taken + 1
                    taken = j + 1
                    if cut >= end:
                        break
                    units.append((unit_start, cut, lines))
                    unit_start, lines = cut, 0
            lines += newlines.size - taken
            last = block[-1]
            pos += len(block)
    tail = 1 if pos > unit_start and last != ord("\n") else 0
    if not seen_newline and returns:  # classic Mac OS line endings (see read_lines)
        lines, tail = returns, 1 if last != ord("\r") else 0
    elif not cuttable:  # UTF-16/32: 0x0A and 0x0D bytes both bound the lines from above
        lines = max(lines, returns)
    units.append((unit_start, end, lines + tail))
    return units


def read_text_range(
    url: str,
    start: int,
    end: int,
    *,
    fmt: str,
    field: str | None = None,
    one_per_file: bool = False,
    encoding: str = "utf-8",
    errors: str = "reject",
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[list[TextRecord], list[Rejection]]:
    """Read the samples of one range from ``plan_text_ranges``.

    Bad samples never raise: each becomes a ``Rejection`` (with reasons ``UnicodeDecodeError``,
    ``BinaryContent``, ``JSONDecodeError``, ``MissingField``, ``NotText``, ``MalformedRow``,
    ``EmptySample``, or the ``OSError`` class name when the bytes cannot be fetched), and the
    rest are returned. Deterministic; safe to call from several threads.

    Args:
        url: The file (any fsspec URL).
        start: First byte of the range (a line start), or first row group (Parquet).
        end: One past the last byte, or past the last row group.
        fmt: One of ``TEXT_FORMATS``.
        field: The JSON key (jsonl) or column name (csv, tsv, parquet) that holds the text;
            required for those formats, not allowed for txt.
        one_per_file: For txt: the whole file is one sample (the range must be ``(0, size)``).
        encoding: The codec of the file's bytes (Parquet strings are always UTF-8; binary
            Parquet columns are decoded with it).
        errors: ``"reject"`` or ``"replace"``: what to do with bytes the codec cannot decode.
        storage_options: fsspec options for ``url``.

    Returns:
        ``(records, rejections)``, each in file order.

    Raises:
        SpecError: A bad argument (unknown format, codec or policy; missing or stray field).
    """
    reader = _read_range(
        url, start, end, fmt, field, one_per_file, encoding, errors, storage_options
    )
    return reader.records, reader.rejections


@dataclasses.dataclass(frozen=True, slots=True)
class TextColumns:
    """The samples of one range as columns (what a bake needs, without an object per line).

    Attributes:
        uri: The source file.
        texts: The samples, as ``TextRecord.text``.
        positions: Their positions, as ``TextRecord.position``.
    """

    uri: str
    texts: list[str]
    positions: list[int]


def read_text_columns(
    url: str,
    start: int,
    end: int,
    *,
    fmt: str,
    field: str | None = None,
    one_per_file: bool = False,
    encoding: str = "utf-8",
    errors: str = "reject",
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[TextColumns, list[Rejection]]:
    """``read_text_range`` with the samples as :class:`TextColumns`; same arguments."""
    reader = _read_range(
        url, start, end, fmt, field, one_per_file, encoding, errors, storage_options
    )
    return TextColumns(reader.uri, reader.texts, reader.positions), reader.rejections


def _read_range(
    url: str,
    start: int,
    end: int,
    fmt: str,
    field: str | None,
    one_per_file: bool,
    encoding: str,
    errors: str,
    storage_options: Mapping[str, Any] | None,
) -> _RangeReader:
    fmt = _check_format(url, fmt)
    codec, ascii_compatible = _check_codec(encoding)
    if errors not in ERROR_POLICIES:
        raise SpecError(f"errors must be one of {ERROR_POLICIES}, got {errors!r}")
    if fmt == "txt" and field is not None:
        raise SpecError(f"field= is not used by fmt='txt' (got {field!r}); leave it None")
    if fmt != "txt" and not field:
        raise SpecError(f"fmt={fmt!r} needs field= naming the key or column that holds the text")
    if one_per_file and fmt != "txt":
        raise SpecError(f"one_per_file=True applies to fmt='txt' only, not {fmt!r}")
    if not 0 <= start <= end:
        raise SpecError(f"bad range [{start}, {end}) for {url!r}: need 0 <= start <= end")
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    reader = _RangeReader(url, codec, errors, ascii_compatible=ascii_compatible)
    try:
        if fmt == "parquet":
            assert field is not None
            reader.read_parquet(fs, path, start, end, field)
        else:
            data = fs.cat_file(path, start, end) if end > start else b""
            if one_per_file:
                reader.read_whole(data)
            elif not ascii_compatible:
                reader.read_whole_lines(data, fmt, field, fs, path)
            else:
                reader.read_lines(data, start, fmt, field, fs, path)
    except OSError as err:
        reader.rejections.append(Rejection.from_error(url, STAGE_FETCH, err, position=start))
    logger.debug(
        "read %s [%d, %d): %d records, %d rejected",
        redact_url(url),
        start,
        end,
        len(reader.texts),
        len(reader.rejections),
    )
    return reader


def detect_text_encoding(
    url: str,
    *,
    fmt: str | None = None,
    field: str | None = None,
    size: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """The codec to read ``url`` with under ``encoding="auto"``, detected once per file.

    Line-oriented files: ``detect_file_encoding`` over a bounded sample of the file's bytes.
    Parquet: ``"utf-8"`` for a string column (Parquet strings are UTF-8 by definition) or a
    file whose footer is unreadable (the reader then rejects it); for a binary column, the
    detection over the column's values in the first row groups, up to the sample bound.

    Raises:
        SpecError: Bad ``fmt``.
        OSError: The file cannot be read.
    """
    fmt = _check_format(url, fmt)
    if fmt != "parquet":
        return detect_file_encoding(url, size, storage_options)
    if field is None:
        return FALLBACK_ENCODING
    return detect_values_encoding(_parquet_binary_sample(url, field, storage_options))


def _parquet_binary_sample(
    url: str, field: str, storage_options: Mapping[str, Any] | None
) -> list[bytes]:
    """Values of binary column ``field`` from the first row groups (none for other columns)."""
    import pyarrow as pa

    from datakiln.readers.encoding import SAMPLE_PIECE_BYTES, SAMPLE_PIECES

    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    try:
        parquet = _SparseParquet(fs, path)
        schema = parquet.file.schema_arrow
        if field not in schema.names:
            return []
        kind = schema.field(field).type
        if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
            return []
        values: list[bytes] = []
        total = 0
        for i in range(parquet.file.metadata.num_row_groups):
            for value in parquet.read_column(i, field).to_pylist():
                if value:
                    values.append(value)
                    total += len(value)
            if total >= SAMPLE_PIECES * SAMPLE_PIECE_BYTES:
                break
        return values
    except (pa.ArrowException, ValueError):  # unreadable: the reader rejects it
        return []


# ----------------------------------------------------------------------------------------------


def _check_format(url: str, fmt: str | None) -> str:
    if fmt is None:
        return infer_text_format(url)
    if fmt not in TEXT_FORMATS:
        raise SpecError(f"unknown text format {fmt!r} for {url!r}; use one of {TEXT_FORMATS}")
    return fmt


def codec_name(encoding: str) -> str:
    """The canonical name of the codec ``encoding`` is read with.

    As recorded in a cache's metadata: ``"utf8"`` -> ``"utf-8"``, ``"latin-1"`` ->
    ``"iso8859-1"``.

    Raises:
        SpecError: Not a Python codec, or ``"auto"`` (detect first).
    """
    return _check_codec(encoding)[0]


def _check_codec(encoding: str) -> tuple[str, bool]:
    r"""The codec's canonical name, and whether ``"\n"`` is the single byte 0x0A in it."""
    if encoding == AUTO_ENCODING:
        raise SpecError(
            "encoding='auto' is resolved once per file, not per range: detect the file's codec "
            "with datakiln.readers.encoding.detect_file_encoding(url) and pass it as encoding="
        )
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise SpecError(f"unknown text encoding {encoding!r}; use a Python codec name") from None
    if name == "utf-8-sig":  # we drop the BOM ourselves, only at the start of the file
        name = "utf-8"
    try:
        ascii_compatible = "\n a".encode(name) == b"\n a"
    except UnicodeError:  # pragma: no cover - codecs that cannot even encode ASCII
        ascii_compatible = False
    return name, ascii_compatible


def _next_line_start(f: Any, pos: int, size: int) -> int:
    """The first line start at or after ``pos`` (a position just after a newline)."""
    f.seek(pos - 1)
    scanned = pos - 1
    while scanned < size:
        block = f.read(_SCAN_BYTES)
        if not block:
            break
        i: int = block.find(b"\n")
        if i >= 0:
            return scanned + i + 1
        scanned += len(block)
    return size


def _read_first_line(fs: AbstractFileSystem, path: str) -> bytes:
    """The file's first line, without its newline (the CSV header of a later range)."""
    chunks = []
    with fs.open(path, "rb") as f:
        while True:
            block = f.read(_SCAN_BYTES)
            if not block:
                break
            i = block.find(b"\n")
            if i >= 0:
                chunks.append(block[:i])
                break
            chunks.append(block)
    return b"".join(chunks)


def _plan_parquet(fs: AbstractFileSystem, path: str, target_bytes: int) -> list[tuple[int, int]]:
    import pyarrow as pa

    try:
        meta = _SparseParquet(fs, path).file.metadata
    except (pa.ArrowException, ValueError):  # unreadable: one range, rejected by the reader
        return [(0, 0)]
    n = meta.num_row_groups
    if n == 0:
        return [(0, 0)]
    ranges = []
    first, acc = 0, 0
    for i in range(n):
        acc += meta.row_group(i).total_byte_size
        if acc >= target_bytes:
            ranges.append((first, i + 1))
            first, acc = i + 1, 0
    if first < n:
        ranges.append((first, n))
    return ranges


def parquet_row_counts(url: str, storage_options: Mapping[str, Any] | None = None) -> list[int]:
    """Rows of each row group of a Parquet file, from its footer alone (``[]`` if unreadable).

    The planner uses them as the sample bound of a run of row groups.
    """
    import pyarrow as pa

    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    try:
        meta = _SparseParquet(fs, path).file.metadata
    except (pa.ArrowException, ValueError):
        return []
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


def _parse(parse: Any) -> Any:
    """Run a pyarrow parse of bytes already in memory.

    Its ``OSError`` (such as "Couldn't deserialize thrift") means damaged bytes, not I/O,
    so it becomes ``ArrowInvalid``.
    """
    import pyarrow as pa

    try:
        return parse()
    except pa.ArrowException:
        raise
    except OSError as err:
        raise pa.ArrowInvalid(f"damaged Parquet data: {err}") from err


class _SparseParquet:
    """A Parquet file seen by pyarrow as an in-memory buffer that holds only what was fetched.

    pyarrow reading through a Python file object (``pq.ParquetFile(fsspec_file)``), or with
    its thread pools (``use_threads=True``, pre-buffering), can abort the interpreter at exit
    ("terminate called without an active exception", status 134) in a process that has also
    started jax. So pyarrow only ever gets a ``BufferReader`` and reads on one thread. The
    buffer is as long as the file but zero-allocated (``calloc``: pages never written take no
    memory); the footer is fetched on open and each column chunk before its row group is
    read, so memory is bounded by the footer and the chunks read, not by the file.
    """

    def __init__(self, fs: AbstractFileSystem, path: str) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._fs, self._path = fs, path
        size = int(fs.size(path))
        tail = fs.cat_file(path, start=max(0, size - 8)) if size >= 12 else b""
        if len(tail) != 8 or tail[4:] != b"PAR1":
            raise pa.ArrowInvalid(
                f"not a Parquet file: no PAR1 footer in its last 8 bytes ({size} bytes)"
            )
        footer = int.from_bytes(tail[:4], "little")
        if not 0 < footer <= size - 12:
            raise pa.ArrowInvalid(f"corrupt Parquet footer length {footer} in a {size}-byte file")
        self._buffer = np.zeros(size, dtype=np.uint8)
        self._buffer[:4] = np.frombuffer(b"PAR1", np.uint8)
        start = size - 8 - footer
        self._put(start, fs.cat_file(path, start=start, end=size))
        self._whole = False
        self.file = _parse(
            lambda: pq.ParquetFile(pa.BufferReader(pa.py_buffer(self._buffer)), pre_buffer=False)
        )

    def _put(self, start: int, data: bytes) -> None:
        import numpy as np

        self._buffer[start : start + len(data)] = np.frombuffer(data, np.uint8)

    def read_column(self, row_group: int, field: str) -> Any:
        """Column ``field`` of ``row_group`` as a pyarrow array, fetching its bytes first."""
        import pyarrow as pa

        meta = self.file.metadata.row_group(row_group)
        for j in range(meta.num_columns):
            column = meta.column(j)
            if column.path_in_schema != field and not column.path_in_schema.startswith(f"{field}."):
                continue
            offsets = [column.data_page_offset]
            if column.has_dictionary_page and column.dictionary_page_offset:
                offsets.append(column.dictionary_page_offset)
            start = min(offsets)
            end = min(start + column.total_compressed_size, len(self._buffer))
            if not self._whole:
                self._put(start, self._fs.cat_file(self._path, start=start, end=end))

        def read() -> Any:
            return self.file.read_row_group(row_group, columns=[field], use_threads=False)

        try:
            return _parse(read).column(0)
        except pa.ArrowException:
            if self._whole:
                raise
            # A writer whose chunk offsets do not cover its pages: fall back to the whole file.
            self._put(0, self._fs.cat_file(self._path))
            self._whole = True
            return _parse(read).column(0)


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n") if "\r" in text else text


class _RangeReader:
    """Accumulates the records and rejections of one range (one call, one thread)."""

    def __init__(self, uri: str, codec: str, errors: str, *, ascii_compatible: bool) -> None:
        self.uri = uri
        self.codec = codec
        self.errors = errors
        self.ascii_compatible = ascii_compatible
        # whether a range may be decoded whole and then split at "\n" (``_decode_lines_at_once``)
        self.split_after_decode = ascii_compatible and not codec.startswith(_STATEFUL_CODECS)
        # Samples as two columns (a bake reads ~10^5 lines a shard: no object per line)
        self.texts: list[str] = []
        self.positions: list[int] = []
        self.rejections: list[Rejection] = []

    @property
    def records(self) -> list[TextRecord]:
        return [TextRecord(t, self.uri, p) for t, p in zip(self.texts, self.positions, strict=True)]

    def reject(self, stage: str, error_type: str, message: str, position: int | None) -> None:
        self.rejections.append(Rejection(self.uri, stage, error_type, message, position))

    def add(self, text: str, position: int) -> None:
        text = _normalise(text)
        if text.strip():
            self.texts.append(text)
            self.positions.append(position)
        else:
            self.reject(STAGE_VALIDATE, EMPTY_SAMPLE, "empty sample (only whitespace)", position)

    def decode(self, raw: bytes, position: int, *, check_nul: bool) -> str | None:
        """``raw`` decoded by the policy, or ``None`` after recording why it was rejected."""
        if check_nul and b"\x00" in raw:
            where = position + raw.index(b"\x00")
            self.reject(STAGE_DECODE, "BinaryContent", f"NUL byte at offset {where}", position)
            return None
        try:
            return raw.decode(self.codec, "strict" if self.errors == "reject" else "replace")
        except UnicodeDecodeError as err:
            self.reject(
                STAGE_DECODE,
                type(err).__name__,
                f"invalid {self.codec} at byte offset {position + err.start}: {err.reason} "
                f"({raw[err.start : err.start + 4]!r}); use errors='replace' to keep such "
                "samples with U+FFFD",
                position,
            )
            return None

    def _sniff_binary(self, data: bytes, position: int) -> bool:
        nul = data.find(b"\x00", 0, BINARY_SNIFF_BYTES)
        if nul < 0:
            return False
        self.reject(
            STAGE_DECODE,
            "BinaryContent",
            f"binary data, not text: NUL byte at offset {position + nul}; "
            f"{len(data)} bytes from offset {position} skipped",
            position,
        )
        return True

    # -- one sample per file ---------------------------------------------------------------

    def read_whole(self, data: bytes) -> None:
        if not data:
            self.reject(STAGE_VALIDATE, EMPTY_SAMPLE, "empty file", 0)
            return
        if self.ascii_compatible and self._sniff_binary(data, 0):
            return
        if self.codec == "utf-8" and data.startswith(_UTF8_BOM):
            data = data[len(_UTF8_BOM) :]
        text = self.decode(data, 0, check_nul=False)
        if text is not None:
            self.add(text.removeprefix("\ufeff"), 0)

    # -- line-oriented formats -------------------------------------------------------------

    def read_lines(
        self,
        data: bytes,
        start: int,
        fmt: str,
        field: str | None,
        fs: AbstractFileSystem,
        path: str,
    ) -> None:
        if not data:
            if start == 0:
                self.reject(STAGE_VALIDATE, EMPTY_SAMPLE, "empty file", 0)
            return
        if self._sniff_binary(data, start):
            return
        offset = start
        if start == 0 and self.codec == "utf-8" and data.startswith(_UTF8_BOM):
            offset = len(_UTF8_BOM)
            data = data[offset:]
        if start == 0 and b"\r" in data and b"\n" not in data:
            # A file with classic Mac OS line endings: no "\n" to cut it at, so it is one range
            # from 0. In the codecs split by bytes 0x0D is only ever a CR, and replacing it
            # keeps every position.
            data = data.replace(b"\r", b"\n")
        fast = self._decode_lines_at_once(data, offset)
        if fast is not None and fmt == "txt":
            self._add_txt_lines(*fast)
            return
        if fast is not None:
            self._parse_lines(list(zip(*fast, strict=True)), start, fmt, field, fs, path)
            return
        lines = data.split(b"\n")
        if lines[-1] == b"":  # the range ends with a newline: no line after it
            lines.pop()
        decoded: list[tuple[int, str]] = []
        for raw in lines:
            position = offset
            offset += len(raw) + 1
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            text = self.decode(raw, position, check_nul=True)
            if text is not None:
                decoded.append((position, text))
        self._parse_lines(decoded, start, fmt, field, fs, path)

    def _add_txt_lines(self, positions: list[int], lines: list[str]) -> None:
        """Lines of a txt range as samples: all at once unless some are blank."""
        if "" not in lines and not any(map(str.isspace, lines)):
            self.texts.extend(lines)
            self.positions.extend(positions)
            return
        for position, text in zip(positions, lines, strict=True):
            self.add(text, position)  # blank lines become EmptySample rejections

    def _decode_lines_at_once(self, data: bytes, offset: int) -> tuple[list[int], list[str]] | None:
        """``(positions, lines)`` of a range with one decode call, or ``None``.

        ``None`` means: go line by line. CRLF is already normalised.

        Taken only when the whole range decodes without NUL bytes, so every line decodes and
        no per-line rejection can occur, and only for codecs without state across bytes (UTF-8,
        the single-byte codecs, Shift_JIS, EUC, GBK/GB18030, Big5, ...): in these 0x0A is never
        part of a multi-byte character, so the lines are the same either way. Positions are
        byte offsets. (16 MiB of text, measured here: cp1252 1.5 s line by line, 0.26 s at
        once; cp932 2.4 s and 0.61 s; UTF-8 at once 0.34 s.)
        """
        if not self.split_after_decode or b"\x00" in data:
            return None
        try:
            text = data.decode(self.codec)
        except UnicodeDecodeError:
            return None
        lines = text.split("\n")
        if lines[-1] == "":  # the range ends with a newline: no line after it
            lines.pop()
        if data.isascii():  # one byte per character
            sizes = np.fromiter(map(len, lines), np.int64, len(lines))
        else:
            raw = data.split(b"\n")
            sizes = np.fromiter(map(len, raw[: len(lines)]), np.int64, len(lines))
        positions = (offset + np.cumsum(sizes + 1) - (sizes + 1)).tolist()
        if "\r" in text:
            lines = [line[:-1] if line.endswith("\r") else line for line in lines]
        return positions, lines

    def read_whole_lines(
        self, data: bytes, fmt: str, field: str | None, fs: AbstractFileSystem, path: str
    ) -> None:
        """Line formats in codecs such as UTF-16, read whole; positions are line numbers."""
        if not data:
            self.reject(STAGE_VALIDATE, EMPTY_SAMPLE, "empty file", 0)
            return
        text = self.decode(data, 0, check_nul=False)
        if text is None:
            return
        text = _normalise(text.removeprefix("\ufeff"))
        if "\r" in text and "\n" not in text:  # classic Mac OS line endings
            text = text.replace("\r", "\n")
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        self._parse_lines(list(enumerate(lines)), 0, fmt, field, fs, path)

    def _parse_lines(
        self,
        lines: list[tuple[int, str]],
        start: int,
        fmt: str,
        field: str | None,
        fs: AbstractFileSystem,
        path: str,
    ) -> None:
        if fmt == "txt":
            for position, text in lines:
                self.add(text, position)
        elif fmt == "jsonl":
            assert field is not None
            for position, line in lines:
                self._add_json(line, position, field)
        else:
            assert field is not None
            self._add_csv(lines, start, "\t" if fmt == "tsv" else ",", field, fs, path)

    def _add_json(self, line: str, position: int, field: str) -> None:
        if not line.strip():
            self.add(line, position)
            return
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            self.reject(STAGE_PARSE, type(err).__name__, f"invalid JSON: {err}", position)
            return
        if not isinstance(obj, dict) or field not in obj:
            what = f"keys {sorted(obj)[:10]}" if isinstance(obj, dict) else type(obj).__name__
            self.reject(
                STAGE_PARSE, "MissingField", f"no field {field!r} in JSON line ({what})", position
            )
            return
        value = obj[field]
        if value is None:
            self.reject(STAGE_VALIDATE, EMPTY_SAMPLE, f"field {field!r} is null", position)
        elif not isinstance(value, str):
            self.reject(
                STAGE_VALIDATE,
                "NotText",
                f"field {field!r} holds a {type(value).__name__}, not a string",
                position,
            )
        else:
            self.add(value, position)

    def _add_csv(
        self,
        lines: list[tuple[int, str]],
        start: int,
        delimiter: str,
        field: str,
        fs: AbstractFileSystem,
        path: str,
    ) -> None:
        if start == 0:
            if not lines:
                return
            header_line = lines[0][1]
            lines = lines[1:]
        else:
            raw = _read_first_line(fs, path)
            if raw.startswith(_UTF8_BOM) and self.codec == "utf-8":
                raw = raw[len(_UTF8_BOM) :]
            header_line = raw.rstrip(b"\r").decode(self.codec, "replace")
        header = next(csv.reader([header_line], delimiter=delimiter), [])
        if field not in header:
            self.reject(
                STAGE_PARSE,
                "MissingField",
                f"no column {field!r} in the header {header[:20]}; rows from offset {start} "
                "skipped",
                start,
            )
            return
        column = header.index(field)
        reader = csv.reader((text + "\n" for _, text in lines), delimiter=delimiter)
        consumed = 0
        while True:
            position = lines[consumed][0] if consumed < len(lines) else -1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                self.reject(STAGE_PARSE, type(err).__name__, f"bad CSV row: {err}", position)
                consumed = reader.line_num
                continue
            consumed = reader.line_num
            if len(row) <= column:
                if not row or (len(row) == 1 and not row[0].strip()):
                    self.reject(STAGE_VALIDATE, EMPTY_SAMPLE, "empty line", position)
                else:
                    self.reject(
                        STAGE_PARSE,
                        "MalformedRow",
                        f"row has {len(row)} fields, the header has {len(header)}",
                        position,
                    )
                continue
            self.add(row[column], position)

    # -- Parquet ---------------------------------------------------------------------------

    def read_parquet(
        self, fs: AbstractFileSystem, path: str, first: int, last: int, field: str
    ) -> None:
        import pyarrow as pa

        try:
            parquet = _SparseParquet(fs, path)
            names = parquet.file.schema_arrow.names
            if field not in names:
                self.reject(
                    STAGE_PARSE,
                    "MissingField",
                    f"no column {field!r} in the Parquet schema {names[:20]}",
                    None,
                )
                return
            meta = parquet.file.metadata
            row = sum(meta.row_group(i).num_rows for i in range(min(first, meta.num_row_groups)))
            if meta.num_rows == 0 and first == 0:
                self.reject(STAGE_VALIDATE, EMPTY_SAMPLE, "Parquet file has no rows", 0)
            for i in range(first, min(last, meta.num_row_groups)):
                for value in parquet.read_column(i, field).to_pylist():
                    self._add_value(value, row, field)
                    row += 1
        except pa.ArrowException as err:
            self.reject(STAGE_DECODE, type(err).__name__, f"unreadable Parquet: {err}", None)

    def _add_value(self, value: object, position: int, field: str) -> None:
        if value is None:
            self.reject(STAGE_VALIDATE, EMPTY_SAMPLE, f"column {field!r} is null", position)
        elif isinstance(value, bytes):
            text = self.decode(value, position, check_nul=False)
            if text is not None:
                self.add(text, position)
        elif isinstance(value, str):
            self.add(value, position)
        else:
            self.reject(
                STAGE_VALIDATE,
                "NotText",
                f"column {field!r} holds a {type(value).__name__}, not a string",
                position,
            )
