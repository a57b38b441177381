"""Local shard objects mapped side by side into one reserved address range.

A random batch touches a few rows in each of many shard files. Copying them row by row from
one memory map per file costs a Python-level copy per row, under the GIL, so reader threads
contend for it. With every shard file of a field mapped at a fixed slot of one address range
(a reserved, inaccessible range, then each file mapped over its slot with ``MAP_FIXED``), the
field's inner chunks form one 2-D array of ``(shard * units_per_slot + chunk)`` rows, and a
whole batch is one ``np.take``, which copies without holding the GIL.

Linux only (the flags are Linux's); elsewhere :func:`reserve` returns None and callers keep
their per-row path. Callers must check that every row they take lies inside its file
(:meth:`MappedRegion.length`): the rest of the range is not readable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import mmap
import os
import sys
import threading
import weakref

import numpy as np
from numpy.typing import NDArray

_PROT_NONE, _PROT_READ = 0, 1
_MAP_SHARED, _MAP_PRIVATE, _MAP_FIXED, _MAP_ANONYMOUS, _MAP_NORESERVE = 1, 2, 0x10, 0x20, 0x4000
_MAP_FAILED = ctypes.c_void_p(-1).value
# Address space one region may reserve (it costs page tables only for what is mapped).
MAX_REGION_BYTES = 2**42
# Files one region maps at most: each is a kernel memory area, and a process may hold only
# vm.max_map_count (65,530 by default) of them. Past this, readers copy row by row.
MAX_MAPPED_FILES = 8192


def _libc() -> ctypes.CDLL | None:
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.restype = ctypes.c_int
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


_LIBC = _libc()


def _unmap(base: int, size: int) -> None:
    if _LIBC is not None:
        _LIBC.munmap(base, size)


class MappedRegion:
    """``slots`` equal slots of address space; slot ``k`` holds shard file ``k`` once mapped.

    Attributes:
        units: ``(slots * units_per_slot, unit_bytes)`` uint8 view of the whole range. Only
            rows inside mapped files may be read.
        units_per_slot: Inner chunks per slot.
    """

    def __init__(
        self,
        libc: ctypes.CDLL,
        slots: int,
        slot_bytes: int,
        unit_bytes: int,
        *,
        max_files: int = MAX_MAPPED_FILES,
    ) -> None:
        total = slots * slot_bytes
        base = libc.mmap(
            None, total, _PROT_NONE, _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_NORESERVE, -1, 0
        )
        if base in (None, _MAP_FAILED):
            raise OSError(ctypes.get_errno(), "cannot reserve address space")
        self._libc, self._base, self._total = libc, int(base), total
        self._slot_bytes, self._unit_bytes = slot_bytes, unit_bytes
        self._finalizer = weakref.finalize(self, _unmap, self._base, total)
        # Not at interpreter exit: a daemon thread (a loader's reader) may still be copying
        # from the range then, and the process's end unmaps it anyway.
        self._finalizer.atexit = False
        self._lengths: NDArray[np.uint64] = np.zeros(slots, dtype=np.uint64)
        self._mapped, self._max_files = 0, max_files
        self._lock = threading.Lock()
        self.units_per_slot = slot_bytes // unit_bytes
        buffer = (ctypes.c_uint8 * total).from_address(self._base)
        self.units = np.frombuffer(memoryview(buffer), np.uint8).reshape(-1, unit_bytes)

    def map(self, slot: int, path: str) -> int:
        """Map the file at ``path`` over ``slot`` (once); its length, 0 if it is missing.

        Raises:
            ValueError: The file is larger than a slot.
            OSError: The file cannot be mapped, or the region maps ``max_files`` already.
        """
        with self._lock:
            if self._lengths[slot]:
                return int(self._lengths[slot])
            if self._mapped >= self._max_files:
                raise OSError(f"the region maps {self._mapped} files already, its most")
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return 0
            try:
                size = os.fstat(fd).st_size
                if size > self._slot_bytes:
                    raise ValueError(
                        f"{path}: {size} bytes do not fit a slot of {self._slot_bytes}"
                    )
                if size:
                    address = self._base + slot * self._slot_bytes
                    got = self._libc.mmap(
                        address, size, _PROT_READ, _MAP_SHARED | _MAP_FIXED, fd, 0
                    )
                    if got != address:
                        raise OSError(ctypes.get_errno(), f"cannot map {path}")
            finally:
                os.close(fd)
            self._lengths[slot] = size
            self._mapped += 1
            return size

    def unmap(self, slot: int) -> None:
        """Drop the file mapped over ``slot`` (no reader may be copying from it).

        The address range goes back to reserved, inaccessible memory, so the file's disk
        space is freed once it is deleted.
        """
        with self._lock:
            if not self._lengths[slot]:
                return
            address = self._base + slot * self._slot_bytes
            got = self._libc.mmap(
                address,
                self._slot_bytes,
                _PROT_NONE,
                _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_NORESERVE | _MAP_FIXED,
                -1,
                0,
            )
            if got != address:
                raise OSError(ctypes.get_errno(), "cannot unmap a shard file")
            self._lengths[slot] = 0
            self._mapped -= 1

    def lengths(self, slots: np.ndarray) -> NDArray[np.uint64]:
        """Mapped bytes of each of ``slots`` (0: not mapped)."""
        lengths: NDArray[np.uint64] = self._lengths[slots]
        return lengths

    def close(self) -> None:
        """Unmap everything; ``units`` must not be read afterwards."""
        self._finalizer()


def reserve(
    slots: int, max_file_bytes: int, unit_bytes: int, *, max_files: int = MAX_MAPPED_FILES
) -> MappedRegion | None:
    """A region for ``slots`` files of up to ``max_file_bytes``, or None where unsupported.

    Slots are a whole number of pages and of ``unit_bytes``, so every inner chunk of every
    slot is one row of ``MappedRegion.units``.
    """
    if _LIBC is None or slots < 1 or unit_bytes < 1:
        return None
    step = math.lcm(mmap.PAGESIZE, unit_bytes)
    slot_bytes = -(-max(max_file_bytes, 1) // step) * step
    if slots * slot_bytes > MAX_REGION_BYTES:
        return None
    try:
        return MappedRegion(_LIBC, slots, slot_bytes, unit_bytes, max_files=max_files)
    except OSError:
        return None
