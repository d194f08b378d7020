"""ASM-NAS against DARTS, RSPS and random cells, same data, same budget (paper Tables 1-3).

For every seed and method, one search and one training, each the project's
own command in a fresh process (so each gets its own gin config and graph),
in `<model_dir>/<method>-seed<seed>/{search,train}`:

- `asm`: bin/search with `search_gin` + `search_params`;
- `darts1` / `darts2`: the same, plus `darts_gin` and the method;
- `rsps`: the same with `run_search.method = 'rsps'` (random search with
  weight sharing, Li & Talwalkar 2019: one sampled path per step, then the
  best sampled architecture on the shared weights);
- `random`: the "Random Sample" row: a random genotype of `num_cells` cells
  from the seed (`genotype.random_genotype`), no search.

Every searching method gets the same `search_epochs`; every genotype the
same training (`train_gin` + `train_params`, `train_epochs`). `method_params`
adds bindings to one method's search (e.g. the attention options).
`variants` names further entries of `methods`, each a method above under its
own name (`{'asm_warmup': 'asm'}`), so that one comparison can hold two
configurations of a method; `method_params` is keyed by those names too.

Every finished (method, seed) is appended, as it completes, to the results
file (`results.jsonl` in `model_dir`, or `results_file`): a rerun reads it
and skips what is there, so a comparison survives being stopped and can be
continued on another day or machine by pointing `results_file` at it. Each
line carries the configuration's fingerprint; a file of another
configuration is refused before any work. Methods and seeds are not in the
fingerprint: more of either can be added later.

The summary (`statistics.py`): mean ± std and 95% interval per method,
paired differences against each baseline (random, rsps) with a paired
t-test and a Wilcoxon signed-rank test, the improvement over the random
mean, and the cross-seed stability of each method's genotypes; a plot of
the accuracy per seed with the means and intervals.
"""

import hashlib
import json
import os
import re
import time

import gin

from asmnas_tf.errors import UserError
from asmnas_tf.experiments import pipeline, statistics, task_pool
from asmnas_tf.rundir import run_dir as rd
from asmnas_tf.rundir.run_dir import (COMPARE_JSON_FILE as JSON_FILE, COMPARE_PLOT_FILE as PLOT_FILE,
                                      COMPARE_RESULTS_FILE as RESULTS_FILE, COMPARE_TABLE_FILE as TABLE_FILE)
from asmnas_tf.commands.cli import GIN_DIR, resolve_gin_file
from asmnas_tf.training.run_skeleton import check_counts
from asmnas_tf.space.genotype import random_genotype, read_genotype, to_dict, write_genotype

METHODS = ("asm", "darts1", "darts2", "rsps", "random")
BASELINES = ("random", "rsps")


class SubRunError(UserError):
    """A search or training of the comparison failed; its own output says why."""


_command = pipeline.command  # `python -m` of this interpreter: the installed package


def _run(command, what):
    return pipeline.run_step(what, command, who="compare", error=SubRunError)


def _write_hparams(model_dir, line, config):
    """The task's TensorBoard HParams session, in <model_dir>/tensorboard/<method>-seed<seed>."""
    from asmnas_tf.training.hparams import write_session  # TensorFlow only where a task finishes

    name = f"{line['method']}-seed{line['seed']}"
    write_session(os.path.join(rd.RunDir(model_dir).tensorboard, name), name,
                  {"method": line["method"], "seed": line["seed"], **config},
                  {key: line[key] for key in ("test_accuracy", "params", "search_s", "train_s")})


def _search(name, seed, search_dir, config):
    """Runs (or finds) the search of `name` (a method or a variant); its own wall time (timing.json), 0 for random."""
    method = config.get("variants", {}).get(name, name)
    genotype_path = rd.RunDir(search_dir).genotype_path
    if method == "random":
        if not os.path.exists(genotype_path):
            os.makedirs(search_dir, exist_ok=True)
            write_genotype(genotype_path, random_genotype(config["num_cells"], seed))
        return 0.0
    gin_files = list(config["search_gin"]) + (list(config["darts_gin"]) if method in ("darts1", "darts2") else [])
    params = [*config["search_params"], *config["method_params"].get(name, []),
              f"build_supernet.num_cells = {config['num_cells']}", f"run_search.seed = {seed}",
              f"run_search.method = '{method}'", f"run_search.epochs = {config['search_epochs']}"]
    seconds = _run(_command("search", gin_files, params, search_dir), f"search: {name}, seed {seed}")
    timing = rd.RunDir(search_dir).read_timing() or {}
    return float(timing.get("wall_s", seconds))


def _train(method, seed, genotype_path, train_dir, config):
    params = [*config["train_params"], f"run_train.genotype = '{genotype_path}'", "run_train.num_cells = None",
              f"run_train.seed = {seed}", f"run_train.epochs = {config['train_epochs']}"]
    seconds = _run(_command("train", config["train_gin"], params, train_dir), f"train: {method}, seed {seed}")
    return seconds, rd.RunDir(train_dir).read_results()


def _search_figures(search_dir):
    """The search's own diagnostics worth keeping per result, or {}."""
    report = rd.RunDir(search_dir).read_diagnostics() or {}
    keep = ("initial_final_agreement", "mean_abs_drift", "confident_choices", "choices", "median_margin",
            "parameter_free_share")
    figures = {k: report[k] for k in keep if k in report}
    timing = rd.RunDir(search_dir).read_timing() or {}
    if "selection_accuracy" in timing:
        figures["selection_accuracy"] = timing["selection_accuracy"]
    return figures


_INCLUDE = re.compile(r"""^\s*include\s+['"]([^'"]+)['"]""", re.MULTILINE)


def gin_texts(files):
    """The text of each gin file and of everything it includes (depth first), by path.

    Part of the fingerprint: a results file is only comparable if the
    configs behind the same file names said the same.
    """
    texts = {}

    def add(name):
        path = resolve_gin_file(name)
        if path in texts:
            return
        with open(path, encoding="utf-8") as f:
            texts[path] = f.read()
        for included in _INCLUDE.findall(texts[path]):
            add(included)

    for name in files:
        add(name)
    return {os.path.relpath(path, GIN_DIR) if path.startswith(GIN_DIR) else path: text
            for path, text in texts.items()}


def fingerprint(config):
    """A short hash of what makes results comparable (all but methods and seeds), gin files' text included."""
    files = [*config["search_gin"], *config["darts_gin"], *config["train_gin"]]
    text = json.dumps({**config, "gin_texts": gin_texts(files)}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_results(path, expected):
    """The result lines of `path` ([] if none); refuses lines of another configuration."""
    if not os.path.exists(path):
        return []
    lines = []
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError as err:
                raise UserError(f"run_compare.results_file={path!r}: line {number} is not JSON ({err.msg})") from None
            if line.get("config") != expected:
                raise UserError(
                    f"run_compare.results_file={path!r}: line {number} is from another configuration "
                    f"(fingerprint {line.get('config')!r}, this one {expected!r}); use a new results file")
            lines.append(line)
    return lines


def _check(methods, seeds, search_epochs, train_epochs, method_params, variants):
    for name, method in variants.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_]+", name) or name in METHODS:
            raise UserError(f"run_compare.variants: name {name!r} is not a new name of letters, digits and _")
        if method not in METHODS or method == "random":
            raise UserError(f"run_compare.variants[{name!r}]={method!r}: expected one of "
                            f"{', '.join(m for m in METHODS if m != 'random')}")
    names = (*METHODS, *variants)
    unknown = [m for m in methods if m not in names]
    if unknown or not methods:
        raise UserError(f"run_compare.methods={list(methods)!r}: expected some of {', '.join(names)}")
    if len(seeds) < 2 or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) for s in seeds):
        raise UserError(f"run_compare.seeds={list(seeds)!r}: expected at least 2 distinct integer seeds "
                        f"(a mean ± std needs more than one)")
    check_counts("run_compare", search_epochs=(search_epochs, 1), train_epochs=(train_epochs, 1))
    strange = [m for m in method_params if m not in names]
    if strange:
        raise UserError(f"run_compare.method_params: unknown method {strange[0]!r}; expected some of "
                        f"{', '.join(names)}")


@gin.configurable(denylist=["model_dir", "task_index", "num_tasks"])
def run_compare(model_dir, methods=("asm", "darts1", "rsps", "random"), seeds=(0, 1, 2, 3, 4), num_cells=4,
                search_epochs=2, train_epochs=2, search_gin=("search/demo.gin",), search_params=(),
                darts_gin=("search/darts.gin",), method_params=None, train_gin=("train/demo.gin",),
                train_params=(), results_file=None, variants=None, task_index=0, num_tasks=1):
    """Search and train every (method, seed); returns {"runs", "summary", "paths"}.

    Several processes or machines may run it at once on one `model_dir`
    (`task_pool.py`): each takes the (method, seed) tasks of its shard
    (`task_index` of `num_tasks`) that no other holds; the summary covers the
    tasks finished so far (the last worker to end writes the complete one).
    """
    task_pool.check_shard(task_index, num_tasks)
    method_params = {k: list(v) for k, v in dict(method_params or {}).items()}
    variants = dict(variants or {})
    _check(methods, seeds, search_epochs, train_epochs, method_params, variants)
    config = {"num_cells": num_cells, "search_epochs": search_epochs, "train_epochs": train_epochs,
              "search_gin": list(search_gin), "search_params": list(search_params), "darts_gin": list(darts_gin),
              "method_params": method_params, "train_gin": list(train_gin), "train_params": list(train_params)}
    if variants:  # absent otherwise, so that results files written before variants existed still match
        config["variants"] = variants
    key = fingerprint(config)
    results_path = results_file or os.path.join(model_dir, RESULTS_FILE)

    def read(path):  # refuses another configuration's lines
        return read_results(path, key)

    def finished(method, seed):
        return any(r["method"] == method and r["seed"] == seed for r in read(results_path))

    read(results_path)
    started = time.perf_counter()
    tasks = task_pool.shard([(method, seed) for seed in seeds for method in methods], task_index, num_tasks)
    for method, seed in tasks:
        if finished(method, seed):
            continue
        with task_pool.claim(model_dir, f"{method}-seed{seed}") as mine:
            if not mine or finished(method, seed):  # another worker has it, or had it and finished
                continue
            run = os.path.join(model_dir, f"{method}-seed{seed}")
            search_dir, train_dir = os.path.join(run, "search"), os.path.join(run, "train")
            search_s = _search(method, seed, search_dir, config)
            genotype_path = os.path.abspath(rd.RunDir(search_dir).genotype_path)
            train_s, results = _train(method, seed, genotype_path, train_dir, config)
            line = {"config": key, "method": method, "seed": seed, "test_accuracy": results["test_accuracy"],
                    "search_s": search_s, "search_epochs": 0 if method == "random" else search_epochs,
                    "train_s": train_s, "params": results["params"],
                    "genotype": to_dict(read_genotype(genotype_path)), **_search_figures(search_dir)}
            task_pool.append_once(results_path, line, lambda r: (r["method"], r["seed"]), read=read)
            _write_hparams(model_dir, line, config)
    runs = [r for r in read(results_path) if r["method"] in methods and r["seed"] in seeds]
    if len(runs) < len(methods) * len(seeds):
        print(f"compare: {len(runs)} of {len(methods) * len(seeds)} runs finished (others may be running "
              f"elsewhere); the summary covers those")
    if not runs:
        return {"config": config, "fingerprint": key, "runs": [], "paths": [results_path]}
    result = {"config": config, "fingerprint": key, "runs": runs, **summarize(runs),
              "wall_s": time.perf_counter() - started}
    paths = [os.path.join(model_dir, name) for name in (TABLE_FILE, JSON_FILE, PLOT_FILE)]
    rd.write_text_atomic(paths[0], markdown_table(result))
    rd.write_text_atomic(paths[1], json.dumps(result, indent=1) + "\n")
    from asmnas_tf.plots import plot_comparison  # matplotlib only here

    plot_comparison(result, paths[2])
    print("\n" + markdown_table(result))
    return {**result, "paths": [results_path, *paths]}


def summarize(runs):
    """{"summary": per method, "paired": per (method, baseline), "stability": per searching method}."""
    methods = list(dict.fromkeys(run["method"] for run in runs))
    by_method = {m: {r["seed"]: r for r in runs if r["method"] == m} for m in methods}
    summary = {}
    for m in methods:
        rows = list(by_method[m].values())
        summary[m] = {**statistics.describe([r["test_accuracy"] for r in rows]),
                      "search_s": sum(r["search_s"] for r in rows) / len(rows),
                      "train_s": sum(r["train_s"] for r in rows) / len(rows),
                      "search_epochs": rows[0].get("search_epochs")}
    paired = {}
    for baseline in BASELINES:
        if baseline not in by_method:
            continue
        base = {s: r["test_accuracy"] for s, r in by_method[baseline].items()}
        for m in methods:
            if m != baseline and f"{baseline} vs {m}" not in paired:
                paired[f"{m} vs {baseline}"] = statistics.paired(
                    {s: r["test_accuracy"] for s, r in by_method[m].items()}, base)
    if "random" in summary:
        for m in methods:
            summary[m]["improvement_over_random_mean"] = summary[m]["mean"] - summary["random"]["mean"]
    stability = {m: statistics.genotype_stability([r["genotype"] for r in by_method[m].values()])
                 for m in methods if len(by_method[m]) > 1 and "genotype" in next(iter(by_method[m].values()))}
    return {"summary": summary, "paired": paired, "stability": stability}


def _f(value, digits=4):
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(result):
    lines = ["| method | seeds | test accuracy (mean ± std) | 95% interval | over random mean | per seed | "
             "search epochs | search (s) | train (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method, s in result["summary"].items():
        per_seed = ", ".join(f"{r['test_accuracy']:.4f}" for r in sorted(result["runs"], key=lambda r: r["seed"])
                             if r["method"] == method)
        lines.append(f"| {method} | {s['n']} | {s['mean']:.4f} ± {_f(s['std'])} | "
                     f"[{_f(s['ci_low'])}, {_f(s['ci_high'])}] | {_f(s.get('improvement_over_random_mean'))} | "
                     f"{per_seed} | {s['search_epochs']} | {s['search_s']:.0f} | {s['train_s']:.0f} |")
    if result["paired"]:
        lines += ["", "| paired by seed | pairs | mean difference | wins / losses | t-test p | Wilcoxon p |",
                  "|---|---|---|---|---|---|"]
        for name, p in result["paired"].items():
            lines.append(f"| {name} | {p['n']} | {_f(p['mean_difference'])} | {p['wins']} / {p['losses']} | "
                         f"{_f(p['t_p'], 3)} | {_f(p['wilcoxon_p'], 3)} |")
    if result["stability"]:
        lines += ["", "| genotypes across seeds | runs | same op in every run | pairwise agreement (chance 0.125) "
                  "| same op in every run, per cell |", "|---|---|---|---|---|"]
        for method, st in result["stability"].items():
            per_cell = ", ".join(f"{v:.2f}" for v in st["all_agree_per_cell"])
            lines.append(f"| {method} | {st['runs']} | {st['all_agree']:.3f} | {_f(st['pairwise'], 3)} | {per_cell} |")
    lines.append(f"\nWall time of this call: {result['wall_s']:.0f} s (results already in the file count 0).")
    return "\n".join(lines) + "\n"
