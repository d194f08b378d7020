"""TensorBoard HParams: one session per run, its settings and its final figures.

A search writes its session into its TensorBoard folder (method, seed, the
search's options and remedies, the supernet's size; selection accuracy and
the attention's drift); `compare` writes one per (method, seed) task (test
accuracy, parameters, times). TensorBoard's HParams tab then lists, filters
and plots the runs of a folder side by side (`tensorboard --logdir runs/`).
"""

import json
import numbers

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp


def plain(value):
    """A value the HParams plugin holds (bool, int, float, str): others as their JSON text."""
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return json.dumps(value, sort_keys=True, default=str)


def write_session(log_dir, trial_id, hparams, metrics):
    """Writes one HParams session to `log_dir`: `hparams` {name: value}, `metrics` {name: number} at step 0."""
    writer = tf.summary.create_file_writer(log_dir)
    try:
        with writer.as_default():
            hp.hparams({name: plain(value) for name, value in hparams.items()}, trial_id=trial_id)
            for name, value in metrics.items():
                if value is not None:
                    tf.summary.scalar(name, float(value), step=0)
        writer.flush()
    finally:
        writer.close()
