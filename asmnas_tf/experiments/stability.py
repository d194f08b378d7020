"""The performance-stability experiment (paper §5.3.1, Fig. 3).

Take the supernet G trained by a search and the genotype selected from it.
For every edge (i, j) of a cell, replace its mixed op o_bar_{i,j} by the
selected op o^k_{i,j} alone (coefficient 1), keep every other edge mixed,
and measure the accuracy of the modified network on the selection split
(the held-out half the search selected on, SPEC §4) against G's. A method
whose selected ops change the network little is "stable" in the paper's
sense. Works for ASM-NAS and DARTS searches alike: both save their trained
supernet (`supernet.weights.h5`) and genotype in the run directory.

The replacement is a per-edge int variable read by `MixedEdge` (see its
`replacement`), so one traced inference graph serves the whole sweep.

Writes `<search run>/stability/`: stability.csv (one row per edge),
stability.md (a table per cell), stability.png (Fig. 3: one panel per cell,
baseline in red, modified network in green).
"""

import csv
import io
import os

import gin
import numpy as np
import tensorflow as tf

from asmnas_tf.rundir import run_dir as rd
from asmnas_tf.rundir.run_dir import (STABILITY_CSV_FILE as CSV_FILE, STABILITY_DIR,
                                      STABILITY_PLOT_FILE as PLOT_FILE, STABILITY_TABLE_FILE as TABLE_FILE)
from asmnas_tf.data import load_arrays
from asmnas_tf.host.distribute import make_strategy
from asmnas_tf.host.graph_options import lean_grappler_on_cpu

from asmnas_tf.training.inference import accuracy
from asmnas_tf.layers.mixed_edge import MixedEdge
from asmnas_tf.space.primitives import cell_name, edge_name
from asmnas_tf.space.search_space import search_space
from asmnas_tf.supernet.runner import search_datasets
from asmnas_tf.supernet.model import LOGITS
from asmnas_tf.supernet.builder import build_supernet
from asmnas_tf.errors import UserError

COLUMNS = ("cell", "edge", "source", "target", "op", "coefficient", "accuracy", "baseline", "change")


def _check_search_dir(search_dir):
    for name in (rd.GENOTYPE_FILE, rd.SUPERNET_WEIGHTS_FILE):
        if not os.path.isfile(os.path.join(search_dir, name)):
            raise rd.RunDirError(
                f"{search_dir}: no {name}; run the stability experiment on a finished search run "
                f"(bin/search writes {rd.SUPERNET_WEIGHTS_FILE} and {rd.GENOTYPE_FILE})"
            )


def _edge_layers(model, cell):
    """The MixedEdge layers of `cell`, in the bound space's edge order (14 in the DARTS space)."""
    return [model.get_layer(f"{cell_name(cell)}_{edge_name(s, t)}") for s, t in search_space().edges]


def _accuracy(model, images, labels):
    return accuracy(model.predict(images, verbose=0)[LOGITS], labels)


def _selection_arrays(select):
    """The selection split as one (images, labels) pair of numpy arrays.

    Normalised exactly as the search saw it; predicting from an array keeps
    the order of the labels by construction.
    """
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in select])
    return np.concatenate(images), np.concatenate(labels)


@gin.configurable(denylist=["search_dir"])
def run_stability(search_dir, cells=None, batch_size=256):
    """The sweep of Fig. 3 over `cells` (None: every cell) of the search in `search_dir`.

    Returns {"rows": [...], "baseline": accuracy, "paths": [...]}.
    """
    out_dir = os.path.join(search_dir, STABILITY_DIR)
    csv_path = os.path.join(out_dir, CSV_FILE)
    if os.path.exists(csv_path):
        print(f"Stability experiment already complete: {csv_path}")
        rows = read_rows(csv_path)
        return {"rows": rows, "baseline": rows[0]["baseline"] if rows else None, "paths": [csv_path]}
    _check_search_dir(search_dir)
    genotype = rd.RunDir(search_dir).read_genotype()
    num_cells = len(genotype.cells)
    cells = list(range(num_cells)) if cells is None else [int(c) for c in cells]
    bad = [c for c in cells if not 0 <= c < num_cells]
    if bad:
        raise UserError(f"run_stability.cells: {bad} not in 0..{num_cells - 1} (the genotype has {num_cells} cells)")
    method = genotype.source.get("method", "asm")
    seed = int(genotype.source.get("seed", 0))

    strategy = make_strategy()
    lean_grappler_on_cpu()  # as bin/search: the start-up of each traced step
    arrays = load_arrays()
    _, select, _, _, _ = search_datasets(arrays, batch_size, batch_size, seed)
    images, labels = _selection_arrays(select)
    with strategy.scope():
        model = build_supernet(arrays.image_shape, arrays.num_classes,
                               mixing="attention" if method == "asm" else "alpha")
    if len(genotype.cells) != sum(1 for layer in model.layers if layer.name.endswith("_output")):
        raise UserError(f"{search_dir}: the genotype has {num_cells} cells, the supernet of its config does not")
    model.load_weights(rd.RunDir(search_dir).supernet_weights)
    # Before the first predict, so that the traced graph reads them.
    for layer in model.layers:
        if isinstance(layer, MixedEdge):
            layer.replacement = tf.Variable(-1, dtype=tf.int32, trainable=False)

    baseline = _accuracy(model, images, labels)
    print(f"Supernet ({method}) on {len(labels)} selection images: accuracy {baseline:.4f}")
    rows = []
    for cell in cells:
        # argmax keeps one op per edge; top2 drops edges, which the discrete
        # cell replaces by `zero`, and so does this sweep.
        kept = {(e.source, e.target): e for e in genotype.cells[cell].edges}
        for index, ((source, target), layer) in enumerate(zip(search_space().edges, _edge_layers(model, cell))):
            edge = kept.get((source, target))
            op, weight = (edge.op, edge.weight) if edge else ("zero", None)
            weight = float("nan") if weight is None else weight
            layer.replacement.assign(search_space().index(op))
            accuracy = _accuracy(model, images, labels)
            layer.replacement.assign(-1)
            rows.append({
                "cell": cell, "edge": index, "source": source, "target": target, "op": op,
                "coefficient": weight, "accuracy": accuracy, "baseline": baseline,
                "change": accuracy - baseline,
            })
            print(f"  cell {cell:2d} edge {index:2d} ({source}->{target}) {op:13s} "
                  f"accuracy {accuracy:.4f} ({accuracy - baseline:+.4f})", flush=True)

    os.makedirs(out_dir, exist_ok=True)
    # The run's own name: its last two path parts (a compare sub-run is <method-seed>/search).
    title = f"{method}: {os.path.join(*os.path.normpath(os.path.abspath(search_dir)).split(os.sep)[-2:])}"
    plot_path = os.path.join(out_dir, PLOT_FILE)
    plot_stability(rows, plot_path, title=title)
    table_path = os.path.join(out_dir, TABLE_FILE)
    rd.write_text_atomic(table_path, markdown_table(rows, title))
    rd.write_text_atomic(csv_path, csv_text(rows))  # last: its presence marks the run complete
    summary = summarize(rows)
    print(f"Mean |change| {summary['mean_abs_change']:.4f}, largest drop {summary['largest_drop']:.4f}; "
          f"written: {csv_path}")
    return {"rows": rows, "baseline": baseline, "paths": [csv_path, table_path, plot_path], **summary}


def summarize(rows):
    """Mean absolute change and the largest drop of accuracy over the edges."""
    changes = np.array([row["change"] for row in rows], dtype=np.float64)
    return {"mean_abs_change": float(np.mean(np.abs(changes))), "largest_drop": float(-np.min(changes))}


def csv_text(rows):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return out.getvalue()


def read_rows(path):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    numeric = {"cell": int, "edge": int, "source": int, "target": int,
               "coefficient": float, "accuracy": float, "baseline": float, "change": float}
    return [{k: numeric.get(k, str)(v) for k, v in row.items()} for row in rows]


def markdown_table(rows, title):
    summary = summarize(rows)
    lines = [f"# Stability (paper Fig. 3): {title}", "",
             f"Supernet accuracy on the selection split: {rows[0]['baseline']:.4f}. "
             f"Each row: one edge replaced by its selected op. Mean |change| "
             f"{summary['mean_abs_change']:.4f}, largest drop {summary['largest_drop']:.4f}.", ""]
    lines += ["| cell | edge | op | coefficient | accuracy | change |", "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['cell']} | {row['source']}\u2192{row['target']} | {row['op']} | "
                     f"{row['coefficient']:.4f} | {row['accuracy']:.4f} | {row['change']:+.4f} |")
    return "\n".join(lines) + "\n"


def plot_stability(rows, path, title=None):
    """Fig. 3: per cell, accuracy of the modified network per edge index (green)
    against the unmodified supernet (red)."""
    from matplotlib.figure import Figure

    from asmnas_tf.plots import save_figure

    cells = sorted({row["cell"] for row in rows})
    columns = min(len(cells), 3)
    grid_rows = -(-len(cells) // columns)
    fig = Figure(figsize=(4.2 * columns, 3.2 * grid_rows), dpi=100, layout="constrained")
    accuracies = [row["accuracy"] for row in rows] + [rows[0]["baseline"]]
    low, high = min(accuracies), max(accuracies)
    pad = max(0.01, 0.1 * (high - low))
    for position, cell in enumerate(cells):
        ax = fig.add_subplot(grid_rows, columns, position + 1)
        cell_rows = [row for row in rows if row["cell"] == cell]
        edges = [row["edge"] for row in cell_rows]
        ax.axhline(rows[0]["baseline"], color="#d62728", label="original supernet")
        ax.plot(edges, [row["accuracy"] for row in cell_rows], "o-", color="#2ca02c", label="edge replaced")
        ax.set_xticks(range(len(search_space().edges)))
        ax.set_xlim(-0.5, len(search_space().edges) - 0.5)
        ax.set_ylim(low - pad, high + pad)
        ax.set_title(f"cell {cell}", fontsize=10)
        ax.set_xlabel("edge index")
        ax.set_ylabel("accuracy")
    # One legend for the figure, outside the panels: it never hides a point.
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=9)
    if title:
        fig.suptitle(f"Stability (Fig. 3), {title}")
    save_figure(fig, path)

