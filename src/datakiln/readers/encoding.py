"""Detecting a text file's codec from a bounded sample of its bytes (``encoding="auto"``).

A bake detects each file's codec once, when it plans the file, and every range of the file is
then read with that one codec (the plan carries it, so a resumed bake reads as the first did).
Detection reads at most ``SAMPLE_PIECES`` pieces of ``SAMPLE_PIECE_BYTES`` (the head of the
file and pieces spread over the rest), never the whole file, and decides in this order:

1. A byte-order mark: UTF-8, UTF-16 or UTF-32.
2. NUL bytes in the head and no mark: UTF-16/32 if the detector finds it, else UTF-8 (the
   reader then rejects the file as binary).
3. Every piece valid UTF-8 (pure ASCII included): UTF-8. Invalid UTF-8 is rare by chance, so
   this rule is both safe and cheap.
4. Otherwise charset-normalizer's best match over the lines that hold bytes above 0x7F (the
   ASCII lines tell codecs apart no more than they tell languages apart), at most
   ``EVIDENCE_BYTES`` of them. Among matches it rates exactly alike the codec in
   ``_PREFERRED`` wins: text that is Latin-1 and cp1250 alike is far more often cp1252, and
   cp1252 decodes Latin-1's printable range identically (the WHATWG Encoding Standard reads
   a ``latin1`` label as windows-1252 for the same reason).
5. No match: UTF-8, so that the reader rejects the undecodable lines with their reason.

The result is a canonical Python codec name (``codecs.lookup(...).name``), e.g. ``"utf-8"``,
``"cp1252"``, ``"cp932"`` (Shift_JIS with Microsoft's extensions), ``"utf-16"``. Detection is
deterministic for one detector version; ``detector_identity`` names it, and a bake puts it in
the cache key.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import fsspec

from datakiln.readers.rejections import redact_url

if TYPE_CHECKING:
    from fsspec.spec import AbstractFileSystem

logger = logging.getLogger(__name__)

# The value of ``encoding`` that asks for detection.
AUTO_ENCODING = "auto"
# Pieces read per file, and their size: the head and pieces spread evenly over the rest, so a
# file whose first MiB is plain ASCII still shows its accents (4 MiB read at most per file).
SAMPLE_PIECES = 4
SAMPLE_PIECE_BYTES = 2**20
# Bytes of non-ASCII lines handed to the detector: charset-normalizer took about 10 ms per
# 30 KB of accented lines here, and more lines did not change its answer on real prose.
EVIDENCE_BYTES = 64 * 2**10
# Bytes of the head searched for NUL bytes (git's binary rule, as ``readers.text``).
_NUL_SNIFF_BYTES = 8192
# The codec detection falls back to, and the one a valid-UTF-8 sample gets.
FALLBACK_ENCODING = "utf-8"
# Byte-order marks, longest first (UTF-32-LE's mark starts with UTF-16-LE's).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Among equally rated matches, these win, in this order (see the module docstring).
_PREFERRED = ("cp1252",)
# What ``detector_identity`` says the rule is (goes into the cache key with the version).
_RULE = (
    "BOM; NUL bytes: utf-16/32 by the detector, else utf-8; all pieces valid utf-8: utf-8; "
    "else charset-normalizer's best match over the non-ASCII lines, cp1252 first among "
    "equals; no match: utf-8"
)


def detector_identity() -> dict[str, Any]:
    """What decides ``encoding="auto"``: detector, version, sample bounds and rule.

    A bake with ``encoding="auto"`` records this in its manifest and hashes it into the cache
    key, so another detector version (which may answer differently) bakes a new generation.
    """
    import charset_normalizer

    return {
        "name": "charset-normalizer",
        "version": charset_normalizer.__version__,
        "sample_pieces": SAMPLE_PIECES,
        "sample_piece_bytes": SAMPLE_PIECE_BYTES,
        "evidence_bytes": EVIDENCE_BYTES,
        "rule": _RULE,
    }


def detect_encoding(pieces: Sequence[bytes]) -> str:
    """The codec of a file, from pieces of its bytes (see the module docstring).

    Args:
        pieces: The file's head first (from byte 0), then any later pieces, each cut to whole
            lines (starting after a newline, ending at one); ``sample_file`` makes them.

    Returns:
        A canonical Python codec name.
    """
    head = pieces[0] if pieces else b""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    if b"\x00" in head[:_NUL_SNIFF_BYTES]:
        wide = _best_match(head[:EVIDENCE_BYTES])
        if wide is not None and wide.startswith(("utf-16", "utf-32")):
            return wide
        return FALLBACK_ENCODING
    if all(_valid_utf8(piece) for piece in pieces):
        return FALLBACK_ENCODING
    evidence = _non_ascii_lines(pieces, EVIDENCE_BYTES)
    best = _best_match(evidence)
    if best is None:
        logger.debug("no codec decodes the sample (%d bytes); using utf-8", len(evidence))
        return FALLBACK_ENCODING
    return best


def sample_file(fs: AbstractFileSystem, path: str, size: int) -> list[bytes]:
    """Up to ``SAMPLE_PIECES`` pieces of a file for ``detect_encoding``, by ranged reads.

    A file of at most ``SAMPLE_PIECES * SAMPLE_PIECE_BYTES`` bytes is one piece, read whole.
    Otherwise the head (cut after its last newline) and pieces starting at evenly spaced
    offsets, each cut to the whole lines it holds (0x0A is never part of a multi-byte
    character in the ASCII-compatible codecs this cut matters for).

    Raises:
        OSError: The file cannot be read.
    """
    budget = SAMPLE_PIECES * SAMPLE_PIECE_BYTES
    if size <= budget:
        return [fs.cat_file(path, 0, size) if size else b""]
    pieces = [_whole_lines(fs.cat_file(path, 0, SAMPLE_PIECE_BYTES), head=True)]
    step = size // SAMPLE_PIECES
    for k in range(1, SAMPLE_PIECES):
        start = k * step
        piece = _whole_lines(fs.cat_file(path, start, start + SAMPLE_PIECE_BYTES), head=False)
        if piece:
            pieces.append(piece)
    return pieces


def detect_file_encoding(
    url: str, size: int | None = None, storage_options: Mapping[str, Any] | None = None
) -> str:
    """``detect_encoding`` of the file at ``url`` (any fsspec URL), from ``sample_file``.

    Args:
        url: The file.
        size: Its size in bytes, if known (from a listing); else it is asked for.
        storage_options: fsspec options for ``url``.

    Raises:
        OSError: The file cannot be read.
    """
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    if size is None:
        size = int(fs.size(path))
    name = detect_encoding(sample_file(fs, path, size))
    logger.debug("detected %s in %s", name, redact_url(url))
    return name


def detect_values_encoding(values: Sequence[bytes]) -> str:
    """``detect_encoding`` of byte strings (binary table cells), as one newline-joined piece.

    The values are taken in order up to ``SAMPLE_PIECES * SAMPLE_PIECE_BYTES`` bytes.
    """
    taken: list[bytes] = []
    total = 0
    for value in values:
        if total >= SAMPLE_PIECES * SAMPLE_PIECE_BYTES:
            break
        taken.append(value)
        total += len(value) + 1
    return detect_encoding([b"\n".join(taken)])


def _whole_lines(piece: bytes, *, head: bool) -> bytes:
    """``piece`` cut to whole lines.

    It starts after its first newline (unless ``head``) and ends with its last one.
    """
    start = 0 if head else piece.find(b"\n") + 1
    if not head and start == 0:
        return b""  # no line starts in this piece
    end = piece.rfind(b"\n") + 1
    return piece[start:end] if end > start else (piece[start:] if head else b"")


def _valid_utf8(piece: bytes) -> bool:
    """Whether ``piece`` is UTF-8, allowing a character cut at its end."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(piece, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _non_ascii_lines(pieces: Sequence[bytes], limit: int) -> bytes:
    """The lines of ``pieces`` holding a byte above 0x7F, newline-joined.

    Whole lines up to ``limit`` bytes (a first line longer than that is cut).
    """
    taken: list[bytes] = []
    total = 0
    for piece in pieces:
        for line in piece.split(b"\n"):
            if line.isascii():
                continue
            if total + len(line) + 1 > limit:
                if not taken:
                    taken.append(line[:limit])
                return b"\n".join(taken)
            taken.append(line)
            total += len(line) + 1
    return b"\n".join(taken)


def _best_match(evidence: bytes) -> str | None:
    """charset-normalizer's best codec for ``evidence``, ``_PREFERRED`` first among equals."""
    import charset_normalizer

    if not evidence:
        return None
    # one step over all of it: the default samples five 512-byte chunks, too few for accents
    matches = list(charset_normalizer.from_bytes(evidence, steps=1, chunk_size=len(evidence)))
    if not matches:
        return None
    best = matches[0]
    ties = [
        m.encoding
        for m in matches
        if m.chaos == best.chaos and m.coherence == best.coherence and m.encoding in _PREFERRED
    ]
    name = min(ties, key=_PREFERRED.index) if ties else best.encoding
    try:
        return codecs.lookup(name).name
    except LookupError:  # a name Python does not know: nothing we can read with
        return None
