"""One OpenMP thread pool at a time: what keeps libgomp's workers awake within a step.

libgomp (PyTorch's OpenMP, which our C kernels share) gives every thread that starts parallel
regions a pool of workers of its own, and counts them all. While they outnumber the CPUs, a
worker waiting at a barrier spins 100 times and then sleeps on a futex, whatever
`GOMP_SPINCOUNT` says: every parallel region of a decode step (a hundred of them) then pays
wake-ups, which cost tens of microseconds each in a virtual machine. Loading a model runs
torch on the calling thread, which keeps its pool (one worker on 2 cores) beside the engine
thread's: three workers on two CPUs, and every step is throttled.

`release_pool()` frees the calling thread's pool (OpenMP 5.0's `omp_pause_resource_all`):
the async engine calls it on the thread that loaded the model before its own thread starts,
the embedding service on the thread that loaded its models, and its worker after each
forward. Measured on the 0.6B benchmark model on 2 cores
(engine alone, interleaved): float32 single-stream decode 16-18 -> 22-25 tok/s, INT8 29-35
-> 49-52, float32 at 16 streams 69 -> 81 tok/s.

Where torch runs another OpenMP (LLVM's libomp on macOS, Intel's) or none, this does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
from functools import cache

log = logging.getLogger("glm_api")

_PAUSE_SOFT = 1  # omp_pause_soft: the host's threads and pools are freed either way


@cache
def _libgomp() -> ctypes.CDLL | None:
    """The libgomp this process already runs (torch's), never a second one."""
    no_load = getattr(os, "RTLD_NOLOAD", None)
    if no_load is None:  # not Linux / glibc
        return None
    try:
        library = ctypes.CDLL("libgomp.so.1", mode=no_load)
        library.omp_pause_resource_all.argtypes = [ctypes.c_int]
        library.omp_pause_resource_all.restype = ctypes.c_int
    except (OSError, AttributeError):  # not loaded, or older than OpenMP 5.0
        return None
    return library


def release_pool() -> bool:
    """Free the calling thread's OpenMP workers (they come back at its next parallel region);
    False where there is no libgomp pool to free. Not within a parallel region."""
    library = _libgomp()
    if library is None:
        return False
    released = library.omp_pause_resource_all(_PAUSE_SOFT) == 0
    if not released:
        log.debug("omp_pause_resource_all failed: this thread's OpenMP pool stays")
    return released
