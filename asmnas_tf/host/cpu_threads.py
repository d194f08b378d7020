"""TensorFlow's thread pools on a CPU-only host: one op per core at a time, each op on one thread.

TensorFlow's defaults let as many ops run at once as there are cores (the
inter-op pool) and let each op split its work over as many threads again
(the intra-op pool, which oneDNN's kernels use too): on a 2-core host, up
to four busy threads on two cores. The supernet's step is ~40,000 small
ops, many of them independent (the 8 ops of an edge, the edges into a
node): the ops themselves are the parallelism, and splitting each one only
adds hand-offs and threads waiting on each other. Measured on a 2-core AMD
EPYC (docs/bench-log.md): the supernet's step at L = 8
1.62-1.68 s with the defaults, 1.00-1.05 s with two ops at once on one
thread each; one op at a time on one thread: 1.70-1.75 s.

The pools are made when TensorFlow's runtime starts, so this is set before
anything runs: by `distribute.make_strategy`, which every command and API
run calls before its first op. Where the runtime has started already (a
notebook that ran TensorFlow before calling the API), they stay as they are
and the process says so once, in one line. On a GPU host
TensorFlow's defaults are kept (its ops there are few and large; not
measured).
"""

import os

import gin
import tensorflow as tf

from asmnas_tf.errors import UserError

_noted = []  # the pools a note was printed for


def available_cores():
    """The cores this process may run on (its affinity mask), or the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@gin.configurable
def one_thread_per_op_on_cpu(enabled=True, inter_op=0):
    """Intra-op pool of 1 and an inter-op pool of `inter_op` (0: the available cores), CPU hosts only.

    Returns whether TensorFlow now runs with those pools.
    """
    if isinstance(inter_op, bool) or not isinstance(inter_op, int) or inter_op < 0:
        raise UserError(f"one_thread_per_op_on_cpu.inter_op={inter_op!r}: expected an integer >= 0 "
                        f"(0: one per available core)")
    if not enabled or tf.config.list_physical_devices("GPU"):
        return False
    wanted = (inter_op or available_cores(), 1)
    try:
        tf.config.threading.set_inter_op_parallelism_threads(wanted[0])
        tf.config.threading.set_intra_op_parallelism_threads(wanted[1])
    except RuntimeError:  # the runtime has started: its pools cannot change any more
        current = (tf.config.threading.get_inter_op_parallelism_threads(),
                   tf.config.threading.get_intra_op_parallelism_threads())
        if current != wanted and not _noted:
            _noted.append(current)  # once a process: every strategy a run makes comes here
            print(f"Note: TensorFlow had started before this run; its thread pools stay as they were "
                  f"(inter-op {current[0] or 'default'}, intra-op {current[1] or 'default'})")
        return current == wanted
    return True
