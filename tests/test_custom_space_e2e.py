"""A user's own space by configuration alone: 4 ops, 3 nodes; search, select, train, export on Fashion-MNIST."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from asmnas_tf.data.sources import load_arrays
from asmnas_tf.space.genotype import read_genotype
from asmnas_tf.space.search_space import make_space
from conftest import REPO_ROOT, TINY_SEARCH, gin_params, needs_fashion_mnist

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
SPACE = gin_params("search_space.primitives = ['zero', 'skip_connect', 'max_pool_3x3', 'sep_conv_3x3']",
                   "search_space.nodes = 3")


def _run(script, *args):
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bin", script), *args], capture_output=True,
                          text=True, env=ENV, timeout=900)


@pytest.mark.slow
@needs_fashion_mnist
def test_four_ops_three_nodes_search_train_export(tmp_path):
    search_dir, train_dir = tmp_path / "search", tmp_path / "train"
    searched = _run("search", *TINY_SEARCH, *SPACE, *gin_params("run_search.epochs = 1", "run_search.verbose = 2",
                                                                "search_remedies.exclude_zero = True"),
                    f"--model_dir={search_dir}")
    assert searched.returncode == 0, searched.stderr[-3000:]
    genotype = read_genotype(search_dir / "genotype.json")
    assert genotype.space == make_space(("zero", "skip_connect", "max_pool_3x3", "sep_conv_3x3"), 3)
    assert all(len(cell.edges) == 9 and cell.concat == (2, 3, 4) for cell in genotype.cells)
    assert all(edge.op != "zero" for cell in genotype.cells for edge in cell.edges)
    attention = json.loads((search_dir / "attention.json").read_text())
    assert attention["primitives"] == ["zero", "skip_connect", "max_pool_3x3", "sep_conv_3x3"]
    assert np.asarray(attention["cells"][0]["coefficients"]).shape == (9, 4)
    assert sorted(os.listdir(search_dir / "plots" / "cells")) == ["cell00.png", "cell01.png"]
    assert (search_dir / "plots" / "attention.png").stat().st_size > 10000

    common = ["--gin_file=train/compare_fashion_mnist.gin", *gin_params(
        f"run_train.genotype = '{search_dir / 'genotype.json'}'", "run_train.num_cells = None",
        "load_arrays.train_subset = 1024", "load_arrays.test_subset = 500", "run_train.epochs = 1",
        "build_eval_net.channels = 8", "run_train.verbose = 2")]
    train_args = [*common, *SPACE]
    # The DARTS space (no bindings) refuses this genotype in one line, before any data is read.
    refused = _run("train", *common, f"--model_dir={tmp_path / 'refused'}")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "a genotype of the space 4 ops [zero, skip_connect, max_pool_3x3, sep_conv_3x3], 3 nodes" in refused.stderr
    assert not (tmp_path / "refused").exists()

    trained = _run("train", *train_args, f"--model_dir={train_dir}")
    assert trained.returncode == 0, trained.stderr[-3000:]
    results = json.loads((train_dir / "results.json").read_text())
    # The trained network is the genotype's: its parameter count, rebuilt here in the same space.
    from asmnas_tf.evaluation.builder import build_eval_net

    from asmnas_tf.evaluation.size_report import size_report

    rebuilt = build_eval_net(genotype, (28, 28, 1), 10, channels=8, space=genotype.space)
    assert results["params"] == size_report(rebuilt)["params"] > 0
    exported = _run("export", f"--model_dir={train_dir}")
    assert exported.returncode == 0, exported.stderr[-3000:]
    serve = tf.saved_model.load(str(train_dir / "saved_model")).signatures["serving_default"]
    data = load_arrays("fashion_mnist", test_subset=500)
    class_ids = serve(images=tf.constant(data.x_test))["class_ids"].numpy()
    assert np.mean(class_ids == data.y_test) == pytest.approx(results["test_accuracy"], abs=0.02)
