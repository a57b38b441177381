"""Worker processes for a bake on this machine: the pool behind Dask's ``processes`` scheduler.

A shard task holds the GIL for part of every input (Pillow's Python side, packing kernel
batches, bookkeeping), so shard tasks on threads of one process stop scaling at about 1.5x on
two cores. One process per core shares no GIL. Dask's own ``processes`` scheduler runs the
tasks; this module starts the pool it runs them on, because Dask's default pool spawns fresh
interpreters (each pays ~1 s to import JAX again inside the bake) and hands out tasks six at a
time (the last worker then finishes alone).

The pool is forked from the bake process when that is safe: on Linux, with no other Python
thread running and JAX's backend not started here (XLA's threads do not survive a fork). The
workers then inherit every imported module. Otherwise it comes from a fork server, a clean
process that imports the modules once and forks each worker from itself. Workers are pinned
one per CPU, and Linux ends them when the bake process dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

__all__ = ["local_cpus", "start_method", "worker_pool"]

logger = logging.getLogger(__name__)

# prctl(2) option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def local_cpus() -> int:
    """CPUs this process may run on (its affinity and cgroup quota, as Dask counts them)."""
    from dask.system import CPU_COUNT

    return int(CPU_COUNT)


def _jax_backend_started() -> bool:
    """Whether this process has started a JAX backend (True when that cannot be told).

    JAX has no public way to ask this (jax-ml/jax#23320, open): ``jax.devices()`` and the
    like start the backend they would report on, and counting the process's threads cannot
    tell XLA's from those of numpy's BLAS or pyarrow's allocator, which are safe to fork.
    So this reads ``xla_bridge.backends_are_initialized``, and answers True (no fork) where
    a JAX release no longer has it.
    """
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge
    except ImportError:  # pragma: no cover - a JAX without this module
        return True
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return True if started is None else bool(started())


def start_method(parked: Collection[threading.Thread] = ()) -> str:
    """``"fork"`` where forking this process is safe now, else a fork server (or spawn).

    ``parked``: threads the caller knows hold nothing a child needs until the fork is done
    (waiting on a lock of the caller's); any other thread rules a fork out.
    """
    methods = multiprocessing.get_all_start_methods()
    others = [
        t for t in threading.enumerate() if t is not threading.current_thread() and t not in parked
    ]
    if sys.platform == "linux" and "fork" in methods and not others and not _jax_backend_started():
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _pinned_cpus(workers: int) -> tuple[int, ...]:
    """The CPUs to pin the workers to, one each: all this process may use, if ``workers``.

    A worker on a CPU of its own runs its threads (decode, kernel, writes) one at a time
    and cache-warm, with no GIL hand-offs between cores, and XLA, which sizes its thread
    pool by the CPUs it may use, stays single-threaded instead of adding threads to every
    core (measured: 6% faster than unpinned workers on two cores). Where the CPU count
    comes from a quota rather than the affinity mask, nothing is pinned.
    """
    try:
        cpus = tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return ()
    return cpus if len(cpus) == workers > 1 else ()


def _die_with_parent(parent: int) -> None:
    """Have Linux kill this worker when its parent dies (a killed bake leaves no orphans).

    A worker waits for its next task on a pipe whose writing end it inherited, so it would
    never notice on its own; an orphan could also go on writing shard objects under the next
    bake's lease.
    """
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)


def _init_worker(
    modules: Sequence[str], cpus: Sequence[int], slot: Any, parent: int | None
) -> None:
    _die_with_parent(os.getppid() if parent is None else parent)
    # Ctrl-C reaches the whole process group; the bake process alone handles it and stops
    # the workers, so a worker never dies half-way with a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cpus:
        with slot.get_lock():
            index = slot.value
            slot.value += 1
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpus[index % len(cpus)]})
    for name in modules:
        importlib.import_module(name)
    _warm_up()
    _freeze_heap()


def _first_conversion() -> None:
    """Pay for pyarrow's first conversion of Python data, which imports pandas (~0.3 s).

    pyarrow imports pandas, when installed, at that first conversion.

    Done in the bake process before forking, forked workers inherit it, and the bake process
    needs it anyway to commit (measured: it added 0.25 s to the commit of a 5 s bake, and
    0.3 s to every worker's first task).
    """
    import pyarrow as pa

    pa.array([0])


def _warm_up() -> None:
    """First-use costs of a worker, paid while the bake process is still preparing."""
    import jax

    _first_conversion()
    jax.devices()  # starts XLA's CPU client, after pinning: it sizes its threads by the CPUs
    # A process's first jit call sets up tracing, lowering and compiling (~0.2 s here); paid
    # now, it overlaps the bake process's planning instead of delaying the first shard.
    np.asarray(jax.jit(lambda x: x + 1)(np.zeros(1, np.int32)))  # waits for the result


def _freeze_heap() -> None:
    """Move what the worker has imported out of the cyclic collector's reach.

    JAX and its dependencies leave about half a million objects, and every full collection
    walks all of them (~50 ms a time here); a shard of records allocates enough small objects
    (records, member references, slots) to trigger one or two per shard. Frozen objects are
    never collected, which is right for modules that live as long as the worker (measured:
    a 2,000-record tar bake spent 0.13-0.21 s in the collector, 0.01-0.03 s frozen).
    """
    import gc

    gc.collect()
    gc.freeze()


def _ready() -> int:
    return os.getpid()


@contextlib.contextmanager
def worker_pool(
    workers: int, modules: Sequence[str] = (), *, parked: Collection[threading.Thread] = ()
) -> Iterator[ProcessPoolExecutor]:
    """A started pool of ``workers`` processes that have imported ``modules``.

    Every worker is started before this returns its pool (and warms up while the caller goes
    on), so create the pool before this process starts threads of its own (``parked``: see
    ``start_method``). With one worker per CPU of this process, each is pinned to its own
    CPU. On leaving, the pool is shut down; on an error (or Ctrl-C) its workers are stopped
    at once, which is safe because shard tasks are idempotent. Workers die with this process.
    """
    if workers < 1:
        raise ValueError(f"a worker pool needs at least one worker, got {workers}")
    modules = tuple(modules)
    for name in modules:  # here, so forked workers inherit them
        importlib.import_module(name)
    _first_conversion()
    method = start_method(parked)
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(list(modules))
    cpus = _pinned_cpus(workers)
    slot = context.Value("i", 0) if cpus else None
    # A forked worker's parent is this process; a fork server's worker's is the server, which
    # exits when this process does.
    parent = os.getpid() if method == "fork" else None
    pool = ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(modules, cpus, slot, parent),
    )
    logger.info(
        "%d worker processes (%s)%s",
        workers,
        method,
        f", pinned to CPUs {', '.join(map(str, cpus))}" if cpus else "",
    )
    try:
        for _ in range(workers):
            pool.submit(_ready)
        yield pool
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel queued tasks and end the workers without waiting for running ones."""
    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
