"""The serving formats a trained run exports to, and the writing of them.

    saved_model     <run dir>/saved_model/          TensorFlow SavedModel (export.py)
    litert          <run dir>/model.tflite          LiteRT, float32
    litert_float16  <run dir>/model_float16.tflite  LiteRT, float16 weights
    litert_int8     <run dir>/model_int8.tflite     LiteRT, int8 weights and activations
    onnx            <run dir>/model.onnx            ONNX, opset 17

Every format holds the SavedModel's one function, converted from it: uint8
images [batch, H, W, C] in, `probabilities` float32 [batch, classes] and
`class_ids` int64 [batch] out, the normalisation (and the flip test-time
augmentation, when asked for) inside. When the SavedModel is not itself
asked for, it is written to a temporary folder for the conversions and
removed.

The packages beyond TensorFlow are the `export` extra (pyproject.toml). A
format is written only if its file can be opened in its runtime, so a
format whose packages are missing is refused, in one line, before anything
is converted. Each file is converted to a temporary name in its folder,
opened in its runtime and checked (`runtimes.check_runs`), then renamed
into place: a failed export leaves the previous file as it was.
"""

import dataclasses
import importlib.util
import os
import shutil
import tempfile

import numpy as np

from asmnas_tf.evaluation import convert_litert, convert_onnx, runtimes
from asmnas_tf.evaluation.export import (ExportError, export_saved_model, load_trained_model,
                                         read_normalization)
from asmnas_tf.rundir import run_dir as rd
from asmnas_tf.rundir.atomic_write import write_file_atomic

EXTRA_INSTALL = "pip install 'asmnas-tf[export]'"


@dataclasses.dataclass(frozen=True)
class Format:
    name: str
    file: str  # in the run directory
    runtime: str  # one of runtimes.RUNTIMES
    packages: tuple = ()  # (module, pip name) of the export extra it needs
    # How far its test accuracy may be from the SavedModel's (percentage points), in `verify_export`.
    tolerance_points: float = 0.1
    variant: str = None  # a LiteRT file's, one of convert_litert.VARIANTS


_LITERT = (("ai_edge_litert", "ai-edge-litert"),)
FORMATS = {f.name: f for f in [
    Format("saved_model", rd.SAVED_MODEL_DIR, "tensorflow"),
    Format("litert", rd.LITERT_FILE, "litert", _LITERT, variant="float32"),
    Format("litert_float16", rd.LITERT_FLOAT16_FILE, "litert", _LITERT, variant="float16"),
    Format("litert_int8", rd.LITERT_INT8_FILE, "litert", _LITERT, tolerance_points=1.0, variant="int8"),
    Format("onnx", rd.ONNX_FILE, "onnxruntime", (("tf2onnx", "tf2onnx"), ("onnx", "onnx"),
                                                 ("onnxruntime", "onnxruntime"))),
]}
NEEDS_CALIBRATION = ("litert_int8",)


def parse_formats(formats, flag="formats"):
    """`formats` (a comma list or a sequence of names) as a tuple of names, in order, once each.

    `flag` names the argument in the error: '--formats' for the command.
    """
    names = formats.split(",") if isinstance(formats, str) else list(formats)
    names = [str(name).strip() for name in names]
    shown = ",".join(names)
    names = [name for name in names if name]
    if not names:
        raise ExportError(f"{flag}={shown}: names no format; expected some of {', '.join(FORMATS)}")
    for name in names:
        if name not in FORMATS:
            raise ExportError(f"{flag}={shown}: {name!r} is not one of {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(names))


def _installed(module):
    return importlib.util.find_spec(module) is not None


def check_packages(names, flag="formats"):
    """ExportError (one line) if a package that a format of `names` needs is not installed."""
    needing, missing = [], []
    for name in names:
        absent = [pip for module, pip in FORMATS[name].packages if not _installed(module)]
        if absent:
            needing.append(name)
            missing += [pip for pip in absent if pip not in missing]
    if missing:
        raise ExportError(f"{flag}={','.join(needing)} needs the export extra: {EXTRA_INSTALL} "
                          f"(missing: {', '.join(missing)})")


def check_images(images, image_shape, what):
    """`images` as uint8 [N, H, W, C] of the model's image shape, N >= 1; ExportError otherwise."""
    expected = f"uint8 [N, {', '.join(str(d) for d in image_shape)}]"
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        dtype = getattr(images, "dtype", type(images).__name__)
        raise ExportError(f"{what}: expected a numpy array {expected}; received dtype {dtype}")
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(image_shape) or len(images) < 1:
        raise ExportError(f"{what}: expected {expected}; received shape {list(images.shape)}")
    return images


def format_path(name, folder):
    return os.path.join(folder, FORMATS[name].file)


def write_formats(model_dir, formats, model=None, info=None, destination=None, calibration_images=None,
                  flag="formats", **saved_model_options):
    """Writes each format of `formats`; returns {name: path}, in the order asked.

    `model_dir`: the run directory (its model.keras and normalization.json,
    unless `model` and `info` are given; then it may be None). The SavedModel
    goes to `destination` (default `<model_dir>/saved_model`), the other
    files to `model_dir`, or next to `destination` without one.
    `calibration_images`: uint8 [N, H, W, C] for litert_int8; default the
    run's training images (its config.gin's `load_arrays`).
    `saved_model_options`: more of `export_saved_model`'s arguments
    (`test_time_augmentation`); gin's bindings apply to those not given.
    Every check (names, packages, bindings, model, data) comes before the
    first file is written.
    """
    names = parse_formats(formats, flag)
    check_packages(names, flag)
    export_saved_model(None, check_only=True, **saved_model_options)
    if model_dir is not None and not os.path.isdir(model_dir):
        raise ExportError(f"--model_dir={model_dir} does not exist")
    model = model if model is not None else load_trained_model(model_dir)
    info = info if info is not None else read_normalization(model_dir)
    image_shape = tuple(info["image_shape"])
    if any(name in NEEDS_CALIBRATION for name in names):
        if calibration_images is None and model_dir is None:
            raise ExportError("litert_int8 needs calibration images: this model was trained without a run "
                              "directory; pass calibration_images=<uint8 training images [N, H, W, C]>")
        if calibration_images is None:
            from asmnas_tf.evaluation.run_data import run_arrays

            calibration_images = run_arrays(model_dir, "calibration images for litert_int8").x_train
        check_images(calibration_images, image_shape, "calibration_images")
    folder = model_dir if model_dir is not None else os.path.dirname(os.path.abspath(destination))
    saved_model = destination or os.path.join(folder, rd.SAVED_MODEL_DIR)
    paths, staging = {}, None
    try:
        if "saved_model" not in names:  # the conversions' source only
            staging = tempfile.mkdtemp(prefix=f".{rd.SAVED_MODEL_DIR}-source-", dir=folder)
            saved_model = os.path.join(staging, rd.SAVED_MODEL_DIR)
        export_saved_model(model_dir, model=model, info=info, destination=saved_model, **saved_model_options)
        for name in names:
            if name == "saved_model":
                paths[name] = saved_model
                continue
            paths[name] = format_path(name, folder)
            data = _convert(name, saved_model, image_shape, calibration_images)
            _write_checked(name, paths[name], data, image_shape, int(info["num_classes"]))
    finally:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
    return paths


def _convert(name, saved_model, image_shape, calibration_images):
    if name == "onnx":
        return convert_onnx.convert(saved_model, image_shape)
    return convert_litert.convert(saved_model, FORMATS[name].variant, calibration_images)


def _write_checked(name, path, data, image_shape, num_classes):
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
        served = runtimes.open_runtime(FORMATS[name].runtime, tmp)
        runtimes.check_runs(served, path, image_shape, num_classes)

    write_file_atomic(path, write)
