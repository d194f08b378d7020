"""Test-time augmentation: the mean of the probabilities on an image and its mirror.

`run_train.test_time_augmentation = 'flip'` tests the network on each test
image and on its left-right mirror and averages the two softmax outputs
(the fast-training literature's TTA: airbench, Page's ResNet). It is
defined only where training flipped the images (`make_dataset.flip`): a
network never shown mirrored digits or text has no reason to agree with
itself on them. The served model averages the same way only when the
export asks for it (`export_saved_model.test_time_augmentation`).
"""

import numpy as np
import tensorflow as tf

from asmnas_tf.errors import UserError
from asmnas_tf.names import LOGITS
from asmnas_tf.training.inference import classification_metrics, outputs_and_labels

TEST_TIME_AUGMENTATIONS = ("flip",)


def check_test_time_augmentation(value, training_flips=True, binding="run_train.test_time_augmentation"):
    """None or 'flip'; 'flip' only for a training that flips (`make_dataset.flip`)."""
    if value is None:
        return
    if value not in TEST_TIME_AUGMENTATIONS:
        raise UserError(f"{binding}={value!r}: expected None or one of "
                        f"{', '.join(repr(v) for v in TEST_TIME_AUGMENTATIONS)}")
    if not training_flips:
        raise UserError(f"{binding}={value!r} is not defined for this data: its training does not flip "
                        f"images (make_dataset.flip = False); leave it None")


def mirrored(images):
    """Left-right mirror of NHWC images."""
    return tf.reverse(images, axis=[2])


def softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def tta_metrics(model, dataset, test_time_augmentation=None):
    """Test metrics of the model on `dataset` ((x, y) batches), with and without TTA.

    Returns {"accuracy", "top5_accuracy", "loss"} of what is reported (the
    TTA mean when asked for) and, with TTA, "single_view_accuracy" (the
    plain network's). The TTA prediction's "logits" are the log of the mean
    probabilities, so accuracy and cross-entropy are read off them as usual.
    """
    outputs, labels = outputs_and_labels(model, dataset)
    plain = classification_metrics(outputs[LOGITS], labels)
    if test_time_augmentation is None:
        return plain
    flipped, _ = outputs_and_labels(model, dataset.map(lambda x, y: (mirrored(x), y)))
    mean_probabilities = 0.5 * (softmax(outputs[LOGITS]) + softmax(flipped[LOGITS]))
    metrics = classification_metrics(np.log(np.maximum(mean_probabilities, 1e-300)), labels)
    return {**metrics, "single_view_accuracy": plain["accuracy"]}
