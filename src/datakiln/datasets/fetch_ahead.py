"""Order-aware fetching: the objects of upcoming batches, fetched before the readers need them.

A ``Loader``'s order is a pure function of ``(seed, epoch)``, so it knows every batch to come.
Over a dataset that keeps remote objects in a local directory (``open_cache(local_dir=...)``),
:class:`FetchAhead` walks that plan ahead of the readers and pins the objects of each upcoming
batch, fetched by a small pool of threads, as far as a window in bytes allows. A batch's objects
are released once it has been read; objects shared by several batches of the window are
fetched and counted once.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np

from datakiln.errors import SpecError

logger = logging.getLogger(__name__)


@runtime_checkable
class SupportsFetchAhead(Protocol):
    """A dataset whose reads touch named objects that can be fetched ahead and pinned.

    ``local_window`` is the byte bound of what is pinned ahead (0: nothing to fetch ahead);
    ``pin_objects`` must make the objects readable until ``unpin_objects``; both thread-safe.
    """

    local_window: int

    def objects_of(self, indices: np.ndarray) -> list[str]: ...

    def object_bytes(self, keys: list[str]) -> int: ...

    def pin_objects(self, keys: list[str]) -> None: ...

    def unpin_objects(self, keys: list[str]) -> None: ...


def supports_fetch_ahead(dataset: Any) -> bool:
    """Whether a ``Loader`` should fetch ahead for ``dataset`` (it has a window to fill)."""
    return isinstance(dataset, SupportsFetchAhead) and dataset.local_window > 0


class FetchAhead:
    """Pins the objects of the batches of ``plan`` (in order) within ``window_bytes``.

    Batch ``seq`` is the ``seq``-th item of ``plan``. Call :meth:`wait` before reading it and
    :meth:`release` after; :meth:`close` stops the walk and releases everything.
    """

    def __init__(
        self, dataset: Any, plan: Iterator[np.ndarray], *, window_bytes: int, threads: int = 4
    ) -> None:
        self._dataset = dataset
        self._plan = plan
        self._window = int(window_bytes)
        self._cond = threading.Condition()
        self._held: dict[str, list[Any]] = {}  # key -> [batches needing it, future]
        self._held_bytes = 0
        self._batches: dict[int, list[str]] = {}
        self._error: BaseException | None = None
        self._stopped = False
        self._pool = concurrent.futures.ThreadPoolExecutor(
            threads, thread_name_prefix="datakiln-fetch-ahead"
        )
        self._thread = threading.Thread(target=self._walk, name="datakiln-plan", daemon=True)
        self._thread.start()

    def _walk(self) -> None:
        try:
            for seq, indices in enumerate(self._plan):
                keys = self._dataset.objects_of(indices)
                with self._cond:
                    while True:
                        new = [key for key in keys if key not in self._held]
                        need = self._dataset.object_bytes(new)
                        if (
                            self._stopped
                            or self._held_bytes + need <= self._window
                            or not self._batches
                        ):
                            break
                        self._cond.wait()
                    if self._stopped:
                        return
                    if self._held_bytes + need > self._window:
                        raise SpecError(
                            f"one batch reads {need} bytes of shard objects, more than the "
                            f"prefetch window of {self._window} bytes; raise local_window (and "
                            "local_limit), lower batch_size, or use BlockShuffle so a batch "
                            "spans fewer shards"
                        )
                    for key in keys:
                        entry = self._held.get(key)
                        if entry is None:
                            future = self._pool.submit(self._dataset.pin_objects, [key])
                            entry = self._held[key] = [0, future]
                        entry[0] += 1
                    self._held_bytes += need
                    self._batches[seq] = keys
                    self._cond.notify_all()
        except BaseException as err:  # handed to the reader that waits for the batch
            with self._cond:
                self._error = err
                self._cond.notify_all()
        finally:
            with self._cond:
                self._stopped = True
                self._cond.notify_all()

    def wait(self, seq: int) -> None:
        """Block until batch ``seq``'s objects are local; raise what fetching them raised."""
        with self._cond:
            while seq not in self._batches and not self._stopped:
                self._cond.wait()
            if seq not in self._batches:
                if self._error is not None:
                    raise self._error
                raise RuntimeError(f"batch {seq} was never planned (the loader was closed)")
            futures = [self._held[key][1] for key in self._batches[seq]]
        for future in futures:
            future.result()

    def release(self, seq: int) -> None:
        """Batch ``seq`` was read: its objects may leave the window."""
        with self._cond:
            keys = self._batches.pop(seq, [])
            done = []
            for key in keys:
                entry = self._held[key]
                entry[0] -= 1
                if not entry[0]:
                    del self._held[key]
                    done.append((key, entry[1]))
            self._held_bytes -= self._dataset.object_bytes([key for key, _ in done])
            self._cond.notify_all()
        for key, future in done:
            future.add_done_callback(lambda f, key=key: self._unpin(f, key))

    def _unpin(self, future: concurrent.futures.Future[Any], key: str) -> None:
        if not future.cancelled() and future.exception() is None:
            self._dataset.unpin_objects([key])

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join()
        for seq in list(self._batches):
            self.release(seq)
        self._pool.shutdown(wait=True, cancel_futures=True)
