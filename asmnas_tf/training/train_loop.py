"""The training loop of search and evaluation: `model.fit`'s, on `strategy.run`.

Why not `model.fit`: under `MultiWorkerMirroredStrategy` Keras 3's `fit`
fails (keras-team/keras#20585: its log reduction calls
`strategy.reduce(..., axis=0)` on scalar metrics). This loop runs the same
`model.train_step` (the same maths: loss, global-norm clip, optimizer)
through `strategy.run` in one `tf.function` for every strategy, one replica,
mirrored or multi-worker, and drives ordinary Keras callbacks (CSVLogger,
TensorBoard, progress bar, ours).

It also resumes inside an epoch. Every `save_every_steps` steps and at the
end of every epoch the chief saves the training state (weights, optimizer
slots and step count, BatchNorm statistics: `model.save_weights`) with the
position (epoch, step) in `checkpoint_dir` (`checkpoints.py`: verified,
the last two kept); SIGTERM or Ctrl-C saves it at the current step and
stops (`stop_signals.py`). A restarted run loads the newest good one, creates
the data iterators of the epochs already done without reading them, which
moves tf.data's shuffle and augmentation seeds on exactly as the first run
did (`make_dataset` reshuffles per iterator), skips the batches of the
current epoch already trained, and goes on. With
`tf.config.experimental.enable_op_determinism()` an interrupted run ends
with the same weights as an uninterrupted one. Per-epoch metrics of the
resumed epoch cover only its steps after the restart.
"""

import contextlib

import gin
import keras
import numpy as np
import tensorflow as tf
from asmnas_tf.errors import UserError

from asmnas_tf.rundir.checkpoints import STATE_FILE, load_state, read_state, save_state  # noqa: F401
from asmnas_tf.host.malloc_trim import trimming_freed_memory
from asmnas_tf.rundir.stop_signals import RunStopped, stop_on_signals


class WorkerLostError(UserError):
    """A worker of a multi-worker cluster stopped; the message is one line."""


# What a collective op raises when a peer worker is gone.
_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError,
                tf.errors.DeadlineExceededError, tf.errors.InternalError)


def is_chief(strategy):
    """The chief (or worker 0 when the cluster names no chief, or the only
    process) writes; the other workers only compute."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return not has_chief and resolver.task_type == "worker" and resolver.task_id == 0


@gin.configurable
def jit_compile_step(enabled=False):
    """Whether the train step is compiled by XLA (`tf.function(jit_compile=True)`), as Keras's `jit_compile`.

    Off by default, as Keras: on a 2-core CPU it was measured only at tiny
    sizes (docs/bench-log.md); on a GPU `bench/gpu.sh` measures it. One replica only: the clip's and the
    optimizer's all-reduce do not compile.
    """
    if not isinstance(enabled, bool):
        raise UserError(f"jit_compile_step.enabled={enabled!r}: expected True or False")
    return enabled


def check_jit_compile(strategy, jit_compile=None):
    """Refuses XLA with more than one replica, in one line, before any work."""
    jit_compile = jit_compile_step() if jit_compile is None else jit_compile
    if jit_compile and strategy.num_replicas_in_sync > 1:
        raise UserError(f"jit_compile_step.enabled=True needs one replica; this strategy has "
                        f"{strategy.num_replicas_in_sync}")
    return jit_compile


def replica_step(step, jit_compile=False):
    """A replica's step (what `strategy.run` runs), XLA-compiled with `jit_compile`, as Keras's `fit` does it.

    Traced as plain Python, not through AutoGraph, as Keras's `fit` does
    (`trainer.py`'s `do_not_convert`): the step has no Python control flow
    on tensors, and AutoGraph's `converted_call` wrapped every variable's
    optimizer update and clip (about 4 conversions a variable: 550 for an
    8-cell evaluation network) for an identical graph (docs/bench-log.md).
    """
    step = tf.autograph.experimental.do_not_convert(step)
    return tf.function(step, jit_compile=True) if jit_compile else step


def _train_function(model, strategy, jit_compile=False):
    step = replica_step(model.train_step, jit_compile)

    @tf.function
    def train(batch):
        logs = strategy.run(step, args=(batch,))
        # Metric results are equal on every replica; MEAN over axis None is a
        # plain all-reduce that every strategy supports.
        return {k: strategy.reduce("MEAN", v, axis=None) for k, v in logs.items()}

    return train


@contextlib.contextmanager
def _peer_loss_as_one_line(strategy, checkpoint_dir):
    """Under several workers, a lost peer becomes one clear line.

    Not only a training step talks to the other workers: saving the state
    reads the on-read (summed) variables, metrics among them, through an
    eager all-reduce (`cross_device_ops`' thread pool), and so can a
    callback. A worker killed while the chief is in any of them raises the
    same peer errors there, so the whole loop is covered, not the step alone.

    TensorFlow cannot go on with fewer workers: every worker must be started
    again, and they resume together from the last saved state.
    """
    try:
        yield
    except _PEER_ERRORS as error:
        if not is_multi_worker(strategy):
            raise
        epoch, step, weights = read_state(checkpoint_dir)
        kept = f"the last saved state (epoch {epoch}, step {step})" if weights else "no saved state yet"
        first_line = (str(error.message).strip().splitlines() or [type(error).__name__])[0][:200]
        raise WorkerLostError(
            f"a worker of the cluster stopped ({type(error).__name__}: {first_line}); {kept} is in "
            f"{checkpoint_dir}; run the same command again on every worker to resume"
        ) from None


def is_multi_worker(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return bool(resolver is not None and resolver.task_type)


def _python_logs(logs):
    return {k: float(np.asarray(v)) for k, v in logs.items()}


def fit(model, dataset, *, epochs, strategy, checkpoint_dir, callbacks=(), save_every_steps=0,
        steps_per_epoch=None, verbose="auto", jit_compile=None):
    """Train `model` on `dataset` (one pass per epoch); returns a keras History.

    `checkpoint_dir`: where the chief saves and every worker reads the state
    (a shared folder on a cluster). `save_every_steps`: 0 saves at epoch ends
    only. `steps_per_epoch`: for the progress bar (None: unknown).
    `jit_compile`: XLA for the step; None reads `jit_compile_step` (gin).
    """
    jit_compile = check_jit_compile(strategy, jit_compile)
    # The optimizers' slots exist (compile_* built them), so every variable loads.
    start_epoch, start_step = load_state(model, checkpoint_dir)
    chief = is_chief(strategy)
    if verbose == "auto":
        verbose = 1
    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList(
        [*callbacks, history], add_history=False, add_progbar=verbose != 0, model=model,
        verbose=verbose, epochs=epochs, steps=steps_per_epoch,
    )
    # Shard by data (every worker builds the same pipeline and takes its part
    # of each global batch), never by file: the arrays come from memory.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    distributed = strategy.experimental_distribute_dataset(dataset.with_options(options))
    train = _train_function(model, strategy, jit_compile)
    model.stop_training = False
    first_call = True
    with _peer_loss_as_one_line(strategy, checkpoint_dir), stop_on_signals() as stop:
        callback_list.on_train_begin()
        for epoch in range(epochs):
            # Create every epoch's iterator, trained or not: each creation moves
            # the pipeline's shuffle/augmentation seeds on (see module doc).
            iterator = iter(distributed)
            if epoch < start_epoch:
                continue
            skip = start_step if epoch == start_epoch else 0
            model.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            logs = {}
            for step, batch in enumerate(iterator):
                if step < skip:
                    continue  # trained before the restart: read, not trained again
                callback_list.on_train_batch_begin(step)
                # The first call builds the step's graph: its freed memory goes back
                # before the activations come on top of it (malloc_trim.py).
                with trimming_freed_memory() if first_call else contextlib.nullcontext():
                    logs = _python_logs(train(batch))
                first_call = False
                callback_list.on_train_batch_end(step, logs)
                if chief and save_every_steps and (step + 1) % save_every_steps == 0:
                    save_state(model, checkpoint_dir, epoch, step + 1)
                if stop.signum:
                    _stop(model, strategy, checkpoint_dir, stop, epoch, step + 1)
                if model.stop_training:
                    break
            if chief:  # before the callbacks: a kill inside them loses no training
                save_state(model, checkpoint_dir, epoch + 1, 0)
            callback_list.on_epoch_end(epoch, dict(logs))
            if stop.signum:
                _stop(model, strategy, checkpoint_dir, stop, epoch + 1, 0)
            if model.stop_training:
                break
        callback_list.on_train_end()
    return history


def _stop(model, strategy, checkpoint_dir, stop, epoch, step):
    """End training on a stop request: the state at (epoch, step) saved, then RunStopped.

    Under several workers the chief cannot save alone (saving reads summed
    variables through an all-reduce the other workers are not in), so the
    last saved state is the one a rerun resumes from.
    """
    if is_multi_worker(strategy):
        epoch, step, _ = read_state(checkpoint_dir)
        kept = f"the last saved state (epoch {epoch}, step {step}) is in {checkpoint_dir}"
    else:
        save_state(model, checkpoint_dir, epoch, step)
        kept = f"the state at epoch {epoch}, step {step} is saved in {checkpoint_dir}"
    raise RunStopped(f"stopped by {stop.name}: {kept}; run the same command again to resume", stop.signum)

