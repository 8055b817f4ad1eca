"""Give freed image buffers back to the operating system, so an engine process's peak stays near its live data.

Why: glibc raises its mmap threshold every time a large mapped block is freed (up to 32 MiB). After the first
crop-sized temporary is freed, the next ones come from the heap instead, where freed space stays resident, so a
job that makes a dozen 9 MiB temporaries one after another ends with most of them counted in its peak (an engine
job editing a 1536² crop of an 8000² layer peaked at 254 MB without this; with it and the buffer savings made
beside it, 178 MB). Fixing the threshold (which also stops that adjustment) makes every buffer of
``MMAP_THRESHOLD_BYTES`` or more its own mapping, unmapped on free. The price: the kernel zeroes every new big
buffer (~0.1 s on that edit); capping glibc's arenas instead (M_ARENA_MAX=1) kept the speed but peaked at
186-200 MB from run to run. Small objects are unaffected. Elsewhere (macOS, Windows, musl) this does nothing:
their allocators return large blocks already, or offer no such switch.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: glibc's M_MMAP_THRESHOLD parameter number (malloc.h).
M_MMAP_THRESHOLD = -3
#: buffers at least this large are mapped on their own: a 256x256 RGBA tile and anything bigger.
MMAP_THRESHOLD_BYTES = 256 * 1024

_done: list[bool] = []


def return_freed_buffers() -> bool:
    """Fix glibc's mmap threshold for this process (once). True when it took effect. A threshold the user set
    with ``MALLOC_MMAP_THRESHOLD_`` is left alone."""
    if _done:
        return _done[0]
    ok = False
    if sys.platform.startswith("linux") and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        try:
            mallopt = ctypes.CDLL(None).mallopt
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            mallopt.restype = ctypes.c_int
            ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
        except (OSError, AttributeError):  # no C library handle, or an allocator without mallopt
            ok = False
    _done.append(ok)
    return ok
