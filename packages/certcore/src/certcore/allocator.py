"""Keep freed CPU memory for reuse (glibc only): large tensors otherwise cost their page faults anew.

PyTorch's CPU tensors come from the C allocator. With glibc's defaults a block above the mmap
threshold (128 KB rising to at most 32 MB) is mapped fresh for every allocation, and freed heap above
the trim threshold goes back to the system, so a loop that allocates and frees tensors of tens of MB
pays a first-touch page fault per 4 KB page each time. On the 2-core test machine that was as costly
as the arithmetic: CROWN on a 784-256-128-10 MLP at batch 256 took 0.47 s with the defaults and
0.25-0.30 s with the settings below (``benchmarks/lirpa.py``; the same effect as setting
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` before starting Python).

:func:`keep_freed_memory` raises both thresholds for the whole process (blocks up to 256 MB come from
the heap, up to 512 MB of freed heap is kept): the price is that the process keeps that much memory
after a peak. ``lirpa`` calls it once before its first bound computation on the CPU; set the
environment variable ``CERTKIT_MALLOC_TUNING=0`` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_log = logging.getLogger(__name__)
_applied: bool | None = None


def keep_freed_memory(mmap_threshold: int = 256 << 20, trim_threshold: int = 512 << 20) -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True if they are set.

    Does nothing (returns False) on another C library, when ``CERTKIT_MALLOC_TUNING=0``, or after a
    failed attempt; later calls return the first call's result.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("CERTKIT_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold))
    _applied = _applied and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    if _applied:
        mb = (mmap_threshold >> 20, trim_threshold >> 20)
        _log.info("glibc malloc: mmap threshold %d MB, trim threshold %d MB", *mb)
    return _applied
