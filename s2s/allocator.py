"""Keep freed memory in the process: glibc's malloc tuned for training on the CPU.

A training step allocates and frees the same large buffers every time (activations, the [N, V] softmax). By
default glibc serves blocks above a threshold with fresh ``mmap`` pages and returns them on free, so every step
pays for thousands of page faults as the kernel hands out zeroed pages again. Raising the mmap and trim thresholds
makes those blocks come from, and go back to, the heap, which then stays as large as the largest step, and training
runs measurably faster. Other allocators and platforms are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Tune glibc malloc as above; True when it was tuned (Linux with glibc), False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, THRESHOLD))
