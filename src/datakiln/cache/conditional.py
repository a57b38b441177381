"""Compare-and-swap on small store objects: the lease record and the manifest.

S3 (and S3-compatible stores such as MinIO) accept conditional writes: a put with
``If-None-Match: *`` creates an object only if there is none, a put or delete with
``If-Match: <etag>`` changes it only if nobody changed it since it was read. With those, two
bakes racing for a lease or a commit cannot both win. Stores without them (``memory://``,
other fsspec backends) fall back to a plain put, with one warning naming the store. Local
disks do not come here: their lease is a kernel lock.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any

from datakiln.cache.retries import note_retry

logger = logging.getLogger(__name__)

# Error codes of a conditional request that lost: the object changed, or another conditional
# write to the same key was in flight (S3 answers 409 ConditionalRequestConflict then).
_LOST = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")
_warned: set[str] = set()
READ_ATTEMPTS = 5


def _broken_body(err: BaseException) -> bool:
    """A body read that failed midway: retried, unlike an error the store answered with."""
    name = type(err).__name__
    return isinstance(err, ConnectionError | TimeoutError | asyncio.TimeoutError) or name in (
        "ClientPayloadError",
        "IncompleteRead",
        "ResponseStreamingError",
        "ReadTimeoutError",
        "ServerDisconnectedError",
        "ClientOSError",
    )


@dataclass(frozen=True)
class Versioned:
    """An object's bytes and the tag to write against: ``None`` for both when it is absent."""

    data: bytes | None
    tag: str | None


def _is_s3(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return any(p in ("s3", "s3a") for p in protocols)


def _lost_race(err: BaseException) -> bool:
    for e in (err, err.__cause__, err.__context__):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            error = response.get("Error", {})
            status = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if error.get("Code") in _LOST or status in ("412", "409"):
                return True
    return False


class ConditionalObjects:
    """Conditional reads, puts and deletes of whole objects on one store."""

    def __init__(self, fs: Any, url: str) -> None:
        self.fs = fs
        self.url = url
        self.supported = _is_s3(fs)

    def warn_if_unsupported(self, what: str) -> None:
        """Say once per store that ``what`` runs without compare-and-swap there."""
        if self.supported or self.url in _warned:
            return
        _warned.add(self.url)
        logger.warning(
            "store %s has no conditional writes: %s falls back to a put and a read-back, so "
            "two bakes started within the same moment could both proceed; bake one at a time",
            self.url,
            what,
        )

    def read(self, path: str) -> Versioned:
        """The object and its ETag, from one GET (so the tag belongs to these bytes)."""
        if not self.supported:
            try:
                return Versioned(self.fs.cat_file(path), None)
            except FileNotFoundError:
                return Versioned(None, None)
        from fsspec.asyn import sync

        bucket, key, _ = self.fs.split_path(path)

        async def get() -> Versioned:
            # botocore retries the request; a body cut short after the headers (a reset or a
            # truncated answer) surfaces only here, so the read is retried here too.
            for attempt in range(READ_ATTEMPTS):
                response = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
                try:
                    async with response["Body"] as body:
                        data = await body.read()
                except Exception as err:
                    if attempt + 1 == READ_ATTEMPTS or not _broken_body(err):
                        raise
                    note_retry()
                    await asyncio.sleep(random.uniform(0, 0.1 * 2**attempt))
                    continue
                if len(data) == response.get("ContentLength", len(data)):
                    return Versioned(data, response["ETag"])
            raise OSError(f"{path}: the body stayed shorter than its Content-Length")

        try:
            versioned: Versioned = sync(self.fs.loop, get)
            return versioned
        except FileNotFoundError:
            return Versioned(None, None)

    def put(self, path: str, data: bytes, *, expect: Versioned) -> str | None:
        """Write ``data`` if the object is still ``expect``; its new tag, or ``None`` if it lost.

        Without conditional writes the put is unconditional and the answer is ``""``.
        """
        if not self.supported:
            self.fs.pipe_file(path, data)
            return ""
        match = {"IfMatch": expect.tag} if expect.tag is not None else {"IfNoneMatch": "*"}
        try:
            response = self.fs.pipe_file(path, data, **match)
        except (OSError, FileExistsError) as err:
            if not _lost_race(err):
                raise
            # A put whose answer was lost (a reset) is retried, and the retry then fails its
            # own precondition: if the object holds exactly our bytes, the first put won.
            now = self.read(path)
            return now.tag if now.data == data and now.tag is not None else None
        tag: str = (response or {}).get("ETag", "")  # s3fs answers with S3's response dict
        return tag

    def delete(self, path: str, *, expect: Versioned) -> bool:
        """Delete the object if it is still ``expect``; whether it was deleted."""
        if not self.supported or expect.tag is None:
            current = self.read(path)
            if current.data is None or current.data != expect.data:
                return False
            self.fs.rm_file(path)
            return True
        from fsspec.asyn import sync

        bucket, key, _ = self.fs.split_path(path)
        try:
            sync(
                self.fs.loop,
                self.fs._call_s3,
                "delete_object",
                Bucket=bucket,
                Key=key,
                IfMatch=expect.tag,
            )
        except (OSError, FileNotFoundError) as err:
            if _lost_race(err) or isinstance(err, FileNotFoundError):
                return False
            raise
        self.fs.invalidate_cache(path)
        return True
