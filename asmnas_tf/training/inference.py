"""Inference over a dataset in this process alone, under any strategy.

Selection (Algorithm 1, steps 6-13) and test accuracy need the model's
outputs over a dataset. Keras's `predict`/`evaluate` distribute the batches
and gather the results with collective ops, which under
`MultiWorkerMirroredStrategy` fail like `fit` (keras-team/keras#20585). The
weights are the same on every replica and worker after training, so each
process can run the whole dataset on its own: `model(x, training=False)`
(BatchNorm on its moving statistics, nothing updated), no collective, the
same numbers everywhere.
"""

import contextlib

import numpy as np
import tensorflow as tf

from asmnas_tf.host.malloc_trim import trimming_freed_memory


def outputs_and_labels(model, dataset):
    """(outputs, labels): the model's outputs on every batch of `dataset`,
    concatenated, as numpy; the structure of `outputs` is the model's (a dict
    for the supernet, a tensor otherwise). `dataset` yields `(x, y)` batches,
    or `x` alone (then labels is None)."""

    infer = _inference_function(model)
    outputs, labels = [], []
    for batch in dataset:
        x, y = batch if isinstance(batch, tuple) else (batch, None)
        # The first call builds the graph: its freed memory goes back (malloc_trim.py).
        with trimming_freed_memory() if not outputs else contextlib.nullcontext():
            outputs.append(tf.nest.map_structure(np.asarray, infer(x)))
        if y is not None:
            labels.append(np.asarray(y))
    joined = tf.nest.map_structure(lambda *parts: np.concatenate(parts), *outputs)
    return joined, np.concatenate(labels) if labels else None


def _inference_function(model):
    """One traced `model(x, training=False)` per model: a search selects on its
    untrained and its trained supernet, and the second call need not trace again.

    Kept on the model itself (past Keras's attribute tracking), so it goes
    when the model goes.
    """
    infer = model.__dict__.get("_asmnas_inference")
    if infer is None:
        @tf.function(reduce_retracing=True)
        def infer(x):
            return model(x, training=False)

        object.__setattr__(model, "_asmnas_inference", infer)
    return infer


def accuracy(logits, labels):
    """Top-1 accuracy of [N, classes] logits; None without labels."""
    return None if labels is None else float(np.mean(np.argmax(logits, axis=-1) == labels))


def classification_metrics(logits, labels):
    """Test metrics of [N, classes] logits: accuracy, top-5 accuracy, mean cross-entropy."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    top5 = np.argsort(-logits, axis=-1)[:, :5]
    return {
        "accuracy": accuracy(logits, labels),
        "top5_accuracy": float(np.mean(np.any(top5 == labels[:, None], axis=-1))),
        "loss": float(-np.mean(log_probs[np.arange(len(labels)), labels])),
    }
