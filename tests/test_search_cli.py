"""bin/search end to end on real Fashion-MNIST, and its one-line errors."""

import csv
import json
import os
import subprocess
import sys

import gin
import keras
import pytest

from asmnas_tf.commands import cli

from asmnas_tf.supernet import runner as search
from asmnas_tf.space.genotype import read_genotype
from conftest import REPO_ROOT, TINY_SEARCH, gin_params, needs_fashion_mnist

SEARCH = os.path.join(REPO_ROOT, "bin", "search")
TINY = TINY_SEARCH + gin_params("run_search.epochs = 1", "run_search.deterministic = True", "run_search.verbose = 2")


def run_search(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, SEARCH, *args], capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
@needs_fashion_mnist
def test_search_writes_a_valid_genotype_and_is_reproducible(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for model_dir in (first, second):
        result = run_search(*TINY, f"--model_dir={model_dir}")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Written:" in result.stdout
    genotype = read_genotype(first / "genotype.json", num_cells=2)
    assert len(genotype.cells) == 2
    assert all(len(cell.edges) == 14 for cell in genotype.cells)  # argmax: one op per edge
    assert genotype.source == {"method": "asm", "dataset": "fashion_mnist", "seed": 0, "rule": "argmax"}
    # Same seed, deterministic ops: the same genotype, byte for byte.
    assert (first / "genotype.json").read_bytes() == (second / "genotype.json").read_bytes()

    attention = json.loads((first / "attention.json").read_text())
    assert attention["num_samples"] == 256  # the selection half of 512 images
    assert len(attention["cells"]) == 2 and len(attention["cells"][0]["coefficients"]) == 14
    history = (first / "history.csv").read_text().splitlines()
    assert history[0].split(",") == ["epoch", "accuracy", "argmax_changes", "attention_grad_norm",
                                     "coefficient_entropy", "embedding_std", "grad_norm_sq", "learning_rate",
                                     "loss", "ops_grad_norm", "parameter_free_share", "subset_accuracy"]
    assert len(history) == 2  # header + 1 epoch
    assert "build_supernet.num_cells = 2" in (first / "operative_config.gin").read_text()
    assert os.listdir(first / "tensorboard")
    assert sorted(os.listdir(first / "plots" / "cells")) == ["cell00.png", "cell01.png"]
    assert (first / "plots" / "attention.png").stat().st_size > 10_000
    timing = json.loads((first / "timing.json").read_text())
    assert timing["first_step_s"] > 0 and timing["steps_timed"] == 7  # 8 steps, the first apart

    # The same command again: the finished run is left as it is.
    before = (first / "genotype.json").read_bytes()
    again = run_search(*TINY, f"--model_dir={first}")
    assert again.returncode == 0 and "already complete" in again.stdout
    assert (first / "genotype.json").read_bytes() == before


def _one_line_error(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return lines[0]


def test_unknown_gin_binding_is_one_line_and_nothing_is_created(tmp_path):
    line = _one_line_error(run_search(*TINY, "--gin_param=build_supernet.no_such = 3", f"--model_dir={tmp_path}/x"))
    assert "no_such" in line
    assert not (tmp_path / "x").exists()


def test_missing_gin_file_is_one_line(tmp_path):
    line = _one_line_error(run_search("--gin_file=search/nope.gin", f"--model_dir={tmp_path}/x"))
    assert "nope.gin" in line


def test_run_dir_with_another_config_is_refused_and_kept(tmp_path):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "config.gin").write_text("build_supernet.channels = 99\n")
    (model_dir / "genotype.json").write_text("precious")
    line = _one_line_error(run_search(*TINY, f"--model_dir={model_dir}"))
    assert str(model_dir) in line and "another configuration" in line
    assert (model_dir / "genotype.json").read_text() == "precious"


def test_missing_data_is_one_line_naming_where_it_looked(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _one_line_error(run_search(*TINY, f"--gin_param=load_arrays.idx_dir = '{empty}'",
                                      f"--model_dir={tmp_path}/run"))
    assert str(empty) in line
    assert not (tmp_path / "run" / "genotype.json").exists()


class _StopAfterFirstEpoch(keras.callbacks.Callback):
    """Kills the run (as Ctrl-C would) once epoch 0 is checkpointed."""

    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


@pytest.mark.slow
@needs_fashion_mnist
def test_interrupted_search_resumes_from_its_last_epoch(tmp_path):
    bindings = [b.split("=", 1)[1] for b in TINY if b.startswith("--gin_param")]
    bindings += ["run_search.epochs = 2", "run_search.verbose = 0", "make_strategy.kind = 'default'"]
    cli.parse_gin(["search/fashion_mnist.gin"], bindings)
    try:
        with pytest.raises(KeyboardInterrupt):
            search.run_search(str(tmp_path), extra_callbacks=[_StopAfterFirstEpoch()])
        assert not (tmp_path / "genotype.json").exists()
        rows = (tmp_path / "history.csv").read_text().splitlines()[1:]
        assert [row.split(",")[0] for row in rows] == ["0"]
        result = search.run_search(str(tmp_path))
    finally:
        gin.clear_config()
    # The second run trained epoch 1 only: 8 steps, of which 7 are timed.
    assert result.timing["steps_timed"] == 7
    rows = (tmp_path / "history.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["0", "1"]
    with open(tmp_path / "history.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    assert float(last["learning_rate"]) == 0.0  # annealed to 0 at the end of epoch 1
    assert len(read_genotype(tmp_path / "genotype.json", num_cells=2).cells) == 2
