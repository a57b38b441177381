"""``Rejection``: the record a reader makes of one input that did not make it into a cache.

Readers never let one bad input kill a shard (see DESIGN.md): they turn it into a
``Rejection`` and carry on, and the bake writes every rejection to ``rejected.parquet`` so that
``inputs == baked + rejected`` holds. A rejection says where (``uri`` and, for inputs that are
parts of a file, ``position``), at which ``stage`` it failed, and why (``error_type`` is a short
machine-readable reason, usually an exception class name; ``message`` is for people).
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Mapping
from typing import Any

# The stages an input passes through on the host; ``Rejection.stage`` is one of them.
STAGE_FETCH = "fetch"  # the bytes could not be read from the store
STAGE_DECODE = "decode"  # the bytes are not a valid encoding (text codec, audio/image container)
STAGE_PARSE = "parse"  # decoded, but the record structure is wrong (JSON, CSV, missing field)
STAGE_VALIDATE = "validate"  # parsed, but the content is unusable (empty, NaN samples, ...)
# Rows a bake leaves out on purpose: a spec's filter (``error_type`` names it), or dedup
# (``Duplicate`` / ``NearDuplicate``; the message names the row it copies).
STAGE_FILTER = "filter"
STAGE_DEDUP = "dedup"
STAGES = (STAGE_FETCH, STAGE_DECODE, STAGE_PARSE, STAGE_VALIDATE, STAGE_FILTER, STAGE_DEDUP)

# ``error_type`` of a sample skipped because it holds no content (text: only whitespace).
EMPTY_SAMPLE = "EmptySample"


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection:
    """One input (a file, or a line/row of one) that was skipped, and why.

    Attributes:
        uri: The source the input came from, as the caller named it (listings name inputs
            without credentials; ``redact_url`` strips any that a URL carries).
        stage: Where it failed: one of ``STAGES``.
        error_type: A short reason: an exception class name (``"UnicodeDecodeError"``,
            ``"LibsndfileError"``) or a reader's own tag (``"EmptySample"``, ``"MissingField"``).
        message: What went wrong, for people.
        position: For samples that are part of a file: the byte offset of the line for
            line-oriented text, the row index for Parquet; ``None`` for whole files.
        shard: The bake shard that read it (set by the shard task).
        record: Records bakes: the record's name (``row 12``, a tar key).
        field: Records bakes: the field that failed.
    """

    uri: str
    stage: str
    error_type: str
    message: str
    position: int | None = None
    shard: int | None = None
    record: str | None = None
    field: str | None = None

    @classmethod
    def from_error(
        cls, uri: str, stage: str, err: BaseException, *, position: int | None = None
    ) -> Rejection:
        """Make the rejection of an input whose processing raised ``err`` at ``stage``."""
        return cls(uri, stage, type(err).__name__, str(err), position)

    def to_dict(self) -> dict[str, Any]:
        """The rejection as plain JSON types (one row of ``rejected.parquet``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rejection:
        """Inverse of ``to_dict`` (markers written before ``record`` and ``field`` lack them)."""
        values: dict[str, Any] = {f.name: data.get(f.name) for f in dataclasses.fields(cls)}
        return cls(**values)

    @property
    def blank(self) -> bool:
        """Whether the input held nothing (a blank line, an empty file, a null value).

        As opposed to broken input. A record with one empty field is not blank: its other
        fields held something.
        """
        return self.error_type == EMPTY_SAMPLE and self.field is None

    @property
    def reason(self) -> str:
        """``stage: error_type``, the key rejections are grouped by in reports."""
        return f"{self.stage}: {self.error_type}"


def redact_url(url: str) -> str:
    """``url`` without user info (``user:password@``), query string or fragment, for logs.

    Presigned URLs carry their signature in the query, and ``https://user:pass@host`` its
    password in the user info; neither may reach a log or a rejection record.

    >>> redact_url("https://me:secret@host/a/b.txt?X-Amz-Signature=abc#frag")
    'https://host/a/b.txt'
    >>> redact_url("/local/path.txt")
    '/local/path.txt'
    """
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
