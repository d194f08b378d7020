"""Keras callbacks of a run: learning rate in the logs, step timing, NaN guard."""

import csv
import json
import math
import os
import time

import keras
import numpy as np

from asmnas_tf.rundir.run_dir import write_text_atomic
from asmnas_tf.errors import UserError


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the learning rate in force at the end of each epoch to the logs.

    Put it before CSVLogger and TensorBoard so both record it.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))


class HistoryCSV(keras.callbacks.CSVLogger):
    """Keras's CSVLogger (append mode) without its always-empty `val_*` columns.

    CSVLogger adds `val_<key>` for every key when the first epoch has no
    validation metrics, and writes NA in them for ever; a run here has none.
    A resumed run keeps the columns of the header already in the file.
    """

    def __init__(self, filename):
        super().__init__(filename, append=True)

    def on_epoch_end(self, epoch, logs=None):
        if self.keys is None:
            self.keys = self._header() or sorted((logs or {}).keys())
        super().on_epoch_end(epoch, logs)

    def _header(self):
        if not os.path.isfile(self.filename):
            return None
        with open(self.filename, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), None)
        return header[1:] if header else None


class StepTimer(keras.callbacks.Callback):
    """Time to the end of the first step (tracing included), then each step.

    `first_step_s` is what a user waits before training really starts;
    `steady_step_s` is the median of the later steps of the run.
    """

    def __init__(self, path=None):
        super().__init__()
        self.path = path
        self.first_step_s = None
        self.step_times = []
        self._start = None
        self._batch_start = None

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self.first_step_s is None:
            self.first_step_s = now - self._start
        else:
            self.step_times.append(now - self._batch_start)

    def summary(self):
        steady = float(np.median(self.step_times)) if self.step_times else None
        return {"first_step_s": self.first_step_s, "steady_step_s": steady, "steps_timed": len(self.step_times)}

    def on_train_end(self, logs=None):
        if self.path:
            write_text_atomic(self.path, json.dumps(self.summary(), indent=1) + "\n")


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite; the message is one line."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite.

    Keras's TerminateOnNaN only sets `stop_training`, so the epoch would
    still end and its (broken) state be saved over the last good one.
    Raising here ends training before anything is saved: the last saved
    state (`train_loop.py`) stays as it was. Put it first.
    """

    def __init__(self, checkpoint_dir):
        super().__init__()
        self.checkpoint_dir = checkpoint_dir
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = float(np.asarray((logs or {}).get("loss", 0.0)))
        if math.isfinite(loss):
            return
        from asmnas_tf.training.train_loop import read_state

        epoch, step, weights = read_state(self.checkpoint_dir)
        kept = (f"the last saved state (epoch {epoch}, step {step}) is kept in {self.checkpoint_dir}"
                if weights else "no state had been saved yet")
        raise NonFiniteLossError(
            f"training stopped: the loss became {loss} at epoch {self._epoch}, step {batch}; {kept}; "
            f"lower the learning rate (or check the data) and run again in a new --model_dir"
        )
