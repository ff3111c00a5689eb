"""Keep the app's resident memory bounded under concurrent visitors (glibc only; a no-op elsewhere).

Gradio runs each request on a worker thread, and glibc gives busy threads their own malloc arenas (up to 8 per
core). Torch's CPU tensors of a forward pass are freed into whichever arena allocated them, and glibc's dynamic
mmap threshold rises after the first large free, so later multi-MB activations come from the arenas' heaps, where
freed pages stay resident. RSS then wanders by ~100 MB from round to round (benchmarks/bench_app.py). Two settings
fix both: few arenas, and a fixed mmap threshold, so every allocation of 1 MB or more is its own mapping that goes
back to the system when freed; ``trim()`` after a request returns the small-block heap tops as well.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["bound_malloc", "trim"]

M_MMAP_THRESHOLD = -3  # glibc mallopt parameters (malloc.h)
M_ARENA_MAX = -8
_libc = None


def _glibc():
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            lib.mallopt.argtypes, lib.malloc_trim.argtypes = [ctypes.c_int, ctypes.c_int], [ctypes.c_size_t]
            _libc = lib
        except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
            _libc = False
    return _libc


def bound_malloc(arenas: int = 2, mmap_threshold: int = 1 << 20) -> bool:
    """Cap glibc's malloc arenas (arenas <= 0: leave glibc's default) and fix its mmap threshold (disables the
    dynamic one). Call it before threads start: arenas that exist stay. True when applied."""
    lib = _glibc()
    if not lib:
        return False
    ok = bool(lib.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)))
    if arenas > 0:
        ok = bool(lib.mallopt(M_ARENA_MAX, int(arenas))) and ok
    return ok


def trim() -> bool:
    """Return free heap memory to the system (``malloc_trim(0)``); True when something was released."""
    lib = _glibc()
    return bool(lib and lib.malloc_trim(0))
