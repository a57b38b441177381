"""Every failure mode datakiln raises, in one place.

Each class also inherits the builtin a caller would naturally catch, so
``except FileNotFoundError`` keeps working for a missing cache.
"""

from __future__ import annotations


class DatakilnError(Exception):
    """Base class of every error datakiln raises on purpose."""


class SpecError(DatakilnError, ValueError):
    """A bake spec or a config field has a value that is not allowed."""


class SourceError(DatakilnError, FileNotFoundError):
    """A source URL or glob names nothing that can be read."""


class OutputError(DatakilnError, OSError):
    """The output store cannot be created or written."""


class CacheNotFoundError(DatakilnError, FileNotFoundError):
    """No committed cache (no manifest.json) at a URL."""


class CacheFormatError(DatakilnError, ValueError):
    """A cache exists but its manifest or layout is not one this version reads."""


class ChecksumMismatchError(DatakilnError, ValueError):
    """Stored bytes do not match the checksum recorded when they were written."""


class BakeError(DatakilnError, RuntimeError):
    """The bake itself failed (not one input: the job)."""


class UserCodeError(BakeError):
    """A user's transform or filter raised, or returned what the bake cannot store."""


class TooManyRejectedError(BakeError):
    """More inputs were rejected than ``max_rejected`` allows."""


class LeaseHeldError(BakeError):
    """Another bake holds the store's lease (its owner, start and expiry are in the message)."""


class CommitConflictError(BakeError):
    """Another bake committed the store's manifest while this one ran; nothing was overwritten."""


class RandomAccessError(DatakilnError, TypeError):
    """A dataset only supports iteration, but the caller needs to read samples by index."""


class SampleValidationError(DatakilnError, ValueError):
    """A sample failed ``validate_sample`` where invalid samples raise."""
