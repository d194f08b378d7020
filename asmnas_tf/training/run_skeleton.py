"""What every run (search or training) does around its own model, in one place.

The start: the strategy first (it may split the CPU into logical devices and
sets TensorFlow's thread pools, which must happen before anything touches a
device), the lean Grappler set
on a CPU host, the seeds. The callbacks: the NaN guard first, the run's own
schedules, then the writers (learning rate, history.csv, TensorBoard), which
only the chief has (SPEC §8), the step timer last. The operative config.
The argument checks both runners make, and the folder a run works in.
"""

import contextlib
import dataclasses
import os
import tempfile

import gin
import keras
import tensorflow as tf

from asmnas_tf.errors import UserError
from asmnas_tf.rundir import run_dir as rd
from asmnas_tf.rundir import run_lock
from asmnas_tf.training.callbacks import HistoryCSV, LearningRateLogger, StopOnNonFiniteLoss
from asmnas_tf.host.distribute import make_strategy
from asmnas_tf.host.graph_options import lean_grappler_on_cpu
from asmnas_tf.training.precision import apply_precision_policy
from asmnas_tf.training.train_loop import check_jit_compile, is_chief


def seed_everything(seed, deterministic):
    """Seed Python, numpy, TF and Keras; optionally make TF ops deterministic."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def start_run(seed, deterministic):
    """(strategy, chief) of this process, Grappler set, the precision policy set, everything seeded."""
    strategy = make_strategy()
    check_jit_compile(strategy)  # XLA with several replicas: refused before the data is read
    lean_grappler_on_cpu()
    apply_precision_policy()
    seed_everything(seed, deterministic)
    return strategy, is_chief(strategy)


def run_callbacks(model_dir, timer, write_files, schedules=()):
    """The run's callbacks in their order; `write_files`: the chief of a run kept on disk."""
    # First: a NaN loss must stop the run before the epoch's state is saved.
    guard = StopOnNonFiniteLoss(rd.RunDir(model_dir).checkpoints)
    writers = [
        LearningRateLogger(),  # before the two below, so that both record it
        HistoryCSV(rd.RunDir(model_dir).history),
        keras.callbacks.TensorBoard(rd.RunDir(model_dir).tensorboard, write_graph=False),
    ] if write_files else []
    return [guard, *schedules, *writers, timer]


def write_operative_config(model_dir):
    """gin's operative config: the bindings of every configurable called so far.

    Written twice per run, on purpose: once before training, so that a run
    that is killed has it; again at the end, because the configurables
    called after training (selection, inference) only appear then.
    """
    rd.write_text_atomic(os.path.join(model_dir, rd.OPERATIVE_CONFIG_FILE), gin.operative_config_str())


def check_counts(configurable, **counts):
    """Each of `counts` is (value, least): an integer >= least, else one line naming the binding."""
    for name, (value, least) in counts.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise UserError(f"{configurable}.{name}={value!r}: expected an integer >= {least}")


VERBOSE = ("auto", 0, 1, 2)  # Keras's progress modes


def check_verbose(configurable, verbose):
    if isinstance(verbose, bool) or verbose not in VERBOSE:
        raise UserError(f"{configurable}.verbose={verbose!r}: expected one of {', '.join(map(repr, VERBOSE))}")


@contextlib.contextmanager
def working_dir(model_dir, prefix):
    """(directory, keep_files): the run directory, or a temporary one removed at the end.

    The Python API writes a run directory only when given one; the run still
    needs a folder for its checkpoints while it trains. A given one is locked
    for the block (`run_lock.py`) by the chief, the one process that writes
    it; the command has taken the lock already (re-entrant).
    """
    if model_dir is not None:
        lock = is_chief(make_strategy())
        if lock:
            os.makedirs(model_dir, exist_ok=True)
            run_lock.acquire(model_dir)
        try:
            yield model_dir, True
        finally:
            if lock:
                run_lock.release(model_dir)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        yield scratch, False


def config_with(config_class, config, fields, who):
    """`config` (or the gin-bound `config_class()`) with `fields` replaced; an unknown field is one line."""
    names = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise UserError(f"{who}: unexpected argument(s) {', '.join(unknown)}; expected among {', '.join(sorted(names))}")
    return dataclasses.replace(config, **fields) if config is not None else config_class(**fields)


def check_run_bindings(configurable, verbose):
    """The bindings every run reads later, checked now, before any data: one line on a bad one.

    `verbose`, the states kept (`checkpoints.keep`, read when the first state
    is saved), the precision policy (set by `start_run`) and XLA (read by
    `train_loop.fit`).
    """
    from asmnas_tf.rundir.checkpoints import keep_states
    from asmnas_tf.training import train_loop
    from asmnas_tf.training.precision import precision_policy

    check_verbose(configurable, verbose)
    keep_states()
    precision_policy()
    train_loop.jit_compile_step()
