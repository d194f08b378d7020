"""The paper's diagnostic pictures (SPEC §8 `plots/`), from the run's files.

- Attention heatmaps (paper Fig. 4): per cell, the mean coefficient of every
  (edge, op), with the op each edge keeps under the argmax rule outlined.
- Cell diagrams (paper Appendix A): one genotype cell as a graph, one arrow
  per kept edge labelled with its op.

Pure numpy + matplotlib (Agg canvas, no pyplot, so no global backend state)
and, when Graphviz's `dot` binary is on PATH, pydot. TensorFlow is never
imported: plots can be redrawn from a run directory on any machine.

Node names in the cell diagrams: the inputs are c_{k-2} and c_{k-1}, the
intermediate nodes keep their genotype numbers 2..5 (SPEC §2), so that a
heatmap row "1→4" and the diagram's arrow 1 -> 4 name the same edge, and
the output is c_{k}.
"""

import dataclasses
import math
import os
import shutil

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, Rectangle


from asmnas_tf.space.primitives import reduction_indices
from asmnas_tf.space.search_space import search_space
from asmnas_tf.rundir.run_dir import RunDir
from asmnas_tf.errors import UserError
from asmnas_tf.names import CONFIDENT
from asmnas_tf.rundir.atomic_write import write_file_atomic

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
DPI = 100
# Heatmap grid: panel size in inches, and room for tick labels, titles and
# the colour bar. The figure is exactly heatmap_figsize(L) at DPI: never
# cropped ("tight" bounding boxes would make the image size unpredictable).
HEATMAP_COLUMNS = 5
_PANEL_W, _PANEL_H = 2.2, 3.2
_MARGIN_W, _MARGIN_H = 1.6, 1.6


def _edge_labels():
    return tuple(f"{i}\u2192{j}" for i, j in search_space().edges)
_MARK_COLOR = "#e4171b"
_DOUBT_COLOR = "white"  # an argmax below CONFIDENT: dashed

INPUT_NAMES = ("c_{k-2}", "c_{k-1}")
OUTPUT_NAME = "c_{k}"
BACKENDS = ("auto", "pydot", "matplotlib")


@dataclasses.dataclass(frozen=True)
class HeatmapPlot:
    """What plot_attention_heatmaps / plot_cell_heatmap drew."""

    path: str
    num_heatmaps: int
    num_axes: int  # heatmaps + the colour bar
    size_px: tuple[int, int]  # (width, height) of the raster image
    # (cell, edge index in EDGES, op index in PRIMITIVES): the outlined argmax.
    marks: tuple[tuple[int, int, int], ...]


@dataclasses.dataclass(frozen=True)
class CellDrawing:
    """What draw_cell drew: node names and (from, to, label) arrows."""

    path: str
    backend: str  # "pydot" or "matplotlib"
    nodes: tuple[str, ...]
    edges: frozenset  # of (from name, to name, label); output arrows have label ""


# ---------------------------------------------------------------- heatmaps


def heatmap_figsize(num_cells):
    """Figure size in inches of the L-cell heatmap grid."""
    cols = min(HEATMAP_COLUMNS, num_cells)
    rows = math.ceil(num_cells / cols)
    return (cols * _PANEL_W + _MARGIN_W, rows * _PANEL_H + _MARGIN_H)


def plot_attention_heatmaps(mean_coeffs, path, title=None, reductions=None, confidence=None):
    """One heatmap per cell of `mean_coeffs` [L, 14, 8], all in one figure.

    `confidence` [L, 14] (bootstrap confidence of each edge's argmax, issue
    13): the argmax of an edge below 95% is outlined dashed, in white.

    Works for any coefficients per (cell, edge, op): ASM-NAS mean attention
    or DARTS softmax(alpha). All panels share one colour scale [0, max].
    `reductions` are the reduction cells' indices (default: SPEC §2 positions).
    """
    coeffs = _check_coefficients(mean_coeffs, ndim=3)
    num_cells = len(coeffs)
    reductions = set(reduction_indices(num_cells) if reductions is None else reductions)
    cols = min(HEATMAP_COLUMNS, num_cells)
    rows = math.ceil(num_cells / cols)
    fig = Figure(figsize=heatmap_figsize(num_cells), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(rows, cols, squeeze=False)
    limits = _colour_limits(coeffs)
    marks, image, panels = [], None, []
    for index, ax in enumerate(grid.flat):
        if index >= num_cells:
            fig.delaxes(ax)
            continue
        row, col = divmod(index, cols)
        # Op names under the lowest panel of each column only.
        lowest = index + cols >= num_cells
        doubtful = () if confidence is None else np.flatnonzero(np.asarray(confidence[index]) < CONFIDENT)
        image, cell_marks = _draw_panel(ax, coeffs[index], limits, col == 0, lowest, False, doubtful)
        kind = "reduction" if index in reductions else "normal"
        ax.set_title(f"cell {index} ({kind})", fontsize=10,
                     fontweight="bold" if index in reductions else "normal")
        marks.extend((index, edge, op) for edge, op in cell_marks)
        panels.append(ax)
    bar = fig.colorbar(image, ax=panels, shrink=0.6, aspect=30, pad=0.02)
    bar.set_label("mean coefficient")
    fig.suptitle(title or "Attention coefficients per cell (argmax outlined)", fontsize=13)
    size = save_figure(fig, path)
    return HeatmapPlot(os.fspath(path), len(panels), len(fig.axes), size, tuple(marks))


def plot_cell_heatmap(cell_coeffs, path, title=None):
    """The heatmap of one cell's coefficients [14, 8], values printed in it."""
    coeffs = _check_coefficients(cell_coeffs, ndim=2)
    fig = Figure(figsize=(5.0, 6.4), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image, cell_marks = _draw_panel(ax, coeffs, _colour_limits(coeffs), True, True, True)
    fig.colorbar(image, ax=ax, shrink=0.8).set_label("coefficient")
    ax.set_title(title or "Attention coefficients (argmax outlined)", fontsize=11)
    size = save_figure(fig, path)
    marks = tuple((0, edge, op) for edge, op in cell_marks)
    return HeatmapPlot(os.fspath(path), 1, len(fig.axes), size, marks)


def _colour_limits(coeffs):
    """The data's own range: early in a search the coefficients differ only
    around 1/|O| = 0.125, and a 0-to-max scale would paint them all alike."""
    low, high = float(coeffs.min()), float(coeffs.max())
    return low, max(high, low + 1e-12)


def _draw_panel(ax, coeffs, limits, row_labels, col_labels, annotate, doubtful=()):
    vmin, vmax = limits
    image = ax.imshow(coeffs, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto",
                      interpolation="nearest")
    ax.set_yticks(range(len(search_space().edges)), _edge_labels() if row_labels else [], fontsize=7)
    ax.set_xticks(range(len(search_space().primitives)), search_space().primitives if col_labels else [],
                  rotation=90, fontsize=7)
    ax.tick_params(length=2)
    if row_labels:
        ax.set_ylabel("edge (0 = c$_{k-2}$, 1 = c$_{k-1}$)", fontsize=8)
    marks = []
    for edge, row in enumerate(coeffs):
        op = int(np.argmax(row))
        marks.append((edge, op))
        unsure = edge in doubtful
        ax.add_patch(Rectangle((op - 0.5, edge - 0.5), 1, 1, fill=False, linewidth=1.6,
                               edgecolor=_DOUBT_COLOR if unsure else _MARK_COLOR,
                               linestyle="--" if unsure else "-"))
        if annotate:
            for k, value in enumerate(row):
                light = value < vmin + 0.55 * (vmax - vmin)  # white on viridis' dark end
                ax.text(k, edge, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if light else "black")
    return image, marks


def _check_coefficients(values, ndim):
    coeffs = np.asarray(values, dtype=np.float64)
    expected = (len(search_space().edges), len(search_space().primitives))
    shape = "[L, 14, 8]" if ndim == 3 else "[14, 8]"
    if coeffs.ndim != ndim or coeffs.shape[-2:] != expected or coeffs.size == 0:
        raise UserError(f"Expected coefficients of shape {shape}. Received: shape={coeffs.shape}")
    if not np.all(np.isfinite(coeffs)):
        raise UserError("Expected finite coefficients. Received: NaN or inf values")
    return coeffs


# ---------------------------------------------------------------- cell diagrams


def cell_graph(cell):
    """Node names and (from, to, label) arrows of a genotype Cell; zero edges left out."""
    names = {0: INPUT_NAMES[0], 1: INPUT_NAMES[1]}
    intermediate = sorted({e.target for e in cell.edges} | set(cell.concat))
    names.update({node: str(node) for node in intermediate})
    nodes = (*INPUT_NAMES, *(str(n) for n in intermediate), OUTPUT_NAME)
    edges = [(names[e.source], names[e.target], e.op) for e in cell.edges if e.op != "zero"]
    edges += [(names[node], OUTPUT_NAME, "") for node in cell.concat]
    return nodes, edges


def dot_available():
    return shutil.which("dot") is not None


def draw_cell(cell, path, title=None, backend="auto"):
    """Draws genotype `cell` to `path` (.png, .svg or .pdf); returns a CellDrawing.

    backend "auto" uses pydot + Graphviz when `dot` is installed, otherwise
    matplotlib; both draw the same nodes and labelled arrows.
    """
    if backend not in BACKENDS:
        raise UserError(f"Expected backend in {BACKENDS}. Received: backend={backend!r}")
    if backend == "auto":
        backend = "pydot" if dot_available() and _pydot() is not None else "matplotlib"
    nodes, edges = cell_graph(cell)
    if backend == "pydot":
        graph = _pydot_graph(nodes, edges, title)
        fmt = _format_of(path)
        _write_atomic(path, lambda tmp: graph.write(tmp, format=fmt))
    else:
        _draw_cell_matplotlib(nodes, edges, path, title)
    return CellDrawing(os.fspath(path), backend, nodes, frozenset(edges))


def draw_genotype(genotype, directory, backend="auto"):
    """Writes `directory`/cell00.png, cell01.png, ... one per cell; returns the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for index, cell in enumerate(genotype.cells):
        path = os.path.join(directory, f"cell{index:02d}.png")
        kind = "reduction" if cell.reduction else "normal"
        draw_cell(cell, path, title=f"cell {index} ({kind})", backend=backend)
        paths.append(path)
    return paths


def _pydot():
    try:
        import pydot
    except ImportError:
        return None
    return pydot


def _pydot_graph(nodes, edges, title):
    """The DARTS picture style (quark0/darts, cnn/visualize.py) as a pydot graph."""
    pydot = _pydot()
    if pydot is None:
        raise UserError("Expected pydot to be installed for backend='pydot'")
    graph = pydot.Dot(graph_type="digraph", rankdir="LR")
    if title:
        graph.set("label", title)
        graph.set("labelloc", "t")
    graph.set_edge_defaults(fontsize="20", fontname="times")
    graph.set_node_defaults(style="filled", shape="rect", align="center", fontsize="20",
                            height="0.5", width="0.5", penwidth="2", fontname="times")
    for name in nodes:
        graph.add_node(pydot.Node(_dot_id(name), label=name, fillcolor=_node_color(name)))
    for source, target, label in sorted(edges, key=_edge_order):
        attrs = {"label": label, "fillcolor": "gray"} if label else {"fillcolor": "gray"}
        graph.add_edge(pydot.Edge(_dot_id(source), _dot_id(target), **attrs))
    return graph


def _dot_id(name):
    return {"c_{k-2}": "in0", "c_{k-1}": "in1", "c_{k}": "out"}.get(name, "n" + name)


def _node_color(name):
    if name in INPUT_NAMES:
        return "darkseagreen2"
    return "palegoldenrod" if name == OUTPUT_NAME else "lightblue"


_MPL_COLORS = {"darkseagreen2": "#b4eeb4", "lightblue": "#add8e6", "palegoldenrod": "#eee8aa"}
# Layout in data units (1 unit = _UNIT_IN inches): inputs left, the four
# intermediate nodes zig-zag left to right, the output right.
_UNIT_IN = 1.0
_POSITIONS = {
    "c_{k-2}": (0.0, 1.25),
    "c_{k-1}": (0.0, -1.25),
    "2": (2.1, 0.75),
    "3": (3.8, -0.75),
    "4": (5.5, 0.75),
    "5": (7.2, -0.75),
    "c_{k}": (9.2, 0.0),
}
_XLIM, _YLIM = (-0.7, 9.9), (-2.6, 2.7)
_TITLE_BAND = 0.5  # the top strip holds the title: arcs and labels keep out
_NODE_RADIUS = {"c_{k-2}": 0.42, "c_{k-1}": 0.42, "c_{k}": 0.42}
_INNER_RADIUS = 0.3
_LABEL_FONT = 9
_RADS = (0.0, 0.15, -0.15, 0.3, -0.3, 0.45, -0.45, 0.6, -0.6)
_TS = (0.5, 0.42, 0.58, 0.34, 0.66, 0.27, 0.73, 0.2, 0.8)


def _draw_cell_matplotlib(nodes, edges, path, title):
    width = (_XLIM[1] - _XLIM[0]) * _UNIT_IN
    height = (_YLIM[1] - _YLIM[0]) * _UNIT_IN
    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(*_XLIM)
    ax.set_ylim(*_YLIM)
    ax.set_aspect("equal")  # arc3 bends in display space: equal aspect makes it data space
    ax.axis("off")
    patches = {}
    for name in nodes:
        radius = _NODE_RADIUS.get(name, _INNER_RADIUS)
        patch = Circle(_POSITIONS[name], radius, facecolor=_MPL_COLORS[_node_color(name)],
                       edgecolor="#333333", linewidth=1.6, zorder=3)
        ax.add_patch(patch)
        patches[name] = patch
        text = f"${name}$" if name.startswith("c_") else name
        ax.text(*_POSITIONS[name], text, ha="center", va="center", fontsize=12, zorder=4)
    curves = []
    # Op arrows first (they choose bends and label spots), output arrows last.
    ordered = sorted(edges, key=_edge_order)
    placed_boxes = [_node_box(name) for name in nodes]
    op_colors = colormaps["tab10"]
    for source, target, label in ordered:
        rad, samples = _choose_bend(source, target, nodes, curves)
        curves.append(samples)
        color = op_colors(_op_index(label) % 10) if label else "#888888"
        ax.add_patch(FancyArrowPatch(
            _POSITIONS[source], _POSITIONS[target], patchA=patches[source],
            patchB=patches[target], connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
            mutation_scale=14, color=color, linewidth=1.5 if label else 1.2, zorder=1))
        if label:
            x, y, box = _place_label(source, target, rad, label, placed_boxes)
            placed_boxes.append(box)
            ax.text(x, y, label, ha="center", va="center", fontsize=_LABEL_FONT, color=color,
                    zorder=2, bbox=dict(boxstyle="round,pad=0.15", facecolor="white",
                                        edgecolor=color, linewidth=0.6, alpha=0.92))
    if title:
        ax.text(sum(_XLIM) / 2, _YLIM[1] - _TITLE_BAND / 2, title, ha="center", va="center",
                fontsize=13)
    save_figure(fig, path)


def _op_index(name):
    """A stable colour index: the op's place in the op table."""
    from asmnas_tf.space.op_table import OP_TABLE

    return list(OP_TABLE).index(name) if name in OP_TABLE else 0


def _edge_order(edge):
    source, target, label = edge
    rank = {name: k for k, name in enumerate((*INPUT_NAMES, "2", "3", "4", "5", OUTPUT_NAME))}
    return (label == "", rank[target], rank[source])


def _control_point(source, target, rad):
    # matplotlib's Arc3: the quadratic Bezier's control point.
    (x1, y1), (x2, y2) = _POSITIONS[source], _POSITIONS[target]
    return ((x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1))


def _bezier(source, target, rad, t):
    p0, p2 = np.array(_POSITIONS[source]), np.array(_POSITIONS[target])
    c = np.array(_control_point(source, target, rad))
    t = np.asarray(t, dtype=np.float64)[..., None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * c + t**2 * p2


def _choose_bend(source, target, nodes, curves):
    """The least bent arc that clears every other node and hugs no drawn arrow."""
    ts = np.linspace(0.12, 0.88, 40)
    others = [n for n in nodes if n not in (source, target)]
    best = None
    for rad in _RADS:
        samples = _bezier(source, target, rad, ts)
        clearance = min(
            (np.linalg.norm(samples - _POSITIONS[n], axis=1).min()
             - _NODE_RADIUS.get(n, _INNER_RADIUS) for n in others), default=np.inf)
        outside = np.any((samples[:, 1] > _YLIM[1] - _TITLE_BAND - 0.1)
                         | (samples[:, 1] < _YLIM[0] + 0.15))
        hits = clearance < 0.18 or outside
        crowd = 0.0
        for other in curves:
            gaps = np.linalg.norm(samples[:, None, :] - other[None, :, :], axis=2).min(axis=1)
            crowd += float(np.mean(gaps < 0.15))
        cost = 10.0 * hits + 2.0 * crowd + abs(rad)
        if best is None or cost < best[0]:
            best = (cost, rad, samples)
    return best[1], best[2]


def _label_size(label):
    # DejaVu Sans at _LABEL_FONT points: ~0.6 em per character, plus the box pad.
    width = (0.6 * len(label) + 0.5) * _LABEL_FONT / 72 / _UNIT_IN
    height = 1.6 * _LABEL_FONT / 72 / _UNIT_IN
    return width, height


def _node_box(name):
    x, y = _POSITIONS[name]
    r = _NODE_RADIUS.get(name, _INNER_RADIUS)
    return (x - r, y - r, x + r, y + r)


def _place_label(source, target, rad, label, boxes):
    """The spot along the arc whose label box overlaps the placed ones least."""
    width, height = _label_size(label)
    best = None
    for order, t in enumerate(_TS):
        x, y = _bezier(source, target, rad, t)
        box = (x - width / 2, y - height / 2, x + width / 2, y + height / 2)
        overlap = sum(_overlap(box, other) for other in boxes)
        inside = (box[0] >= _XLIM[0] and box[2] <= _XLIM[1]
                  and box[1] >= _YLIM[0] and box[3] <= _YLIM[1] - _TITLE_BAND)
        cost = overlap + (0 if inside else 1.0) + 0.002 * order
        if best is None or cost < best[0]:
            best = (cost, float(x), float(y), box)
    return best[1], best[2], best[3]


def _overlap(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


# ---------------------------------------------------------------- run directory


def write_run_plots(model_dir):
    """Redraws `<model_dir>/plots/` from attention.json and genotype.json.

    Writes plots/attention.png if attention.json exists and
    plots/cells/cellNN.png if genotype.json exists; returns the written paths.
    """
    run = RunDir(model_dir)
    plots = run.plots
    written = []
    record = run.read_attention()
    if record is not None:
        primitives = search_space().primitives
        if record.primitives != primitives:
            raise UserError(f"{run.attention_path}: primitives {list(record.primitives)} (expected {list(primitives)})")
        coeffs, reductions, num_samples, confidence = record[:4]
        os.makedirs(plots, exist_ok=True)
        path = os.path.join(plots, "attention.png")
        title = "Mean attention coefficients per cell (argmax outlined)"
        if num_samples is not None:
            title += f", {num_samples} selection samples"
        if confidence is not None:  # a second line: the figure is only as wide as its panels
            doubtful = int(np.sum(confidence < CONFIDENT))
            title += (f"\ndashed white: the {doubtful} of {confidence.size} argmaxes below "
                      f"{CONFIDENT:.0%} bootstrap confidence")
        plot_attention_heatmaps(coeffs, path, title=title, reductions=reductions, confidence=confidence)
        written.append(path)
    if os.path.isfile(run.genotype_path):
        written += draw_genotype(run.read_genotype(), os.path.join(plots, "cells"))
    return written


# ---------------------------------------------------------------- files


def _format_of(path):
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in FORMATS:
        raise UserError(f"Expected a path ending in {', '.join(FORMATS)}. Received: path={path!r}")
    return FORMATS[ext]


def save_figure(fig, path):
    """Saves `fig` atomically; returns the raster size (width, height) in pixels."""
    fmt = _format_of(path)
    _write_atomic(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=fig.dpi))
    width, height = fig.get_size_inches() * fig.dpi
    return (int(round(width)), int(round(height)))


def _write_atomic(path, write):
    """`write(tmp)` then rename onto `path`: a crash never leaves half a picture."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    write_file_atomic(path, write)


# ---------------------------------------------------------------- comparison


def plot_comparison(result, path):
    """Test accuracy per seed of each method (dots), its mean (bar) and 95% interval (`compare.py`)."""
    summary, runs = result["summary"], result["runs"]
    methods = list(summary)
    fig = Figure(figsize=(1.6 + 1.3 * len(methods), 4.2), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, method in enumerate(methods):
        values = [r["test_accuracy"] for r in runs if r["method"] == method]
        offsets = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [0.0]
        ax.scatter(i + np.asarray(offsets), values, s=22, color="#4c72b0", zorder=3)
        s = summary[method]
        ax.hlines(s["mean"], i - 0.3, i + 0.3, color="black", linewidth=2, zorder=4)
        if s["ci_low"] is not None:
            ax.vlines(i + 0.33, s["ci_low"], s["ci_high"], color="#c44e52", linewidth=2, zorder=4)
    ax.set_xticks(range(len(methods)), methods)
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, 0.0), min(high, 1.0))  # an interval of 2 seeds can reach past 1
    ax.set_ylabel("test accuracy")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Per seed (dots), mean (black), 95% interval (red)", fontsize=10)
    return save_figure(fig, path)


# ---------------------------------------------------------------- budget


def plot_pareto(record, path):
    """A budgeted search's front (`budget.py`): selection score against parameters and against multiply-adds."""
    front, chosen, budget = record["front"], record["chosen"], record["budget"]
    fig = Figure(figsize=(9.0, 3.8), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, scale, label, limit in (
            (axes[0], "params", 1e3, "parameters (thousands)", budget["max_params"]),
            (axes[1], "multiply_adds", 1e6, "multiply-adds per image (millions)", budget["max_multiply_adds"])):
        order = sorted(front, key=lambda row: (row[key], -row["score"]))
        ax.scatter([row[key] / scale for row in order], [row["score"] for row in order], s=12, color="#999999",
                   label="front in (score, params, multiply-adds)")
        best, staircase = -np.inf, []
        for row in order:  # this measure's own front: each point beats every cheaper one
            if row["score"] > best:
                best = row["score"]
                staircase.append(row)
        ax.plot([row[key] / scale for row in staircase], [row["score"] for row in staircase], "o-",
                color="#4c72b0", markersize=4, label="front in (score, this measure)")
        ax.scatter([chosen[key] / scale], [chosen["score"]], s=90, marker="*", color="#c44e52", zorder=4,
                   label="chosen")
        if limit is not None:
            ax.axvline(limit / scale, color="#c44e52", linestyle="--", linewidth=1, label="budget")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("selection score (sum of kept values)")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Best genotype per budget (exact), evaluation network as the train step builds it", fontsize=10)
    return save_figure(fig, path)
