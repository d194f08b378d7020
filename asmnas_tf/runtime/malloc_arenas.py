"""Fewer glibc malloc arenas for the commands: the paper-size supernet's peak RSS under PyTorch's.

glibc gives each thread that allocates concurrently its own arena (up to 8
per core) and keeps what each one freed. TensorFlow's graph building,
Grappler and executor threads spread the first step's allocations over many
arenas, and the peak resident memory is their sum. Two arenas: the
paper-size supernet (L = 15, C = 16, batch 16) peaked at 4.73 GB against
5.01-5.05 GB, with the step unchanged within its noise; one arena: 4.58 GB
but the step 25% slower (lock contention). Measured in bench/README.md.

Set by the commands (`cli.py`) before TensorFlow starts its threads; a
user's own `MALLOC_ARENA_MAX` wins. A Python API user can export
`MALLOC_ARENA_MAX=2` for the same effect. Elsewhere than glibc: nothing.
"""

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
ARENAS = 2


def glibc_function(name):
    """The C library's function `name` (mallopt, malloc_trim, ...), or None where it has none (not glibc)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def limit_malloc_arenas(arenas=ARENAS):
    """mallopt(M_ARENA_MAX, arenas) unless MALLOC_ARENA_MAX is set; returns whether it was applied."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    mallopt = glibc_function("mallopt")
    return mallopt is not None and bool(mallopt(M_ARENA_MAX, int(arenas)))
