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


class ImageDecodeError(DatakilnError, ValueError):
    """One input could not be made into an image; the bake turns it into a rejection.

    Attributes:
        stage: Where it failed: ``"open"`` (not an image, empty, unsupported format),
            ``"limit"`` (more pixels than allowed: a possible decompression bomb),
            ``"decode"`` (truncated or corrupt data) or ``"convert"`` (a mode that cannot be
            converted to the requested representation).
    """

    def __init__(self, message: str, *, stage: str) -> None:
        super().__init__(message)
        self.stage: str = stage

    def __reduce__(self) -> tuple[object, ...]:
        # Keeps ``stage`` when the error crosses a process boundary (Dask workers pickle).
        return (_rebuild_image_error, (str(self), self.stage))


def _rebuild_image_error(message: str, stage: str) -> ImageDecodeError:
    return ImageDecodeError(message, stage=stage)


class AudioDecodeError(DatakilnError, ValueError):
    """An audio input cannot be decoded or holds unusable samples; the bake rejects it.

    Attributes:
        stage: ``"decode"`` or ``"validate"`` (the ``Rejection.stage`` it becomes).
        uri: The input, when the caller named it.
    """

    def __init__(self, message: str, *, stage: str, uri: str | None = None) -> None:
        super().__init__(f"{uri}: {message}" if uri else message)
        self.stage: str = stage
        self.uri: str | None = uri


class OutputError(DatakilnError, OSError):
    """The output store cannot be created or written."""


class CacheNotFoundError(DatakilnError, FileNotFoundError):
    """No committed cache (no manifest.json) at a URL."""


class CacheFormatError(DatakilnError, ValueError):
    """A cache exists but its manifest or layout is not one this version reads."""


class ChecksumMismatchError(DatakilnError, ValueError):
    """Stored bytes do not match the checksum recorded when they were written.

    Raised while a remote cache is read through its local directory (``open_cache(url,
    local_dir=...)``): an object fetched whole whose size or sha256 differs from what its
    bake recorded is not published. The remote cache changed while it was read, or is
    damaged: ``datakiln verify URL`` lists every damaged object.
    """


class LocalLimitError(DatakilnError, OSError):
    """The local directory of a remote cache cannot make room within its byte limit."""


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


class ServiceError(DatakilnError, ConnectionError):
    """The service could not be reached, refused the token, or answered an error."""


class JobFailedError(BakeError):
    """A service job ended failed or cancelled; the message carries the service's error."""
