"""TensorFlow's thread pools on a CPU host (`host/cpu_threads.py`), each case in a fresh process.

The pools are fixed when TensorFlow's runtime starts, so what a command
gets is only seen in a process of its own: the pools TensorFlow reports
after an op has run, and the one line a run prints where they could no
longer be set.
"""

import os
import subprocess
import sys

import pytest

from asmnas_tf.errors import UserError
from asmnas_tf.host.cpu_threads import available_cores, one_thread_per_op_on_cpu

PROBE = r"""
import os, sys
import tensorflow as tf
from asmnas_tf.host.cpu_threads import one_thread_per_op_on_cpu
mode = sys.argv[1]
if mode == "one_core":
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # as `taskset -c N` would
if mode == "started":
    tf.constant(1.0) + 1.0  # the runtime starts here, with TensorFlow's default pools
kwargs = {"inter_op": 3} if mode == "three" else {"enabled": False} if mode == "disabled" else {}
if mode == "strategy":  # what every command and API run does first
    from asmnas_tf.host.distribute import make_strategy
    make_strategy()
    applied = True
else:
    applied = one_thread_per_op_on_cpu(**kwargs)
if mode == "started":  # a run makes its strategy more than once: one note
    applied = one_thread_per_op_on_cpu() or applied
total = float(tf.reduce_sum(tf.range(10.0)))  # an op runs: the pools exist now
print("RESULT", applied, tf.config.threading.get_inter_op_parallelism_threads(),
      tf.config.threading.get_intra_op_parallelism_threads(), total)
"""


def _probe(mode):
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    result = lines[-1].split()
    assert result[0] == "RESULT" and result[-1] == "45.0"
    return (result[1] == "True", int(result[2]), int(result[3])), lines[:-1]


@pytest.mark.parametrize("mode, expected", [
    ("default", (True, None, 1)),  # one inter-op thread per available core
    ("strategy", (True, None, 1)),  # distribute.make_strategy sets them
    ("one_core", (True, 1, 1)),  # the process's affinity, not the machine's cores
    ("three", (True, 3, 1)),
    ("disabled", (False, 0, 0)),  # 0: TensorFlow's own choice
])
def test_pools_are_set_before_the_runtime_starts(mode, expected):
    pools, printed = _probe(mode)
    assert pools == (expected[0], available_cores() if expected[1] is None else expected[1], expected[2])
    assert printed == []


def test_a_started_runtime_keeps_its_pools_and_says_so_once_in_one_line():
    pools, printed = _probe("started")
    assert pools == (False, 0, 0)
    assert printed == ["Note: TensorFlow had started before this run; its thread pools stay as they were "
                       "(inter-op default, intra-op default)"]


@pytest.mark.parametrize("inter_op", [-1, 1.5, True, "2"])
def test_a_bad_inter_op_is_one_line(inter_op):
    with pytest.raises(UserError, match=r"^one_thread_per_op_on_cpu\.inter_op=.*expected an integer >= 0"):
        one_thread_per_op_on_cpu(inter_op=inter_op)
