"""The commands' malloc settings (`host/malloc_arenas.py`): counted from glibc's own reports.

A fresh process allocates from 8 threads at once; `malloc_info` lists one
<heap> per arena. Unlimited, glibc opens one per thread (up to 8 per core);
limited, at most 2. A user's MALLOC_ARENA_MAX is left alone.
"""

import os
import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, ctypes.util, re, sys, tempfile, threading
from asmnas_tf.host.malloc_arenas import limit_malloc_arenas
applied = limit_malloc_arenas() if sys.argv[1] == "limit" else None
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.fopen.restype = ctypes.c_void_p
barrier = threading.Barrier(8)
kept = []
def work():
    barrier.wait()  # all 8 threads allocate at the same time
    for _ in range(200):
        kept.append(libc.malloc(4096))
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
with tempfile.NamedTemporaryFile("r", suffix=".xml") as report:
    stream = libc.fopen(report.name.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    print(applied, len(re.findall(r"<heap nr=", open(report.name).read())))
"""


def _probe(code, mode, setting, **env):
    """(applied, count) the probe prints in a fresh process; the user's `setting` variable unset unless in env."""
    done = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=60,
                          env={**{k: v for k, v in os.environ.items() if k != setting}, **env})
    assert done.returncode == 0, done.stderr
    applied, count = done.stdout.split()
    return applied, int(count)


def _arenas(mode, **env):
    return _probe(PROBE, mode, "MALLOC_ARENA_MAX", **env)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_two_arenas_at_most_when_limited_and_a_users_setting_is_kept():
    assert _arenas("limit") == ("True", 2)
    _, unlimited = _arenas("none")
    assert unlimited > 2  # the probe does open more arenas without the limit
    # The user's own setting: not overridden (and glibc honours it).
    assert _arenas("limit", MALLOC_ARENA_MAX="3") == ("False", 3)


# Fastbins: 500 small chunks freed; glibc's per-thread cache takes 7 of a
# size, fastbins the rest, and mallinfo2 counts the fastbin blocks (read
# before any large allocation, which would merge them back).
FASTBIN_PROBE = r"""
import ctypes, ctypes.util, sys
from asmnas_tf.host.malloc_arenas import disable_fastbins
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
applied = disable_fastbins() if sys.argv[1] == "off" else None
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.mallinfo2.restype = Mallinfo2
chunks = [libc.malloc(48) for _ in range(500)]
for chunk in chunks:
    libc.free(ctypes.c_void_p(chunk))
print(applied, libc.mallinfo2().smblks)
"""


def _fastbin_blocks(mode, **env):
    return _probe(FASTBIN_PROBE, mode, "GLIBC_TUNABLES", **env)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and mallinfo2")
def test_no_fastbin_blocks_when_disabled_and_a_users_tunable_is_kept():
    # Nearly all but the cache's 7 (a few land beside chunks Python freed): the probe does fill fastbins.
    assert _fastbin_blocks("none")[1] >= 450
    assert _fastbin_blocks("off") == ("True", 0)
    # The user's own tunable is left alone (here: fastbins kept, up to 64 bytes).
    applied, blocks = _fastbin_blocks("off", GLIBC_TUNABLES="glibc.malloc.mxfast=64")
    assert applied == "False" and blocks >= 450
