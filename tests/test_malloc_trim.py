"""Freed heap memory back to the OS during a first call (`host/malloc_trim.py`), in RSS.

A fresh process fills 100 MB of small heap chunks, keeps one chunk above
them (so that glibc cannot give the memory back by lowering the heap's
top), and frees the rest: glibc keeps those pages resident. Inside
`trimming_freed_memory` its thread gives them back within an interval;
without it they stay.
"""

import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, ctypes.util, sys, threading, time
from asmnas_tf.host.malloc_trim import trimming_freed_memory
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20
chunks = []
for _ in range(50_000):
    chunk = libc.malloc(2048)
    ctypes.memset(chunk, 1, 2048)  # resident: written
    chunks.append(chunk)
pin = libc.malloc(2048)  # above them: the heap's top cannot shrink
before = rss_mb()
for chunk in chunks:
    libc.free(chunk)
freed = rss_mb()
if sys.argv[1] == "trim":
    with trimming_freed_memory(interval_s=0.2):
        time.sleep(0.7)
        during = rss_mb()
    threads = sum(t.name == "malloc_trim" for t in threading.enumerate())
else:
    time.sleep(0.7)
    during, threads = rss_mb(), 0
print(round(before - freed, 1), round(before - during, 1), threads)
"""


def _released_mb(mode):
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    at_free, during, threads = done.stdout.split()
    return float(at_free), float(during), int(threads)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_the_freed_pages_go_back_inside_the_block_and_stay_without_it():
    # 50,000 x 2 KB = 97.7 MiB written, then freed.
    at_free, during, threads = _released_mb("plain")
    assert at_free < 10 and during < 10  # glibc alone keeps them resident
    at_free, during, threads = _released_mb("trim")
    assert at_free < 10
    assert during > 90  # given back by the thread, before the block ended
    assert threads == 0  # and the thread is gone after it
