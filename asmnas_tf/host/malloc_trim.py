"""Freed heap memory back to the OS while a step's first call builds its graph.

A `tf.function`'s first call turns the traced graph into an executable one
(function inlining, Grappler, placement, kernel creation). At the paper's
supernet size (L = 15, C = 16, batch 16) the process grows from 0.8 to
2.0 GB there, most of it freed again once the graph is optimised; but
glibc keeps freed memory inside its heaps (only the top of a heap is
returned on `free`), and the step's activations, held by TensorFlow's own
pool allocator (3.1 GB at its peak), then come on top of it: peak RSS
4.9-5.1 GB. `malloc_trim(0)` hands every free page of every arena back;
called every half second while the first call runs, the peak was 4.35 GB
and the first call no slower (docs/bench-log.md).

Used around the first call of the training step (`train_loop.fit`) and of
inference (`inference.py`); later calls build nothing. Elsewhere than glibc
it does nothing.
"""

import contextlib
import threading

from asmnas_tf.host.malloc_arenas import glibc_function

INTERVAL_S = 0.5


@contextlib.contextmanager
def trimming_freed_memory(interval_s=INTERVAL_S):
    """While the block runs, a daemon thread returns the freed heap pages every `interval_s`.

    ctypes releases the GIL for the call, so the block's own Python and
    TensorFlow threads go on meanwhile. One last trim when the block ends.
    """
    trim = glibc_function("malloc_trim")
    if trim is None:
        yield
        return
    done = threading.Event()

    def run():
        while not done.wait(interval_s):
            trim(0)

    thread = threading.Thread(target=run, name="malloc_trim", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        trim(0)
