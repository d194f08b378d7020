"""Searches scored against the benchmark: each variant of a method, N seeds, ground-truth accuracy.

A variant is a method of `run_search` with bindings (`VARIANTS`); `random`
draws a uniform architecture of the space from its seed, no search. Each
search runs as `asmnas-search` in its own run directory (resumable) with
`search/benchmark.gin`; its pick (the normal cell) is looked up in the
table. Results go one line per (variant, seed) to scores.jsonl, kept when
the comparison is rerun. The picks are scored against the table as it is
when the summary (scores.md) and the plot (scores.png) are made; a pick the
table does not hold yet is listed as pending (statistics: docs/benchmark.md).
"""

import json
import os

import gin
import numpy as np
from scipy import stats

from asmnas_tf.benchmark.space import BENCH_SPACE, all_architectures, architecture_of
from asmnas_tf.benchmark.table import DEFAULT_TABLE, BenchmarkTable, load_table
from asmnas_tf.errors import UserError
from asmnas_tf.experiments import pipeline, task_pool
from asmnas_tf.rundir import run_dir as rd
from asmnas_tf.rundir.run_dir import SCORES_FILE, SCORES_PLOT_FILE, SCORES_TABLE_FILE, write_text_atomic


SEARCH_GIN = ("search/benchmark.gin",)
DARTS_GIN = ("search/darts.gin",)
_LEARNING = ["build_supernet.attention_init = 'zero_output'", "build_supernet.attention_lr_multiplier = 300.0"]
# name -> (method, bindings). The paper's form first; each remedy alone on top
# of the learning switches, then the controls.
VARIANTS = {
    "asm": ("asm", []),
    "asm_learning": ("asm", _LEARNING),
    "asm_warmup": ("asm", _LEARNING + ["search_remedies.attention_warmup = 0.5"]),
    "asm_no_zero": ("asm", _LEARNING + ["search_remedies.exclude_zero = True"]),
    "asm_perturbation": ("asm", _LEARNING + ["search_remedies.selection = 'perturbation'"]),
    "asm_cap": ("asm", _LEARNING + ["search_remedies.max_parameter_free = 2"]),
    "asm_skip_dropout": ("asm", _LEARNING + ["search_remedies.skip_dropout = 0.4"]),
    # The second round: combinations.
    "asm_warmup_cap": ("asm", _LEARNING + ["search_remedies.attention_warmup = 0.5",
                                           "search_remedies.max_parameter_free = 2"]),
    "darts1": ("darts1", []),
    "rsps": ("rsps", []),
    "uniform_perturbation": ("asm", ["build_supernet.mixing = 'uniform'", "search_remedies.selection = 'perturbation'"]),
    "random": ("random", []),
}


def random_pick(seed, space=BENCH_SPACE):
    codes = all_architectures(space)
    return codes[int(np.random.default_rng([int(seed), 7]).integers(len(codes)))]


def _search(variant, seed, directory, extra_params):
    method, params = VARIANTS[variant]
    search_dir = os.path.join(directory, f"{variant}-{seed}", "search")
    gin_files = list(SEARCH_GIN) + (list(DARTS_GIN) if method in ("darts1", "darts2") else [])
    params = [*params, *extra_params, f"run_search.seed = {seed}", f"run_search.method = '{method}'"]
    pipeline.run_step(f"search: {variant}, seed {seed}", pipeline.command("search", gin_files, params, search_dir),
                      who="benchmark score")
    run = rd.RunDir(search_dir)
    wall = (run.read_timing() or {}).get("wall_s")
    return architecture_of(run.read_genotype()), wall


def score_row(table, row):
    """`row` (variant, seed, architecture, search_wall_s) with its ground truth; None while the table lacks it."""
    if (row["architecture"], 0) not in table.rows:
        return None
    code = row["architecture"]
    return {**row, "accuracy": table.accuracy(code), "percentile": round(table.percentile(code), 4),
            "regret": round(table.regret(code), 6)}


def read_scores(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.endswith("\n") and line.strip()]


def check_arguments(variants, seeds):
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise UserError(f"run_score.variants={list(variants)!r}: expected names among {', '.join(VARIANTS)}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        raise UserError(f"run_score.seeds={seeds!r} is not an int >= 2 (one seed has no interval)")


@gin.configurable(denylist=["directory", "config", "task_index", "num_tasks"])
def run_score(directory, variants=tuple(VARIANTS), seeds=8, table=None, search_params=(), config=None,
              task_index=0, num_tasks=1):
    """Scores `variants` x seeds 0..seeds-1 in `directory`; returns the summary record.

    `config`: the command's operative gin text; the run directory is made
    (or resumed) with it once the arguments and the table have been checked.
    Several processes may share `directory` (`experiments/task_pool.py`):
    each takes a (variant, seed) by its claim, or by `task_index` of
    `num_tasks`, and each pick lands in scores.jsonl once.
    """
    check_arguments(variants, seeds)
    task_pool.check_shard(task_index, num_tasks)
    table = load_table(table or DEFAULT_TABLE)  # a table of another space or recipe: refused before any search
    if config is not None:
        rd.prepare(directory, config, lock=False)  # the workers share it, task by task
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, SCORES_FILE)

    def key(row):
        return row["variant"], row["seed"]

    def done(task):
        return any(key(row) == task for row in read_scores(path))

    tasks = task_pool.shard([(variant, seed) for seed in range(seeds) for variant in variants],
                            task_index, num_tasks)
    for variant, seed in tasks:
        if done((variant, seed)):
            continue
        with task_pool.claim(directory, f"{variant}-{seed}") as mine:
            if not mine or done((variant, seed)):  # another worker has it, or had it and finished
                continue
            if variant == "random":
                code, wall = random_pick(seed), 0.0
            else:
                code, wall = _search(variant, seed, directory, list(search_params))
            pick = {"variant": variant, "seed": seed, "architecture": code, "search_wall_s": wall}
            task_pool.append_once(path, pick, key, read=read_scores)
    return report(directory, variants, table)


def report(directory, variants=tuple(VARIANTS), table=None, picks=None):
    """scores.md and scores.png from the picks in `directory`, scored against the table as it is now.

    A pick the table does not hold yet is pending. Runs no search: a scoring
    run stopped half-way, or one whose table has grown since, is summarised
    again (`asmnas-benchmark report`).
    """
    if not isinstance(table, BenchmarkTable):  # a folder (or None: the shipped table)
        table = load_table(table or DEFAULT_TABLE)
    picks = read_scores(os.path.join(directory, SCORES_FILE)) if picks is None else picks
    if not picks:
        raise UserError(f"--model_dir={directory}: no {SCORES_FILE} with picks to report")
    picks = [pick for pick in picks if pick["variant"] in variants]
    scored = [score_row(table, pick) for pick in picks]
    rows = [row for row in scored if row is not None]
    record = summarize(rows, variants)
    record["pending"] = [pick for pick, row in zip(picks, scored) if row is None]
    record["table_rows"] = len(table.architectures())
    write_text_atomic(os.path.join(directory, SCORES_TABLE_FILE), summary_markdown(record))
    plot_percentiles(rows, variants, os.path.join(directory, SCORES_PLOT_FILE))
    print(summary_markdown(record))
    return record


def _interval(values):
    values = np.asarray(values, np.float64)
    if len(values) < 2 or np.std(values) == 0:
        return float(values.mean()), float(values.mean())
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    return float(low), float(high)


def _agreement(codes):
    """Mean share of edges with the same op over pairs of seeds."""
    pairs = [(a, b) for i, a in enumerate(codes) for b in codes[i + 1:]]
    if not pairs:
        return None
    return float(np.mean([np.mean([x == y for x, y in zip(a, b)]) for a, b in pairs]))


def summarize(rows, variants):
    """Per variant: means with 95% intervals, the one-sided test against percentile 50, agreement, wall time."""
    by_variant = {v: sorted((r for r in rows if r["variant"] == v), key=lambda r: r["seed"]) for v in variants}
    record = {"variants": {}, "paired": []}
    for variant, mine in by_variant.items():
        if not mine:
            continue
        percentiles = [r["percentile"] for r in mine]
        entry = {"seeds": len(mine)}
        for key in ("accuracy", "percentile", "regret"):
            values = [r[key] for r in mine]
            entry[key] = float(np.mean(values))
            entry[f"{key}_95"] = _interval(values)
        # No test without spread: seeds that all picked one architecture give
        # t = inf, a p of 0 that says nothing about the next seed.
        spread = len(mine) > 1 and np.std(percentiles) > 0
        test = stats.ttest_1samp(percentiles, 50.0, alternative="greater") if spread else None
        entry["p_above_50"] = None if test is None or not np.isfinite(test.pvalue) else float(test.pvalue)
        entry["agreement"] = _agreement([r["architecture"] for r in mine])
        walls = [r["search_wall_s"] for r in mine if r["search_wall_s"] is not None]
        entry["search_wall_s"] = float(np.mean(walls)) if walls else None
        record["variants"][variant] = entry
    names = [v for v in variants if by_variant[v]]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pa = {r["seed"]: r["percentile"] for r in by_variant[a]}
            pb = {r["seed"]: r["percentile"] for r in by_variant[b]}
            seeds = sorted(set(pa) & set(pb))
            diffs = [pa[s] - pb[s] for s in seeds]
            p = None
            if len(seeds) >= 2 and any(diffs):
                p = float(stats.wilcoxon(diffs).pvalue)
            record["paired"].append({"a": a, "b": b, "seeds": len(seeds),
                                     "mean_difference": float(np.mean(diffs)) if diffs else None, "p": p})
    return record


def summary_markdown(record):
    def fmt(value, digits=4):
        return "-" if value is None else f"{value:.{digits}f}"

    lines = []
    if record.get("pending"):
        lines += [f"Scored against {record['table_rows']} of 243 architectures; pending (not in the table yet): "
                  + ", ".join(f"{p['variant']}/{p['seed']} {p['architecture']}" for p in record["pending"]), ""]
    lines += ["| variant | seeds | accuracy (95% CI) | percentile (95% CI) | regret | p (percentile > 50) | "
             "agreement | search wall s |", "|---|---|---|---|---|---|---|---|"]
    for name, e in record["variants"].items():
        lines.append(f"| {name} | {e['seeds']} | {e['accuracy']:.4f} ({e['accuracy_95'][0]:.4f}-"
                     f"{e['accuracy_95'][1]:.4f}) | {e['percentile']:.1f} ({e['percentile_95'][0]:.1f}-"
                     f"{e['percentile_95'][1]:.1f}) | {e['regret']:.4f} | {fmt(e['p_above_50'])} | "
                     f"{fmt(e['agreement'], 2)} | {fmt(e['search_wall_s'], 0)} |")
    lines += ["", "| a | b | seeds | mean percentile difference (a - b) | Wilcoxon p |", "|---|---|---|---|---|"]
    for pair in record["paired"]:
        lines.append(f"| {pair['a']} | {pair['b']} | {pair['seeds']} | {fmt(pair['mean_difference'], 1)} | "
                     f"{fmt(pair['p'])} |")
    return "\n".join(lines) + "\n"


def plot_percentiles(rows, variants, path):
    """Percentile of each seed's pick, per variant (one dot a seed), random's expectation dashed."""
    from asmnas_tf.plots import save_figure  # matplotlib only here
    import matplotlib.pyplot as plt

    names = [v for v in variants if any(r["variant"] == v for r in rows)]
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2, 3.6))
    for i, name in enumerate(names):
        values = [r["percentile"] for r in rows if r["variant"] == name]
        jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [0.0]
        ax.scatter(i + np.asarray(jitter), values, s=18)
        ax.hlines(np.mean(values), i - 0.3, i + 0.3, color="black")
    ax.axhline(50, linestyle="--", color="grey", linewidth=1)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("percentile of the pick (ground truth)")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
