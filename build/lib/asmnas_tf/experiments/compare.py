"""ASM-NAS against DARTS and random cells, same data, same budget (paper Tables 1-3).

For every seed and method, one search and one training, each the project's
own command in a fresh process (so each gets its own gin config and graph),
in `<model_dir>/<method>-seed<seed>/{search,train}`:

- `asm`: bin/search with `search_gin` + `search_params`;
- `darts1` / `darts2`: the same, plus `darts_gin` and the method;
- `random`: the "Random Sample" row: a random genotype of `num_cells` cells
  from the seed (`genotype.random_genotype`), no search.

Then bin/train trains each genotype with `train_gin` + `train_params` (the
same budget for all), and the test accuracies are summarised per method as
mean ± sample standard deviation (ddof = 1) over the seeds. Every sub-run is
a run directory of its own, so an interrupted comparison resumes where it
stopped; finished sub-runs are not run again.
"""

import csv
import io
import json
import os
import subprocess
import sys
import time

import gin
import numpy as np

from asmnas_tf.runtime import run_dir as rd
from asmnas_tf.space.genotype import random_genotype, write_genotype
from asmnas_tf.errors import UserError

METHODS = ("asm", "darts1", "darts2", "random")
RUNS_FILE = "compare.csv"
TABLE_FILE = "compare.md"
JSON_FILE = "compare.json"
RUN_COLUMNS = ("method", "seed", "test_accuracy", "search_s", "train_s", "params")


class SubRunError(UserError):
    """A search or training of the comparison failed; its own output says why."""


def _command(script, gin_files, params, model_dir):
    # `python -m` of this interpreter: the installed package, whatever is on PATH.
    return [sys.executable, "-m", f"asmnas_tf.commands.{script}", *[f"--gin_file={f}" for f in gin_files],
            *[f"--gin_param={p}" for p in params], f"--model_dir={model_dir}"]


def _run(command, what):
    print(f"\n=== {what}\n$ asmnas-{command[2].rpartition('.')[2]} {' '.join(command[3:])}", flush=True)
    started = time.perf_counter()
    result = subprocess.run(command)
    if result.returncode != 0:
        raise SubRunError(f"compare: {what} failed (exit {result.returncode}); its output is above")
    return time.perf_counter() - started


def _search(method, seed, search_dir, num_cells, search_gin, search_params, darts_gin):
    genotype_path = os.path.join(search_dir, rd.GENOTYPE_FILE)
    if method == "random":
        if not os.path.exists(genotype_path):
            os.makedirs(search_dir, exist_ok=True)
            write_genotype(genotype_path, random_genotype(num_cells, seed))
        return 0.0
    gin_files = list(search_gin) + (list(darts_gin) if method != "asm" else [])
    params = [*search_params, f"build_supernet.num_cells = {num_cells}", f"run_search.seed = {seed}",
              f"run_search.method = '{method}'"]
    return _run(_command("search", gin_files, params, search_dir), f"search: {method}, seed {seed}")


def _train(method, seed, genotype_path, train_dir, train_gin, train_params):
    params = [*train_params, f"run_train.genotype = '{genotype_path}'", "run_train.num_cells = None",
              f"run_train.seed = {seed}"]
    seconds = _run(_command("train", train_gin, params, train_dir), f"train: {method}, seed {seed}")
    with open(os.path.join(train_dir, "results.json"), encoding="utf-8") as f:
        return seconds, json.load(f)


@gin.configurable(denylist=["model_dir"])
def run_compare(model_dir, methods=("asm", "darts1", "random"), seeds=(0, 1, 2), num_cells=4,
                search_gin=("search/demo.gin",), search_params=(), darts_gin=("search/darts.gin",),
                train_gin=("train/demo.gin",), train_params=()):
    """Search and train every (method, seed); returns {"runs", "summary", "paths"}."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UserError(f"run_compare.methods={list(methods)!r}: expected some of {', '.join(METHODS)}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"run_compare.seeds={list(seeds)!r}: expected distinct seeds")
    started = time.perf_counter()
    runs = []
    for seed in seeds:
        for method in methods:
            run = os.path.join(model_dir, f"{method}-seed{seed}")
            search_dir, train_dir = os.path.join(run, "search"), os.path.join(run, "train")
            search_s = _search(method, seed, search_dir, num_cells, search_gin, search_params, darts_gin)
            train_s, results = _train(method, seed, os.path.abspath(os.path.join(search_dir, rd.GENOTYPE_FILE)),
                                      train_dir, train_gin, train_params)
            runs.append({"method": method, "seed": seed, "test_accuracy": results["test_accuracy"],
                         "search_s": search_s, "train_s": train_s, "params": results["params"]})
    result = {"runs": runs, "summary": summarize(runs), "wall_s": time.perf_counter() - started}
    paths = [os.path.join(model_dir, name) for name in (RUNS_FILE, TABLE_FILE, JSON_FILE)]
    rd.write_text_atomic(paths[0], csv_text(runs))
    rd.write_text_atomic(paths[1], markdown_table(result))
    rd.write_text_atomic(paths[2], json.dumps(result, indent=1) + "\n")
    print("\n" + markdown_table(result))
    return {**result, "paths": paths}


def summarize(runs):
    """Per method: mean and sample std (ddof = 1; 0 for one seed) of the test accuracy."""
    summary = {}
    for method in dict.fromkeys(run["method"] for run in runs):
        accuracies = np.array([r["test_accuracy"] for r in runs if r["method"] == method], dtype=np.float64)
        summary[method] = {
            "mean": float(accuracies.mean()),
            "std": float(accuracies.std(ddof=1)) if len(accuracies) > 1 else 0.0,
            "seeds": len(accuracies),
            "search_s": float(np.mean([r["search_s"] for r in runs if r["method"] == method])),
            "train_s": float(np.mean([r["train_s"] for r in runs if r["method"] == method])),
        }
    return summary


def csv_text(runs):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=RUN_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(runs)
    return out.getvalue()


def markdown_table(result):
    lines = ["| method | test accuracy (mean ± std) | seeds | per seed | search (s) | train (s) |",
             "|---|---|---|---|---|---|"]
    for method, s in result["summary"].items():
        per_seed = ", ".join(f"{r['test_accuracy']:.4f}" for r in result["runs"] if r["method"] == method)
        lines.append(f"| {method} | {s['mean']:.4f} ± {s['std']:.4f} | {s['seeds']} | {per_seed} | "
                     f"{s['search_s']:.0f} | {s['train_s']:.0f} |")
    lines.append(f"\nWall time of the comparison: {result['wall_s']:.0f} s (sub-runs already finished count ~0).")
    return "\n".join(lines) + "\n"
