"""A store lease: at most one bake writes a store at a time.

The lease is ``_lease.json`` at the store root (owner, start, expiry). Its holder renews it from
a heartbeat thread; a lease left by a killed bake expires after ``ttl_s`` and is then taken
over. On local disks taking a lease is an exclusive create, so two bakes started at once cannot
both win; on object stores it is a put followed by a read-back, the best an S3-style API without
conditional writes offers.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from datakiln.cache.layout import LEASE, is_local, store_fs
from datakiln.errors import LeaseHeldError

logger = logging.getLogger(__name__)


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="seconds")


class StoreLease:
    """Context manager holding the lease of the store at ``url``.

    Args:
        ttl_s: how long a lease stays valid without renewal.
        wait_s: how long to wait for a held lease before failing.
    """

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        *,
        ttl_s: float = 60.0,
        wait_s: float = 0.0,
        poll_s: float = 1.0,
    ) -> None:
        self.url = url
        self._fs, root = store_fs(url, storage_options)
        self._path = f"{root}/{LEASE}"
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.ttl_s, self.wait_s, self.poll_s = ttl_s, wait_s, poll_s
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Held by the heartbeat while it renews, and by ``paused``.
        self._renewing = threading.Lock()
        self._local = is_local(self._fs)

    def read(self) -> dict[str, Any] | None:
        """The current lease record, or ``None`` when there is none (or it is unreadable)."""
        try:
            return json.loads(self._fs.cat_file(self._path))
        except (FileNotFoundError, ValueError):
            return None

    def _record(self) -> bytes:
        return json.dumps(
            {"owner": self.owner, "started": self.started, "expires": time.time() + self.ttl_s}
        ).encode()

    def _try_take(self, current: dict[str, Any] | None) -> bool:
        if self._local:
            if current is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path)
            try:
                fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(self._record())
            return True
        self._fs.pipe_file(self._path, self._record())
        time.sleep(0.05)
        mine = self.read()
        return mine is not None and mine.get("owner") == self.owner

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_s
        self._fs.makedirs(self._path.rsplit("/", 1)[0], exist_ok=True)
        while True:
            current = self.read()
            held = current is not None and current.get("expires", 0) > time.time()
            if not held and self._try_take(current):
                break
            if time.monotonic() >= deadline:
                holder = self.read() or current or {}
                raise LeaseHeldError(
                    f"another bake is writing {self.url}: lease held by "
                    f"{holder.get('owner', '?')} since {_when(holder.get('started', 0))}, "
                    f"expires {_when(holder.get('expires', 0))} unless renewed; wait for it, "
                    "or re-run after it expires if that bake was killed"
                )
            time.sleep(self.poll_s)
        if current is not None:
            logger.warning("took over the expired lease of %s", current.get("owner"))
        self._thread = threading.Thread(target=self._renew, name="datakiln-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            with self._renewing:
                try:
                    if (self.read() or {}).get("owner") != self.owner:
                        logger.error("lost the lease of %s to another bake", self.url)
                        return
                    self._fs.pipe_file(self._path, self._record())
                except OSError as err:  # keep trying: a transient store error must not kill it
                    logger.warning("could not renew the lease of %s: %s", self.url, err)

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """The heartbeat thread, once the lease is held."""
        return (self._thread,) if self._thread is not None else ()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold off renewals: meanwhile the heartbeat thread waits on a lock of its own.

        So it holds nothing a forked child could need, which makes this the moment to fork.
        """
        with self._renewing:
            yield

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if (self.read() or {}).get("owner") == self.owner:
            self._fs.rm_file(self._path)

    def __enter__(self) -> StoreLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
