"""Tests for the serving export: SavedModel, signature, errors, bin/export."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from asmnas_tf.evaluation.model import LOGITS
from asmnas_tf.evaluation.builder import build_eval_net, resolve_genotype
from asmnas_tf.evaluation.export import (MODEL_FILE, SAVED_MODEL_DIR, export_saved_model, read_normalization,
                              write_normalization)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)
SHAPE = (12, 12, 1)
MEAN, STD = [0.3], [0.2]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 'trained' run directory (model.keras + normalization.json), exported."""
    model_dir = str(tmp_path_factory.mktemp("run"))
    model = build_eval_net(resolve_genotype("DARTS_V2", 3), SHAPE, 5, channels=4)
    # Non-trivial BN statistics, so that inference mode matters.
    x = np.random.default_rng(0).normal(size=(8, *SHAPE)).astype("float32")
    for _ in range(3):
        model(x, training=True)
    for layer in model._flatten_layers():
        if layer.__class__.__name__ == "BatchNormalization":
            layer.moving_mean.assign(np.random.default_rng(1).normal(size=layer.moving_mean.shape) * 0.1)
    model.save(os.path.join(model_dir, MODEL_FILE))
    write_normalization(model_dir, MEAN, STD, SHAPE, 5, "tiny")
    return model_dir, model, export_saved_model(model_dir)


def _images(n, seed=3):
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8)


def _keras_probabilities(model, images):
    x = (images.astype(np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)
    return tf.nn.softmax(model(x, training=False)[LOGITS]).numpy()


def test_saved_model_in_a_fresh_process_matches_keras(exported, tmp_path):
    model_dir, model, path = exported
    assert path == os.path.join(model_dir, SAVED_MODEL_DIR)
    assert read_normalization(model_dir)["mean"] == pytest.approx(MEAN)
    images = {n: _images(n, seed=n) for n in (1, 7)}
    np.savez(tmp_path / "in.npz", **{str(n): v for n, v in images.items()})
    # No asmnas_tf on the path, and checked not to be imported.
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        "sig = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
        "data = np.load(sys.argv[2]); out = {}\n"
        "for key in data.files:\n"
        "    result = sig(images=tf.constant(data[key]))\n"
        "    out['p' + key] = result['probabilities'].numpy()\n"
        "    out['c' + key] = result['class_ids'].numpy()\n"
        "assert not any(m.startswith('asmnas_tf') for m in sys.modules)\n"
        "np.savez(sys.argv[3], **out)\n"
    )
    subprocess.run([sys.executable, "-c", script, path, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                   env=ENV, cwd=str(tmp_path), check=True, capture_output=True, timeout=300)
    out = np.load(tmp_path / "out.npz")
    for n, batch in images.items():
        expected = _keras_probabilities(model, batch)
        assert out[f"p{n}"].shape == (n, 5) and out[f"c{n}"].dtype == np.int64
        np.testing.assert_allclose(out[f"p{n}"], expected, atol=1e-5)
        np.testing.assert_array_equal(out[f"c{n}"], expected.argmax(-1))
    np.testing.assert_allclose(out["p7"].sum(-1), 1.0, atol=1e-5)


def test_saved_model_cli_lists_the_signature(exported):
    _, _, path = exported
    cli = os.path.join(VENV_BIN, "saved_model_cli")
    result = subprocess.run([cli, "show", "--dir", path, "--all"], env=ENV, capture_output=True, text=True,
                            check=True, timeout=300)
    text = result.stdout
    assert "signature_def['serving_default']" in text
    assert "inputs['images'] tensor_info:" in text
    assert "dtype: DT_UINT8" in text and "shape: (-1, 12, 12, 1)" in text
    assert "outputs['probabilities'] tensor_info:" in text and "shape: (-1, 5)" in text
    assert "outputs['class_ids'] tensor_info:" in text and "dtype: DT_INT64" in text


@pytest.mark.parametrize("bad, needle", [
    (tf.zeros([2, 12, 12, 1], tf.float32), "expected to be a uint8 tensor but is a float tensor"),
    (tf.zeros([2, 12, 12, 3], tf.uint8), "received shape] [2 12 12 3]"),
    (tf.zeros([12, 12, 1], tf.uint8), "received shape] [12 12 1]"),
    (tf.zeros([2, 10, 12, 1], tf.uint8), "received shape] [2 10 12 1]"),
    (tf.zeros([1, 2, 12, 12, 1], tf.uint8), "received shape] [1 2 12 12 1]"),
])
def test_wrong_input_is_a_clear_error(exported, bad, needle):
    _, _, path = exported
    serve = tf.saved_model.load(path).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        serve(images=bad)
    message = str(info.value)
    assert needle in message
    if bad.dtype == tf.uint8:
        assert "serving_default expects uint8 images of shape [batch, 12, 12, 1]" in message
    # A right input still works after a wrong one.
    assert serve(images=tf.zeros([3, 12, 12, 1], tf.uint8))["class_ids"].shape == (3,)


def test_export_again_replaces_and_leaves_no_temp(exported):
    model_dir, _, path = exported
    assert export_saved_model(model_dir) == path
    assert not [n for n in os.listdir(model_dir) if n.startswith(".")]


def test_bin_export_without_a_trained_model(tmp_path):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bin", "export"),
                             f"--model_dir={model_dir}"], env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    # TensorFlow's C++ start-up logging may precede it; ours is one line.
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "model.keras" in lines[0] and "bin/train" in lines[0]
    assert os.listdir(model_dir) == []


def test_export_failure_leaves_no_partial_saved_model(tmp_path, exported):
    # A model but a corrupt normalization.json: refused, nothing left behind.
    _, model, _ = exported
    model_dir = str(tmp_path)
    model.save(os.path.join(model_dir, MODEL_FILE))
    with open(os.path.join(model_dir, "normalization.json"), "w") as f:
        json.dump({"mean": [0.1, 0.2], "std": [1.0], "scale": 255.0, "image_shape": list(SHAPE),
                   "num_classes": 5, "dataset": "x"}, f)
    with pytest.raises(ValueError, match="mean/std should have 1 values"):
        export_saved_model(model_dir)
    assert sorted(os.listdir(model_dir)) == [MODEL_FILE, "normalization.json"]
