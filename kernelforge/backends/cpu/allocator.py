"""Keeps glibc from handing the CPU backend's freed temporaries back to the OS.

A launch allocates and frees megabyte-sized tensors (gathered K/V tiles, score blocks)
every call. glibc serves a block above its mmap threshold with a fresh mapping and
returns the top of its heap once more than its trim threshold is free, and it moves
both thresholds as the process runs, so whether a launch page-faults its temporaries in
again depends on what the process allocated before: the same single-threaded decode
attention call measured 3.8 ms or 6.7 ms. Fixed thresholds make freed memory be reused,
at the price of the process keeping its peak heap (as a serving process does anyway).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
from typing import Mapping

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit machines
TRIM_THRESHOLD = 256 << 20
# Settings a user may have made at start-up; they win over ours.
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def configure(environ: Mapping[str, str]) -> bool:
    """Sets fixed mmap and trim thresholds; False (nothing changed) off glibc or when
    `environ` shows the user tuned malloc themselves."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in environ for name in USER_SETTINGS) or "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


@functools.cache
def keep_freed_memory() -> bool:
    """`configure` once per process, from the CPU backend's first kernel load."""
    return configure(os.environ)
