"""A/B of the training-recipe options on one budget (issue 12): one table, one plot.

Every variant is `asmnas-train` with the same base (`--base_gin`, default
the demo's training: DARTS_V2 cells, real Fashion-MNIST) and one change
(or a combination), tested on all 10,000 test images. Each finished variant
is appended to `--results` (JSON lines) as it ends, and skipped on a rerun,
so a stopped A/B continues where it was. Then a Markdown table
(`--table`) and a plot of test accuracy against training wall time
(`--plot`). Nothing else may run beside it: the wall times are compared.

  .venv/bin/python bench/recipe_ab.py --work_dir=/tmp/ab --results=docs/recipe-ab.jsonl
"""

import json
import os
import platform
import subprocess
import sys
import time

from absl import app, flags

flags.DEFINE_string("work_dir", "/tmp/recipe-ab", "run directories of the variants")
flags.DEFINE_string("results", "docs/recipe-ab.jsonl", "JSON lines, one per finished variant")
flags.DEFINE_string("table", "docs/recipe-ab.md", "Markdown table")
flags.DEFINE_string("plot", "docs/recipe-ab.png", "accuracy against wall time")
flags.DEFINE_list("base_gin", ["train/demo.gin"], "gin files of the base recipe")
flags.DEFINE_multi_string("base_param", [], "bindings of the base recipe")
flags.DEFINE_list("only", [], "run only these variants")
flags.DEFINE_string("runs", "docs/recipe-runs.jsonl",
                    "larger runs to plot beside the A/B (JSON lines: name, test_accuracy, wall_s)")
FLAGS = flags.FLAGS

# (name, what changes, bindings). The base is the demo's recipe: the paper's
# (SGD momentum 0.9, coupled L2, cosine to 0, batch 64, aux head 0.4) at a
# laptop budget.
VARIANTS = [
    ("base", "the paper's recipe at this budget", []),
    ("label_smoothing", "label smoothing 0.1", ["build_eval_net.label_smoothing = 0.1"]),
    ("ema", "weight average (EMA 0.99) tested and exported", ["train_optimizer.ema_decay = 0.99"]),
    ("tta_flip", "test-time flip (mean of image and mirror)", ["run_train.test_time_augmentation = 'flip'"]),
    ("one_cycle", "warm-up 0.2 epochs, then linear to 0",
     ["train_optimizer.warmup_epochs = 0.2", "train_optimizer.schedule = 'linear'"]),
    ("nesterov", "Nesterov momentum", ["train_optimizer.nesterov = True"]),
    ("bn_momentum", "BatchNorm momentum 0.7 (PyTorch's 0.3)", ["build_eval_net.bn_momentum = 0.7"]),
    ("batch_256", "batch 256, learning rate x4 (linear scaling)",
     ["run_train.batch_size = 256", "train_optimizer.lr_scaling = 'linear'"]),
    ("cutout_8", "cutout 8 px", ["make_dataset.cutout = 8"]),
    ("no_aux_head", "no auxiliary head", ["build_eval_net.auxiliary = False"]),
    ("lr_x2", "learning rate x2", ["train_optimizer.learning_rate = 0.16"]),
]


def _done(path):
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return {line["variant"]: line for line in map(json.loads, filter(str.strip, f))}


def _append(path, line):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _machine():
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        name = platform.processor()
    return f"{name}, {os.cpu_count()} cores"


def run_variant(name, bindings):
    model_dir = os.path.join(FLAGS.work_dir, name)
    args = [sys.executable, "-m", "asmnas_tf.commands.train", *[f"--gin_file={f}" for f in FLAGS.base_gin],
            *[f"--gin_param={p}" for p in [*FLAGS.base_param, *bindings, "run_train.verbose = 2"]],
            f"--model_dir={model_dir}"]
    print("$", " ".join(args[3:]), flush=True)
    started = time.perf_counter()
    subprocess.run(args, check=True)
    wall = time.perf_counter() - started
    with open(os.path.join(model_dir, "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    return {"test_accuracy": results["test_accuracy"], "test_loss": results["test_loss"],
            "test_accuracy_single_view": results.get("test_accuracy_single_view"),
            "params": results["params"], "aux_params": results.get("aux_params"),
            "train_wall_s": results["wall_s"], "command_wall_s": wall}


def write_table(lines, path):
    base = lines.get("base")
    rows = ["| variant | change | test accuracy | vs base | test loss | training wall (s) |",
            "|---|---|---|---|---|---|"]
    for name, change, _ in VARIANTS:
        if name not in lines:
            continue
        line = lines[name]
        delta = "" if base is None or name == "base" else f"{100 * (line['test_accuracy'] - base['test_accuracy']):+.2f}"
        rows.append(f"| {name} | {change} | {line['test_accuracy']:.4f} | {delta} | {line['test_loss']:.4f} | "
                    f"{line['train_wall_s']:.0f} |")
    machine = next(iter(lines.values()))["machine"] if lines else ""
    text = (f"Base: `{' '.join(FLAGS.base_gin)}` {' '.join(FLAGS.base_param)}; one change per row; "
            f"test accuracy on the 10,000 Fashion-MNIST test images (points: 100 x difference). "
            f"Machine: {machine}.\n\n" + "\n".join(rows) + "\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print(text)


def _larger_runs(path):
    if not path or not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(text) for text in f if text.strip()]


def write_plot(lines, path, runs=()):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if runs else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.5), squeeze=False)
    ax = axes[0][0]
    for name, line in lines.items():
        ax.scatter(line["train_wall_s"], 100 * line["test_accuracy"], color="black" if name == "base" else "C0")
        ax.annotate(name, (line["train_wall_s"], 100 * line["test_accuracy"]), textcoords="offset points",
                    xytext=(4, 3), fontsize=8)
    ax.set_xlabel("training wall time (s), same epochs for every variant")
    ax.set_ylabel("test accuracy (%), 10,000 images")
    ax.set_title("Recipe A/B on Fashion-MNIST (one change each)")
    ax.grid(alpha=0.3)
    if runs:
        ax = axes[0][1]
        for run in runs:
            ax.scatter(run["wall_s"] / 60, 100 * run["test_accuracy"], color="C1")
            ax.annotate(run["name"], (run["wall_s"] / 60, 100 * run["test_accuracy"]), textcoords="offset points",
                        xytext=(4, 3), fontsize=8)
        ax.axhline(93.0, color="grey", linestyle="--", linewidth=1)
        ax.axvline(60.0, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("wall time (min): search + train + test where a pipeline")
        ax.set_ylabel("test accuracy (%), 10,000 images")
        ax.set_title("Budgets tried (dashed: 93% in 60 min)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv):
    del argv
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    done = _done(FLAGS.results)
    machine = _machine()
    for name, change, bindings in VARIANTS:
        if name in done or (FLAGS.only and name not in FLAGS.only):
            continue
        figures = run_variant(name, bindings)
        line = {"variant": name, "change": change, "bindings": bindings, "base_gin": FLAGS.base_gin,
                "base_params": FLAGS.base_param, "machine": machine, **figures}
        _append(FLAGS.results, line)
        done[name] = line
    write_table(done, FLAGS.table)
    write_plot(done, FLAGS.plot, _larger_runs(FLAGS.runs))


if __name__ == "__main__":
    app.run(main)
