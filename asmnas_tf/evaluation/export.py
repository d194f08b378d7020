"""Serving export: a trained run directory -> `<model_dir>/saved_model/` (SPEC §8).

The SavedModel has one signature, `serving_default`:

    images: uint8 [batch, H, W, C]  (raw pixels, any batch size)
    ->  probabilities: float32 [batch, classes]
        class_ids:     int64   [batch]

The per-channel normalisation of training (mean/std, saved by the training
run in `normalization.json`) is inside the graph, and the auxiliary head is
not (the model is called in inference mode). Loading it needs TensorFlow
only: `tf.saved_model.load(path).signatures["serving_default"]`.

The signature's TensorSpec refuses another dtype ("... was expected to be a
uint8 tensor but is a float tensor"); a wrong rank or size (which a loaded
signature does not check) fails a check inside the graph before the model
runs: "serving_default expects uint8 images of shape [batch, 28, 28, 1];
received shape [2 28 28 3]" (InvalidArgumentError).

The export is written to a temporary directory next to its destination and
renamed into place, so a failed export leaves no partial `saved_model/`.
The other formats (LiteRT, ONNX) are converted from it: `export_formats.py`.
"""

import json
import os
import shutil
import tempfile
import zipfile

import gin
import keras
import numpy as np
import tensorflow as tf

from asmnas_tf.evaluation import builder as eval_net  # noqa: F401  (registers every layer for loading)
from asmnas_tf.evaluation import tta
from asmnas_tf.evaluation.model import LOGITS
from asmnas_tf.errors import UserError

from asmnas_tf.rundir.run_dir import MODEL_FILE, NORMALIZATION_FILE, SAVED_MODEL_DIR
SIGNATURE = "serving_default"
INPUT_NAME = "images"


class ExportError(UserError):
    """A run directory that cannot be exported; the message is one line."""


def normalization_info(mean, std, image_shape, num_classes, dataset):
    """What the served graph needs to normalise raw pixels (normalization.json)."""
    return {
        "mean": [float(v) for v in np.reshape(mean, -1)],
        "std": [float(v) for v in np.reshape(std, -1)],
        "scale": 255.0,
        "image_shape": [int(d) for d in image_shape],
        "num_classes": int(num_classes),
        "dataset": dataset,
    }


def write_normalization(model_dir, mean, std, image_shape, num_classes, dataset):
    """Saved at training time, for the export."""
    write_normalization_info(model_dir, normalization_info(mean, std, image_shape, num_classes, dataset))


def write_normalization_info(model_dir, info):
    """`info` as `normalization_info` made it, to <model_dir>/normalization.json."""
    from asmnas_tf.rundir.run_dir import write_text_atomic

    write_text_atomic(os.path.join(model_dir, NORMALIZATION_FILE), json.dumps(info, indent=1) + "\n")


def read_normalization(model_dir):
    path = os.path.join(model_dir, NORMALIZATION_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as error:
        raise ExportError(f"--model_dir={model_dir}: cannot read {NORMALIZATION_FILE} ({error})") from None
    channels = info["image_shape"][-1]
    if len(info["mean"]) != channels or len(info["std"]) != channels:
        raise ExportError(f"{path}: mean/std should have {channels} values, one per channel")
    return info


def _checked(images, image_shape):
    """`images`, after a run-time check of its rank and sizes.

    A signature called from a loaded SavedModel checks the dtype only: a
    wrong shape would reach the convolutions (and a wrong rank can abort the
    process inside the CPU kernels). The shape is padded with -1 so that one
    comparison covers the rank too; the model waits for the check.
    """
    shape = tf.shape(images, out_type=tf.int32)
    padded = tf.concat([shape, tf.fill([5], -1)], axis=0)[1:5]
    ok = tf.reduce_all(tf.equal(padded, tf.constant([*image_shape, -1], tf.int32)))
    height, width, channels = image_shape
    check = tf.debugging.Assert(
        ok,
        [f"{SIGNATURE} expects uint8 images of shape [batch, {height}, {width}, {channels}]; received shape", shape],
        summarize=8,
        name="check_image_shape",
    )
    with tf.control_dependencies([check]):
        return tf.identity(images)


def serving_function(model, info, test_time_augmentation=None):
    """tf.function: uint8 images [None, H, W, C] -> {probabilities, class_ids}.

    With `test_time_augmentation='flip'` the probabilities are the mean of
    the image's and its mirror's, as the training run tested (`tta.py`).
    """
    # numpy, made constants inside the graph: a tensor made out here would be
    # a captured input of the function, which tf2onnx turns into an input of
    # the ONNX model.
    mean = np.asarray(info["mean"], np.float32)
    std = np.asarray(info["std"], np.float32)
    scale = float(info["scale"])
    image_shape = [int(d) for d in info["image_shape"]]
    spec = tf.TensorSpec([None, *image_shape], tf.uint8, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(images):
        images = _checked(images, image_shape)
        x = (tf.cast(images, tf.float32) / scale - tf.constant(mean)) / tf.constant(std)
        probabilities = tf.nn.softmax(model(x, training=False)[LOGITS], axis=-1)
        if test_time_augmentation == "flip":
            mirrored = tf.nn.softmax(model(tta.mirrored(x), training=False)[LOGITS], axis=-1)
            probabilities = 0.5 * (probabilities + mirrored)
        return {
            "probabilities": probabilities,
            "class_ids": tf.argmax(probabilities, axis=-1, output_type=tf.int64),
        }

    return serve


def load_trained_model(model_dir):
    path = os.path.join(model_dir, MODEL_FILE)
    if not os.path.isfile(path):
        raise ExportError(
            f"--model_dir={model_dir} holds no trained model ({MODEL_FILE} is missing); "
            f"train it first with bin/train --model_dir={model_dir}"
        )
    # Keras reports a file that is not a zip archive as "File not found".
    if not zipfile.is_zipfile(path):
        raise ExportError(f"{path} is not a .keras file (not a zip archive: corrupt or truncated); "
                          f"train again with bin/train --model_dir={model_dir}")
    try:
        # compile=False: serving needs no optimizer (and no custom optimizer class).
        # safe_mode=True, explicitly: a model file never runs code (a Lambda
        # layer's pickled function is refused).
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as error:  # e.g. safe_mode's refusal: say which file
        raise ExportError(f"{path} cannot be loaded: {error}") from None


@gin.configurable(denylist=["model_dir", "model", "info", "destination", "check_only"])
def export_saved_model(model_dir, model=None, info=None, destination=None, test_time_augmentation=None,
                       check_only=False):
    """Writes `<model_dir>/saved_model/` (or `destination`) from the trained model; returns its path.

    `model` and `info` (its normalization) default to the run directory's;
    given both, `model_dir` may be None (a model trained without one).
    `test_time_augmentation`: None (one view) or 'flip' (the served
    probabilities average the image and its mirror; only when asked for).
    `check_only`: check the bindings and return None.
    """
    tta.check_test_time_augmentation(test_time_augmentation,
                                     binding="export_saved_model.test_time_augmentation")
    if check_only:
        return None
    if model_dir is not None and not os.path.isdir(model_dir):
        raise ExportError(f"--model_dir={model_dir} does not exist")
    if model is None:
        model = load_trained_model(model_dir)
    if info is None:
        info = read_normalization(model_dir)
    destination = destination or os.path.join(model_dir, SAVED_MODEL_DIR)
    parent = os.path.dirname(os.path.abspath(destination))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{SAVED_MODEL_DIR}-", dir=parent)
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(SIGNATURE, serving_function(model, info, test_time_augmentation))
        archive.write_out(staging, verbose=False)
        _replace_directory(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def export(source, destination=None, test_time_augmentation=None, formats=("saved_model",),
           calibration_images=None):
    """The Python API's export: a `TrainResult` or a run directory -> serving files.

    `formats`: names from `export_formats.FORMATS` (saved_model, litert,
    litert_float16, litert_int8, onnx), a sequence or a comma list.
    Returns the path of the one format asked for (by default the
    SavedModel's), or {format: path} when several are.
    `destination`: where the SavedModel goes (default `<run dir>/saved_model`;
    required for a result trained without a run directory, whose other
    files then go next to it).
    `test_time_augmentation`: as `export_saved_model`'s.
    `calibration_images`: uint8 [N, H, W, C] for litert_int8 (default: the
    run directory's training images).
    """
    from asmnas_tf.evaluation.export_formats import write_formats

    options = dict(destination=destination, test_time_augmentation=test_time_augmentation,
                   calibration_images=calibration_images)
    if isinstance(source, (str, os.PathLike)):
        paths = write_formats(os.fspath(source), formats, **options)
    elif source.model is None:  # an already complete run: its files hold the model
        paths = write_formats(source.model_dir, formats, **options)
    elif destination is None and source.model_dir is None:
        raise ExportError("export: this model was trained without a run directory; pass destination=<a folder>")
    else:
        paths = write_formats(source.model_dir, formats, model=source.model, info=source.normalization, **options)
    return next(iter(paths.values())) if len(paths) == 1 else paths


def _replace_directory(new, destination):
    """rename(new -> destination); an older export is moved aside, then deleted."""
    old = None
    if os.path.exists(destination):
        old = tempfile.mkdtemp(prefix=f".{SAVED_MODEL_DIR}-old-", dir=os.path.dirname(destination))
        os.rmdir(old)
        os.rename(destination, old)
    os.rename(new, destination)
    if old:
        shutil.rmtree(old, ignore_errors=True)
