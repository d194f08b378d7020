"""`asmnas-experiment pipeline`: search, train the searched cells, test, export, in one command."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from asmnas_tf.data import load_arrays
from asmnas_tf.space.genotype import read_genotype

from conftest import REPO_ROOT, TINY_SEARCH, gin_params, needs_fashion_mnist

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
TEST_IMAGES = 300


def _list(values):
    return "[" + ", ".join(repr(v) for v in values) + "]"


def _pipeline(model_dir):
    search_params = [arg.split("=", 1)[1] for arg in TINY_SEARCH if arg.startswith("--gin_param=")]
    train_params = ["load_arrays.train_subset = 512", f"load_arrays.test_subset = {TEST_IMAGES}",
                    "build_eval_net.channels = 4", "build_eval_net.auxiliary = False", "run_train.batch_size = 32",
                    "run_train.epochs = 2", "run_train.drop_path = 0.0", "train_optimizer.ema_decay = 0.9",
                    "train_optimizer.warmup_epochs = 0.5", "train_optimizer.schedule = 'linear'",
                    "run_train.test_time_augmentation = 'flip'", "run_train.verbose = 0"]
    bindings = gin_params(
        "run_pipeline.search_gin = ['search/fashion_mnist.gin']",
        f"run_pipeline.search_params = {_list([*search_params, 'run_search.epochs = 1', 'run_search.verbose = 0'])}",
        "run_pipeline.train_gin = ['train/fashion_mnist.gin']",
        f"run_pipeline.train_params = {_list(train_params)}",
        "run_pipeline.export_params = [\"export_saved_model.test_time_augmentation = 'flip'\"]")
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bin", "experiment"), "pipeline", *bindings,
                           f"--model_dir={model_dir}"], env=ENV, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@needs_fashion_mnist
def test_pipeline_reports_what_its_steps_wrote_and_the_served_model_agrees(tmp_path):
    model_dir = tmp_path / "run"
    ran = _pipeline(model_dir)
    assert ran.returncode == 0, ran.stderr[-3000:]
    with open(model_dir / "pipeline.json") as f:
        summary = json.load(f)
    with open(model_dir / "train" / "results.json") as f:
        results = json.load(f)
    # The searched genotype is what was trained, at its own depth (2 cells).
    assert len(read_genotype(str(model_dir / "search" / "genotype.json")).cells) == results["num_cells"] == 2
    assert summary["test_accuracy"] == results["test_accuracy"] and results["num_test"] == TEST_IMAGES
    assert results["weight_average"] is True and results["test_time_augmentation"] == "flip"
    assert summary["total_s"] >= summary["search_s"] + summary["train_s"] + summary["export_s"] > 0
    assert f"test accuracy {summary['test_accuracy']:.4f} on {TEST_IMAGES} images" in ran.stdout

    # Served (with the same flip averaging), the model gets the reported accuracy:
    # at most one near-tie of the 300 may fall the other way.
    data = load_arrays("fashion_mnist", train_subset=512, test_subset=TEST_IMAGES)
    serve = tf.saved_model.load(summary["saved_model"]).signatures["serving_default"]
    class_ids = serve(images=tf.constant(data.x_test))["class_ids"].numpy()
    assert abs(np.mean(class_ids == data.y_test) - results["test_accuracy"]) <= 1 / TEST_IMAGES + 1e-9

    # The same command again continues: nothing is searched or trained twice.
    again = _pipeline(model_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Search already complete" in again.stdout and "Training already complete" in again.stdout
    with open(model_dir / "pipeline.json") as f:
        assert json.load(f)["test_accuracy"] == summary["test_accuracy"]
