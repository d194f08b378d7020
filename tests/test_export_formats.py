"""The export formats beyond the SavedModel: LiteRT (float32, float16, int8) and ONNX.

Each file is run in its own runtime (ai_edge_litert, onnxruntime) and
compared with the SavedModel on the same images. The runtimes are the
`export` extra, which CI does not install: the tests that need them skip;
the refusals (an unknown format, a missing extra) run everywhere.
"""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from asmnas_tf.evaluation import export_formats, runtimes
from asmnas_tf.evaluation.builder import build_eval_net, resolve_genotype
from asmnas_tf.evaluation.export import ExportError, export, write_normalization
from asmnas_tf.rundir import run_dir as rd

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
SHAPE = (12, 12, 1)
CLASSES = 4
ALL = ("saved_model", "litert", "litert_float16", "litert_int8", "onnx")
NAMES = "saved_model, litert, litert_float16, litert_int8, onnx"
EXTRA_MODULES = ("ai_edge_litert", "onnxruntime", "tf2onnx", "onnx")
# How close each format's probabilities are to the SavedModel's (max abs).
PROBABILITY_ATOL = {"litert": 1e-5, "onnx": 1e-5, "litert_float16": 1e-2}


def _needs_runtimes():
    for module in EXTRA_MODULES:
        pytest.importorskip(module)


def _synthetic(n, seed):
    """A learnable task: class k is a bright band of rows 3k..3k+2 over noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = rng.normal(70, 45, (n, *SHAPE))
    for i, k in enumerate(y):
        x[i, 3 * k:3 * k + 3] += 90
    return np.clip(np.round(x), 0, 255).astype(np.uint8), y.astype(np.int64)


def _listing(folder):
    return sorted(os.listdir(folder))


def _error_lines(stderr):
    # TensorFlow's C++ start-up logging may precede it; ours is one line.
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    """model.keras and normalization.json: enough for the refusals, which come before any conversion."""
    model_dir = str(tmp_path_factory.mktemp("untrained"))
    model = build_eval_net(resolve_genotype("DARTS_V2", 2), SHAPE, CLASSES, channels=4)
    model(np.zeros((1, *SHAPE), np.float32), training=False)
    model.save(os.path.join(model_dir, rd.MODEL_FILE))
    write_normalization(model_dir, [0.3], [0.2], SHAPE, CLASSES, "npz")
    return model_dir


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run trained by bin/train on an npz (2 cells, C = 4, 400 images), then exported to every format.

    The export goes through the Python API with the flip test-time
    augmentation and explicit calibration images.
    """
    _needs_runtimes()
    folder = tmp_path_factory.mktemp("trained")
    x_train, y_train = _synthetic(400, seed=0)
    x_test, y_test = _synthetic(300, seed=1)
    data = str(folder / "data.npz")
    np.savez(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, num_classes=CLASSES)
    model_dir = str(folder / "run")
    bindings = ["load_arrays.dataset = 'npz'", f"load_arrays.path = '{data}'",
                "run_train.genotype = 'DARTS_V2'", "run_train.num_cells = 2", "build_eval_net.channels = 4",
                "build_eval_net.auxiliary = False", "run_train.epochs = 6", "run_train.batch_size = 32",
                "run_train.drop_path = 0.0", "train_optimizer.learning_rate = 0.05",
                "make_dataset.crop_padding = 0", "make_dataset.cutout = 0", "make_strategy.kind = 'default'",
                "run_train.verbose = 0"]
    trained = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bin", "train"), f"--model_dir={model_dir}",
                              "--gin_file=train/base.gin", *[f"--gin_param={b}" for b in bindings]],
                             env=ENV, capture_output=True, text=True, timeout=900)
    assert trained.returncode == 0, trained.stderr[-3000:]
    paths = export(model_dir, test_time_augmentation="flip", formats=ALL, calibration_images=x_train)
    return {"dir": model_dir, "paths": paths, "x_train": x_train, "x_test": x_test, "y_test": y_test}


def _served(run, name):
    return runtimes.open_runtime(export_formats.FORMATS[name].runtime, run["paths"][name])


# ---------------------------------------------------------------- refusals (no runtime needed)

def test_parse_formats_takes_a_comma_list_or_a_sequence():
    assert export_formats.parse_formats("litert, onnx,litert") == ("litert", "onnx")
    assert export_formats.parse_formats(["saved_model"]) == ("saved_model",)
    with pytest.raises(ExportError, match=r"^--formats=: names no format; expected some of saved_model, "):
        export_formats.parse_formats("", flag="--formats")


def test_unknown_format_is_one_line_and_writes_nothing(untrained_run):
    before = _listing(untrained_run)
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bin", "export"),
                             f"--model_dir={untrained_run}", "--formats=saved_model,tflite"],
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert _error_lines(result.stderr) == [f"error: --formats=saved_model,tflite: 'tflite' is not one of {NAMES}"]
    with pytest.raises(ExportError) as info:
        export(untrained_run, formats=("onnx", "litert_int4"))
    assert str(info.value) == f"formats=onnx,litert_int4: 'litert_int4' is not one of {NAMES}"
    assert _listing(untrained_run) == before


def test_missing_extra_is_one_line_before_any_conversion(untrained_run, monkeypatch):
    before = _listing(untrained_run)
    # Every package installed but the ones named: the same message with or without the extra.
    absent = {"onnxruntime"}
    monkeypatch.setattr(export_formats, "_installed", lambda module: module not in absent)
    with pytest.raises(ExportError) as info:
        export(untrained_run, formats=("saved_model", "onnx"))
    assert str(info.value) == ("formats=onnx needs the export extra: pip install 'asmnas-tf[export]' "
                               "(missing: onnxruntime)")
    absent.add("ai_edge_litert")
    with pytest.raises(ExportError, match=r"^formats=litert_int8,onnx needs the export extra: .* "
                                          r"\(missing: ai-edge-litert, onnxruntime\)$"):
        export(untrained_run, formats="litert_int8,onnx")
    # The command, in its own process: one line, status 2, nothing written.
    script = ("from asmnas_tf.evaluation import export_formats\n"
              "export_formats._installed = lambda module: module != 'onnxruntime'\n"
              "from asmnas_tf.commands.export import main; main()\n")
    result = subprocess.run([sys.executable, "-c", script, f"--model_dir={untrained_run}", "--formats=onnx"],
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert _error_lines(result.stderr) == [
        "error: --formats=onnx needs the export extra: pip install 'asmnas-tf[export]' (missing: onnxruntime)"]
    assert _listing(untrained_run) == before


def test_a_module_that_cannot_be_imported_is_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` refuses
    assert not export_formats._installed("onnxruntime") and export_formats._installed("numpy")


# ---------------------------------------------------------------- each format in its runtime

def test_every_format_is_written_to_its_run_dir_name(trained_run):
    model_dir = trained_run["dir"]
    assert trained_run["paths"] == {
        "saved_model": os.path.join(model_dir, "saved_model"), "litert": os.path.join(model_dir, "model.tflite"),
        "litert_float16": os.path.join(model_dir, "model_float16.tflite"),
        "litert_int8": os.path.join(model_dir, "model_int8.tflite"), "onnx": os.path.join(model_dir, "model.onnx")}
    assert not [name for name in os.listdir(model_dir) if name.startswith(".")]  # no temporaries left
    sizes = {name: os.path.getsize(path) for name, path in trained_run["paths"].items() if name != "saved_model"}
    # float16 halves the weights; the graph's structure is the same size in both.
    assert sizes["litert_float16"] < sizes["litert"]


@pytest.mark.parametrize("name", ALL)
def test_signature_names_dtypes_and_shapes(trained_run, name):
    served = _served(trained_run, name)
    assert served.signature == {"images": (np.dtype(np.uint8), (-1, *SHAPE)),
                                "probabilities": (np.dtype(np.float32), (-1, CLASSES)),
                                "class_ids": (np.dtype(np.int64), (-1,))}
    for batch in (1, 7):  # any batch size, in each runtime
        outputs = served(trained_run["x_test"][:batch])
        assert sorted(outputs) == ["class_ids", "probabilities"]
        assert outputs["probabilities"].shape == (batch, CLASSES) and outputs["probabilities"].dtype == np.float32
        assert outputs["class_ids"].shape == (batch,) and outputs["class_ids"].dtype == np.int64


@pytest.mark.parametrize("name", ["litert", "onnx", "litert_float16", "litert_int8"])
def test_outputs_equal_the_saved_models(trained_run, name):
    images, labels = trained_run["x_test"], trained_run["y_test"]
    expected = _served(trained_run, "saved_model")(images)
    outputs = _served(trained_run, name)(images)
    accuracy = np.mean(expected["class_ids"] == labels)
    assert accuracy > 0.8  # a trained network (chance: 0.25), so that agreement means something
    if name in PROBABILITY_ATOL:
        np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], atol=PROBABILITY_ATOL[name])
        np.testing.assert_array_equal(outputs["probabilities"].argmax(-1), outputs["class_ids"])
        if name != "litert_float16":
            np.testing.assert_array_equal(outputs["class_ids"], expected["class_ids"])
    else:  # int8: the class ids mostly agree and the accuracy is within a point
        assert np.mean(outputs["class_ids"] == expected["class_ids"]) >= 0.9
        assert abs(np.mean(outputs["class_ids"] == labels) - accuracy) <= 0.01 + 1e-9


def test_verify_export_prints_one_line_per_format_and_refuses_a_drift(trained_run, monkeypatch):
    from asmnas_tf.evaluation.verify_export import verify_export

    lines = []
    verified = verify_export(trained_run["dir"], trained_run["x_test"], trained_run["y_test"], repeats=3,
                             print_fn=lines.append)
    assert [v.format for v in verified] == list(ALL) and len(lines) == len(ALL)
    for v, line in zip(verified, lines):
        assert v.within_tolerance and v.size_bytes > 0 and v.latency_ms > 0
        assert re.fullmatch(rf"{v.format} +\S+ +accuracy +\d+\.\d\d% \(.*\)  size [\d.]+ [KM]iB  "
                            rf"latency [\d.]+ ms/image \(median of 3\)", line), line
    assert verified[0].accuracy == pytest.approx(
        np.mean(_served(trained_run, "saved_model")(trained_run["x_test"])["class_ids"] == trained_run["y_test"]))

    # A format whose class ids drift is refused, in one line naming it.
    class Drifted:
        def __init__(self, path):
            self.inner = runtimes._OnnxRuntime(path)

        def __call__(self, images):
            outputs = self.inner(images)
            return dict(outputs, class_ids=(outputs["class_ids"] + 1) % CLASSES)

    monkeypatch.setitem(runtimes._OPENERS, "onnxruntime", Drifted)
    with pytest.raises(ExportError) as info:
        verify_export(trained_run["dir"], trained_run["x_test"], trained_run["y_test"], formats=["onnx"],
                      repeats=1, print_fn=None)
    message = str(info.value)
    assert message.startswith("verify: onnx accuracy ") and "(allowed 0.1)" in message and "\n" not in message


def test_a_failed_conversion_leaves_the_previous_file(trained_run, monkeypatch):
    path = trained_run["paths"]["litert"]
    with open(path, "rb") as f:
        before = f.read()

    def broken(served, path, image_shape, num_classes):
        raise RuntimeError("the converted file does not run")

    monkeypatch.setattr(runtimes, "check_runs", broken)
    with pytest.raises(RuntimeError, match="does not run"):
        export(trained_run["dir"], formats=["litert"])
    with open(path, "rb") as f:
        assert f.read() == before
    assert not [name for name in os.listdir(trained_run["dir"]) if name.startswith(".")]


def test_bad_calibration_images_are_one_line(trained_run):
    with pytest.raises(ExportError, match=r"^calibration_images: expected uint8 \[N, 12, 12, 1\]; "
                                          r"received shape \[5, 12, 12, 3\]$"):
        export(trained_run["dir"], formats=["litert_int8"], calibration_images=np.zeros((5, 12, 12, 3), np.uint8))


def test_command_calibrates_and_verifies_on_the_runs_own_data(trained_run, tmp_path):
    """bin/export --formats=... --verify: int8 calibrated on the training images its config.gin names."""
    model_dir = str(tmp_path / "run")
    os.makedirs(model_dir)
    for name in (rd.MODEL_FILE, rd.NORMALIZATION_FILE, rd.CONFIG_FILE):
        shutil.copy(os.path.join(trained_run["dir"], name), model_dir)
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bin", "export"), f"--model_dir={model_dir}",
                             "--formats=litert,litert_float16,litert_int8,onnx", "--verify"],
                            env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "Verifying on 300 test images:" in out
    for name in ALL:
        file = export_formats.FORMATS[name].file
        assert os.path.exists(os.path.join(model_dir, file))
        assert len(re.findall(rf"^{name} +{re.escape(file)} +accuracy ", out, re.M)) == 1, out
