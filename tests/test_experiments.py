"""bin/experiment: timing (Table 5), stability (Fig. 3), compare (Tables 1-3)."""

import csv
import json
import os
import subprocess
import sys

import gin
import numpy as np
import pytest

from tensorboard_sessions import read_session
from conftest import REPO_ROOT, TINY_SEARCH, gin_params, needs_fashion_mnist

from asmnas_tf.commands import cli
from asmnas_tf.experiments import compare, stability, timing
from asmnas_tf.errors import UserError
from asmnas_tf.space.genotype import random_genotype, read_genotype, to_dict
from asmnas_tf.space.primitives import EDGES

EXPERIMENT = os.path.join(REPO_ROOT, "bin", "experiment")
SEARCH = os.path.join(REPO_ROOT, "bin", "search")
SEARCH_ONE_EPOCH = TINY_SEARCH + gin_params("run_search.epochs = 1", "run_search.verbose = 0",
                                            "make_strategy.kind = 'default'")


def _run(script, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
def test_timing_table_of_one_step_per_method(tmp_path):
    bindings = ["build_supernet.num_cells = 2", "build_supernet.channels = 4",
                "run_timing.methods = ['uniform', 'asm', 'darts1']", "run_timing.image_shape = (8, 8, 1)",
                "run_timing.batch_size = 4", "run_timing.steps = 3", "make_strategy.kind = 'default'"]
    cli.parse_gin(["experiment/timing.gin"], bindings)
    try:
        result = timing.run_timing(str(tmp_path))
    finally:
        gin.clear_config()
    rows = {row["method"]: row for row in result["rows"]}
    assert list(rows) == ["uniform", "asm", "darts1"]
    assert rows["asm"]["architecture_step_s"] is None and rows["uniform"]["architecture_step_s"] is None
    darts = rows["darts1"]
    assert darts["architecture_step_s"] > 0 and darts["weight_step_s"] > 0
    assert darts["total_s"] == darts["weight_step_s"] + darts["architecture_step_s"]
    assert rows["asm"]["images_per_s"] == pytest.approx(4 / rows["asm"]["total_s"])
    # The first call traces the graph: far slower than a steady step.
    assert rows["asm"]["first_weight_step_s"] > 5 * rows["asm"]["weight_step_s"]
    assert result["ratios"] == {
        "asm_over_uniform": rows["asm"]["total_s"] / rows["uniform"]["total_s"],
        "darts1_over_asm": darts["total_s"] / rows["asm"]["total_s"],
    }
    with open(tmp_path / "timing.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["uniform", "asm", "darts1"]
    assert float(table[2]["architecture_step_s"]) == darts["architecture_step_s"]  # exact round trip
    markdown = (tmp_path / "timing.md").read_text()
    assert f"| darts1 | {darts['weight_step_s']:.3f} | {darts['architecture_step_s']:.3f} |" in markdown
    assert json.loads((tmp_path / "timing.json").read_text())["rows"] == result["rows"]


def _accuracy_from_rows(rows):
    return {(r["cell"], r["edge"]): r["accuracy"] for r in rows}


@pytest.mark.slow
@needs_fashion_mnist
@pytest.mark.parametrize("method", ["asm", "darts1"])
def test_stability_sweep_on_a_searched_supernet(tmp_path, method):
    search_dir = tmp_path / "search"
    extra = ["--gin_file=search/darts.gin", "--gin_param=run_search.method = 'darts1'"] if method != "asm" else []
    result = _run(SEARCH, *SEARCH_ONE_EPOCH, *extra, f"--model_dir={search_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (search_dir / "supernet.weights.h5").stat().st_size > 10_000

    result = _run(EXPERIMENT, "stability", f"--model_dir={search_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = stability.read_rows(search_dir / "stability" / "stability.csv")
    genotype = read_genotype(search_dir / "genotype.json")
    assert len(rows) == 2 * len(EDGES)
    for row in rows:
        kept = {(e.source, e.target): e.op for e in genotype.cells[row["cell"]].edges}
        assert row["op"] == kept.get((row["source"], row["target"]), "zero")
        assert row["change"] == pytest.approx(row["accuracy"] - row["baseline"], abs=2e-6)
        assert row["accuracy"] * 256 == pytest.approx(round(row["accuracy"] * 256), abs=1e-3)  # k / 256 images
    # The baseline is the supernet's accuracy that the search itself measured.
    searched = json.loads((search_dir / "timing.json").read_text())["selection_accuracy"]
    assert rows[0]["baseline"] == pytest.approx(searched, abs=1e-6)
    assert (search_dir / "stability" / "stability.png").stat().st_size > 10_000
    assert f"| 1 | 0\u21922 | {rows[14]['op']} |" in (search_dir / "stability" / "stability.md").read_text()

    # Again: already complete, nothing rewritten.
    before = (search_dir / "stability" / "stability.csv").read_bytes()
    again = _run(EXPERIMENT, "stability", f"--model_dir={search_dir}")
    assert again.returncode == 0 and "already complete" in again.stdout
    assert (search_dir / "stability" / "stability.csv").read_bytes() == before


def test_stability_of_an_unfinished_search_is_one_line(tmp_path):
    (tmp_path / "config.gin").write_text("")
    result = _run(EXPERIMENT, "stability", f"--model_dir={tmp_path}")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and lines == [lines[-1]] and lines[-1].startswith("error: ")
    assert "genotype.json" in lines[-1] and "Traceback" not in result.stderr
    assert not (tmp_path / "stability").exists()


def _genotype(num_cells, ops):
    """An argmax genotype dict whose edges carry `ops` [L][14] (op names)."""
    from asmnas_tf.space.genotype import Cell, Edge, Genotype
    from asmnas_tf.space.primitives import EDGES

    cells = tuple(Cell(reduction=False, edges=tuple(Edge(s, t, op) for (s, t), op in zip(EDGES, row)))
                  for row in ops)
    return to_dict(Genotype(cells=cells, source={"method": "asm", "seed": 0, "rule": "argmax"}))


def test_compare_statistics_equal_hand_computations_and_scipy():
    from asmnas_tf.experiments import statistics

    values = [0.80, 0.90, 0.85, 0.82, 0.88]
    d = statistics.describe(values)
    mean, std = np.mean(values), np.std(values, ddof=1)
    assert d["mean"] == pytest.approx(mean) and d["std"] == pytest.approx(std)
    # t_{0.975, 4} = 2.7764451 (tables)
    assert d["ci_high"] - mean == pytest.approx(2.7764451 * std / np.sqrt(5), rel=1e-6)
    method = dict(enumerate([0.81, 0.86, 0.84, 0.90, 0.83]))
    base = dict(enumerate([0.80, 0.84, 0.85, 0.85, 0.80]))
    p = statistics.paired(method, base)
    diff = np.array([method[i] - base[i] for i in range(5)])
    t = diff.mean() / (diff.std(ddof=1) / np.sqrt(5))
    assert p["t_statistic"] == pytest.approx(t)
    assert p["mean_difference"] == pytest.approx(diff.mean()) and (p["wins"], p["losses"]) == (4, 1)
    # Wilcoxon, exact: ranks of |d| = .01, .02, .01, .05, .03 -> the one negative (.01) has rank 1.5.
    assert p["wilcoxon_statistic"] == pytest.approx(1.5)
    # Five positive differences: the exact two-sided p is 2 / 2^5.
    assert statistics.paired(dict(enumerate([1, 2, 3, 4, 5.5])), dict(enumerate([0] * 5)))["wilcoxon_p"] == \
        pytest.approx(2 / 32)
    assert statistics.paired({0: 0.5}, {0: 0.4})["t_p"] is None  # one pair: no test


def test_genotype_stability_counts_agreeing_edges():
    from asmnas_tf.experiments import statistics

    base = [["sep_conv_3x3"] * 14, ["skip_connect"] * 14]
    other = [list(row) for row in base]
    other[0][:7] = ["max_pool_3x3"] * 7  # cell 0: half the edges differ
    third = [list(row) for row in base]
    third[1][0] = "zero"
    st = statistics.genotype_stability([_genotype(2, base), _genotype(2, other), _genotype(2, third)])
    assert st["all_agree_per_cell"] == [0.5, pytest.approx(13 / 14, abs=1e-4)]
    assert st["all_agree"] == pytest.approx((7 + 13) / 28)
    pairs = [(21 / 28), (27 / 28), (20 / 28)]  # base-other, base-third, other-third
    assert st["pairwise"] == pytest.approx(np.mean(pairs)) and st["pairs"] == 3


def test_compare_summary_pairs_by_seed():
    runs = [{"method": m, "seed": s, "test_accuracy": a, "search_s": 1.0, "train_s": 2.0, "params": 10,
             "search_epochs": 1}
            for m, s, a in [("asm", 0, 0.8), ("asm", 1, 0.9), ("asm", 2, 0.85),
                            ("random", 0, 0.7), ("random", 1, 0.75), ("random", 2, 0.9)]]
    out = compare.summarize(runs)
    assert out["summary"]["asm"]["mean"] == pytest.approx(0.85)
    assert out["summary"]["asm"]["std"] == pytest.approx(np.std([0.8, 0.9, 0.85], ddof=1))
    assert out["summary"]["asm"]["improvement_over_random_mean"] == pytest.approx(0.85 - np.mean([0.7, 0.75, 0.9]))
    assert out["paired"]["asm vs random"]["mean_difference"] == pytest.approx(np.mean([0.1, 0.15, -0.05]))


def test_a_variant_searches_as_its_method_with_its_own_bindings(tmp_path, monkeypatch):
    commands = []
    monkeypatch.setattr(compare, "_run", lambda args, what: commands.append((args, what)) or 7.0)
    config = {"num_cells": 3, "search_epochs": 2, "search_gin": ["search/demo.gin"], "search_params": ["a.b = 1"],
              "darts_gin": ["search/darts.gin"], "train_gin": [], "variants": {"darts_wide": "darts1"},
              "method_params": {"darts_wide": ["build_supernet.channels = 32"], "darts1": ["x.y = 2"]}}
    assert compare._search("darts_wide", 5, str(tmp_path / "s"), config) == 7.0
    (args, what), = commands
    assert what == "search: darts_wide, seed 5"
    assert args[3:5] == ["--gin_file=search/demo.gin", "--gin_file=search/darts.gin"]
    assert args[5:-1] == ["--gin_param=a.b = 1", "--gin_param=build_supernet.channels = 32",
                          "--gin_param=build_supernet.num_cells = 3", "--gin_param=run_search.seed = 5",
                          "--gin_param=run_search.method = 'darts1'", "--gin_param=run_search.epochs = 2"]
    # The variants are part of the fingerprint: a results file of other variants is refused.
    plain = {k: v for k, v in config.items() if k != "variants"}
    assert compare.fingerprint(plain) != compare.fingerprint(config)


def test_results_of_another_configuration_are_refused(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"config": "abc", "method": "asm", "seed": 0}) + "\n")
    assert compare.read_results(str(path), "abc")[0]["seed"] == 0
    with pytest.raises(UserError, match="another configuration"):
        compare.read_results(str(path), "def")


@pytest.mark.slow
@needs_fashion_mnist
def test_compare_trains_every_seed_and_summarises(tmp_path):
    params = ["run_compare.methods = ['random']", "run_compare.seeds = [3, 4]", "run_compare.num_cells = 2",
              "run_compare.train_epochs = 1",
              "run_compare.train_gin = ['train/fashion_mnist.gin']",
              "run_compare.train_params = ['load_arrays.train_subset = 256', 'load_arrays.test_subset = 128', "
              "'run_train.batch_size = 32', 'build_eval_net.channels = 4', "
              "'build_eval_net.auxiliary = False', 'run_train.verbose = 0', \"make_strategy.kind = 'default'\"]"]
    result = _run(EXPERIMENT, "compare", *[f"--gin_param={p}" for p in params], f"--model_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    accuracies = []
    for seed in (3, 4):
        run = tmp_path / f"random-seed{seed}"
        assert read_genotype(run / "search" / "genotype.json") == random_genotype(2, seed)
        accuracies.append(json.loads((run / "train" / "results.json").read_text())["test_accuracy"])
    summary = json.loads((tmp_path / "compare.json").read_text())["summary"]["random"]
    assert summary["mean"] == pytest.approx(np.mean(accuracies), abs=1e-12)
    assert summary["std"] == pytest.approx(np.std(accuracies, ddof=1), abs=1e-12)
    assert f"| random | 2 | {summary['mean']:.4f} ± {summary['std']:.4f} |" in (tmp_path / "compare.md").read_text()
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["seed"] for line in lines] == [3, 4]
    for seed, accuracy in zip((3, 4), accuracies):  # TensorBoard's HParams session of each task
        hparams, scalars = read_session(str(tmp_path / "tensorboard" / f"random-seed{seed}"))
        assert hparams["method"] == "random" and hparams["seed"] == seed and hparams["train_epochs"] == 1
        assert scalars["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)

    # Stopped after seed 3: a new run directory continuing from that results
    # file runs seed 4 only.
    partial = tmp_path / "partial.jsonl"
    partial.write_text(lines[0] + "\n")
    again = tmp_path / "again"
    result = _run(EXPERIMENT, "compare", *[f"--gin_param={p}" for p in params],
                  f"--gin_param=run_compare.results_file = '{partial}'", f"--model_dir={again}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (again / "random-seed3").exists() and (again / "random-seed4" / "train" / "results.json").exists()
    assert [json.loads(line)["seed"] for line in partial.read_text().splitlines()] == [3, 4]
    assert (again / "compare.png").stat().st_size > 5_000
