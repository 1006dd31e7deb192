"""Keep freed memory in the process: glibc's malloc tuned for training on the CPU.

A training step allocates and frees the same large buffers every time (activations, the [N, V] softmax). By
default glibc serves blocks above a threshold with fresh ``mmap`` pages and returns them on free, so every step
pays for thousands of page faults as the kernel hands out zeroed pages again. Raising the mmap and trim thresholds
makes those blocks come from, and go back to, the heap, which then stays as large as the largest step, and training
runs measurably faster. Other allocators and platforms are left alone.

Steps whose buffers change size (texts of many lengths, bucketed) leave free blocks scattered through that heap which
requests of other sizes do not fit, and the heap then grows step after step until memory runs out. ``HeapWatch``
gives the heap's free pages back when the process has grown by more than a margin since the last time: a workload
whose steps repeat never grows and keeps its pages, one whose steps vary stays within the margin of what a step
needs (docs/benchmarks.md#memory-with-batches-of-many-lengths). Batches of long texts are padded to a few widths
(s2s.data.batching.few_widths) so that their steps repeat too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from collections.abc import Callable

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
THRESHOLD = 1 << 30


@functools.cache
def glibc():
    """The C library when it is glibc on Linux (it has mallopt and malloc_trim), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (musl and other C libraries have neither)
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Tune glibc malloc as above; True when it was tuned (Linux with glibc), False elsewhere."""
    libc = glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, THRESHOLD))


def release_freed_memory() -> bool:
    """Return the free pages of glibc's heap to the system (malloc_trim); True when some were returned."""
    libc = glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def resident_bytes() -> int | None:
    """The process's resident memory (Linux: /proc/self/statm), or None where it cannot be read."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class HeapWatch:
    """Returns the heap's free pages once resident memory has grown by ``margin`` bytes since the last look that
    released them (or since the first look)."""

    def __init__(
        self,
        margin: int = 4 << 30,
        resident: Callable[[], int | None] = resident_bytes,
        release: Callable[[], bool] = release_freed_memory,
    ):
        self.margin, self.resident, self.release = margin, resident, release
        self.base: int | None = None

    def check(self) -> bool:
        """Call after each step; True when it released memory."""
        now = self.resident()
        if now is None:
            return False
        if self.base is None or now < self.base:
            self.base = now
            return False
        if now - self.base <= self.margin:
            return False
        self.release()
        self.base = self.resident()
        return True
