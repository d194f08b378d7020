"""The cost of one optimisation step, ASM-NAS against DARTS (paper Table 5).

In one process, the same supernet (whatever `build_supernet` is bound to) is
built for each method and one optimisation step is timed:

- `uniform`: the plain supernet, fixed mixing weights 1/|O| (the floor: no
  attention, no alpha);
- `asm`: ASM-NAS, attention mixing, single-level step (weights and attention
  modules together);
- `darts1` / `darts2`: DARTS first / second order, split into its weight step
  and its architecture step (`architect.step_functions`), as Table 5.

Each step function is called once (tracing, graph optimisation: `first_*`),
then `steps` more times; the table reports the median. A DARTS iteration
runs the architecture step then the weight step, as in training. Inputs are
random images of `image_shape` (the time of a step does not depend on the
pixel values). Writes timing.csv, timing.md and timing.json in the run dir.
"""

import csv
import gc
import io
import json
import os
import platform
import time

import gin
import numpy as np
import tensorflow as tf

from asmnas_tf.rundir import run_dir as rd
from asmnas_tf.rundir.run_dir import (STEP_TIMING_CSV_FILE as CSV_FILE, STEP_TIMING_JSON_FILE as JSON_FILE,
                                      STEP_TIMING_TABLE_FILE as TABLE_FILE)
from asmnas_tf.supernet.darts import architecture_optimizer, compile_darts, step_functions
from asmnas_tf.host.distribute import make_strategy
from asmnas_tf.host.graph_options import lean_grappler_on_cpu
from asmnas_tf.training.optim import search_optimizer
from asmnas_tf.training.train_loop import replica_step
from asmnas_tf.supernet.model import compile_supernet
from asmnas_tf.supernet.builder import build_supernet
from asmnas_tf.errors import UserError

METHODS = ("uniform", "asm", "darts1", "darts2")
COLUMNS = ("method", "weight_step_s", "architecture_step_s", "total_s", "images_per_s",
           "first_weight_step_s", "first_architecture_step_s", "steps")


def _sync(result, strategy):
    """Wait for a step's outputs: read every local value back to the host."""
    for value in tf.nest.flatten(result):
        for local in strategy.experimental_local_results(value):
            np.asarray(local)


def _batches(image_shape, num_classes, batch_size, seed):
    """((x, y), (x_val, y_val)): one weight batch and one architecture batch."""
    rng = np.random.default_rng(seed)

    def pair():
        x = rng.normal(size=(batch_size, *image_shape)).astype("float32")
        return x, rng.integers(0, num_classes, batch_size).astype("int32")

    return pair(), pair()


def _build(method, image_shape, num_classes, steps):
    weights = search_optimizer(total_steps=1000 + steps)
    if method in ("uniform", "asm"):
        model = build_supernet(image_shape, num_classes, mixing="attention" if method == "asm" else "uniform")
        return compile_supernet(model, weights)
    model = build_supernet(image_shape, num_classes, mixing="alpha")
    return compile_darts(model, weights, architecture_optimizer(), second_order=method == "darts2")


def _step_functions(model, method, strategy):
    if method.startswith("darts"):
        return step_functions(model, strategy)

    train_step = replica_step(model.train_step)

    @tf.function
    def weight(batch):
        return strategy.run(train_step, args=(batch[0],))

    return {"weight": weight}


def time_method(method, strategy, image_shape, num_classes, batch_size, steps, seed):
    """One row of the table: first and median step times of `method`."""
    with strategy.scope():
        model = _build(method, image_shape, num_classes, steps)
    functions = _step_functions(model, method, strategy)
    # The same distributed batch every step: no input pipeline in the timing.
    batch = strategy.experimental_distribute_values_from_function(
        lambda context: tf.nest.map_structure(
            lambda a: tf.constant(np.array_split(a, context.num_replicas_in_sync)[context.replica_id_in_sync_group]),
            _batches(image_shape, num_classes, batch_size, seed),
        )
    )
    order = [name for name in ("architecture", "weight") if name in functions]  # DARTS: alpha first
    times = {name: [] for name in order}
    for _ in range(steps + 1):
        for name in order:
            started = time.perf_counter()
            _sync(functions[name](batch), strategy)
            times[name].append(time.perf_counter() - started)
    weight = float(np.median(times["weight"][1:]))
    architecture = float(np.median(times["architecture"][1:])) if "architecture" in times else None
    total = weight + (architecture or 0.0)
    row = {
        "method": method, "weight_step_s": weight, "architecture_step_s": architecture, "total_s": total,
        "images_per_s": batch_size / total, "first_weight_step_s": times["weight"][0],
        "first_architecture_step_s": times["architecture"][0] if "architecture" in times else None,
        "steps": steps,
    }
    del model, functions
    gc.collect()
    return row


def ratios(rows):
    """The figures Table 5 is about, from the rows present."""
    total = {row["method"]: row["total_s"] for row in rows}
    out = {}
    if "asm" in total and "uniform" in total:
        out["asm_over_uniform"] = total["asm"] / total["uniform"]
    for darts in ("darts1", "darts2"):
        if darts in total and "asm" in total:
            out[f"{darts}_over_asm"] = total[darts] / total["asm"]
    return out


@gin.configurable(denylist=["model_dir"])
def run_timing(model_dir, methods=METHODS, image_shape=(32, 32, 3), num_classes=10, batch_size=16,
               steps=5, seed=0):
    """Times one step of each of `methods`; returns {"rows", "ratios", "paths"}."""
    json_path = os.path.join(model_dir, JSON_FILE)
    if os.path.exists(json_path):
        print(f"Timing already complete: {json_path}")
        with open(json_path, encoding="utf-8") as f:
            return json.load(f)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UserError(f"run_timing.methods={list(methods)!r}: expected some of {', '.join(METHODS)}")
    if steps < 1 or batch_size < 1:
        raise UserError(f"run_timing: expected steps >= 1 and batch_size >= 1. "
                         f"Received: steps={steps}, batch_size={batch_size}")
    strategy = make_strategy()
    lean_grappler_on_cpu()  # as bin/search: the start-up of each traced step
    if batch_size % strategy.num_replicas_in_sync:
        raise UserError(f"run_timing.batch_size={batch_size} does not split over "
                         f"{strategy.num_replicas_in_sync} replicas")
    image_shape = tuple(int(d) for d in image_shape)
    tf.random.set_seed(seed)
    rows = []
    for method in methods:
        print(f"Timing {method} ...", flush=True)
        rows.append(time_method(method, strategy, image_shape, num_classes, batch_size, steps, seed))
        print("  " + ", ".join(f"{k} {_fmt(v)}" for k, v in rows[-1].items() if k != "method"), flush=True)
    result = {
        "rows": rows, "ratios": ratios(rows),
        "setup": {"image_shape": list(image_shape), "batch_size": batch_size,
                  "replicas": strategy.num_replicas_in_sync,
                  "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                  "tensorflow": tf.__version__},
    }
    rd.write_text_atomic(os.path.join(model_dir, CSV_FILE), csv_text(rows))
    rd.write_text_atomic(os.path.join(model_dir, TABLE_FILE), markdown_table(result))
    result["paths"] = [os.path.join(model_dir, name) for name in (CSV_FILE, TABLE_FILE, JSON_FILE)]
    rd.write_text_atomic(json_path, json.dumps(result, indent=1) + "\n")  # last: marks the run complete
    print(markdown_table(result))
    return result


def _fmt(value):
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def csv_text(rows):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return out.getvalue()


def markdown_table(result):
    setup = result["setup"]
    lines = [
        f"One optimisation step (paper Table 5): batch {setup['batch_size']}, images "
        f"{'x'.join(map(str, setup['image_shape']))}, {setup['replicas']} replica(s), {setup['machine']}, "
        f"TensorFlow {setup['tensorflow']}. Median of {result['rows'][0]['steps']} steps after the first.",
        "",
        "| method | weight step (s) | architecture step (s) | total (s) | images/s | first step (s) |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        first = row["first_weight_step_s"] + (row["first_architecture_step_s"] or 0.0)
        lines.append(f"| {row['method']} | {row['weight_step_s']:.3f} | {_fmt3(row['architecture_step_s'])} | "
                     f"{row['total_s']:.3f} | {row['images_per_s']:.2f} | {first:.1f} |")
    if result["ratios"]:
        lines += ["", "Ratios of the total step: " + ", ".join(
            f"{name.replace('_over_', ' / ')} = {value:.2f}" for name, value in result["ratios"].items())]
    return "\n".join(lines) + "\n"


def _fmt3(value):
    return "-" if value is None else f"{value:.3f}"
