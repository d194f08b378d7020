"""glibc malloc settings for the commands: fewer arenas (peak RSS), no fastbins (start-up).

glibc gives each thread that allocates concurrently its own arena (up to 8
per core) and keeps what each one freed. TensorFlow's graph building,
Grappler and executor threads spread the first step's allocations over many
arenas, and the peak resident memory is their sum. Two arenas: the
paper-size supernet (L = 15, C = 16, batch 16) peaked at 4.73 GB against
5.01-5.05 GB, with the step unchanged within its noise; one arena: 4.58 GB
but the step 25% slower (lock contention). Measured in docs/bench-log.md.

Fastbins off (`mallopt(M_MXFAST, 0)`): glibc keeps small freed chunks
in per-size "fast" lists and merges them all back (`malloc_consolidate`)
whenever a large chunk is requested or freed, and at every `malloc_trim`
(`malloc_trim.py`). Grappler and the graph's instantiation allocate and free
many small objects (protobuf messages, graph nodes) between large tensors: at the
paper's size `malloc_consolidate` alone was 4.8% of the process's samples
(`perf record`). Without fastbins small chunks go to glibc's per-thread
cache and its ordinary bins: the paper-size supernet's first step 1.0-4.0 s
shorter in seven pairs, the steady step and peak RSS unchanged
(docs/bench-log.md).

Set by the commands (`cli.py`) before TensorFlow starts its threads; a
user's own `MALLOC_ARENA_MAX` (or `GLIBC_TUNABLES`' `glibc.malloc.mxfast`)
wins. A Python API user can export `MALLOC_ARENA_MAX=2` and
`GLIBC_TUNABLES=glibc.malloc.mxfast=0` for the same effect. Elsewhere than
glibc: nothing.
"""

import ctypes
import ctypes.util
import os

M_MXFAST = 1  # glibc's mallopt parameters (malloc.h)
M_ARENA_MAX = -8
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


def disable_fastbins():
    """mallopt(M_MXFAST, 0) unless GLIBC_TUNABLES sets mxfast; returns whether it was applied."""
    if "glibc.malloc.mxfast" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    mallopt = glibc_function("mallopt")
    return mallopt is not None and bool(mallopt(M_MXFAST, 0))
