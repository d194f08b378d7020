"""Diagnostic pictures: heatmaps (paper Fig. 4), cell diagrams (Appendix A), run plots."""

import os
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from asmnas_tf import plots
from asmnas_tf.space.genotype import Cell, Edge, write_genotype
from asmnas_tf.space.primitives import EDGES, PRIMITIVES
from asmnas_tf.rundir.run_dir import RunDir
from asmnas_tf.supernet.selection import select_genotype

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dirichlet(num_cells, seed=0):
    return np.random.default_rng(seed).dirichlet(np.ones(len(PRIMITIVES)), size=(num_cells, len(EDGES)))


def _leftovers(directory):
    return [name for name in os.listdir(directory) if name.startswith(".tmp-")]


def test_heatmaps_of_15_cells_one_panel_each_argmax_marked(tmp_path):
    coeffs = _dirichlet(15)
    path = tmp_path / "attention.png"
    drawn = plots.plot_attention_heatmaps(coeffs, path, title="t")
    # 5 columns x 3 rows of 2.2 x 3.2 in panels plus 1.6 in margins, at 100 dpi.
    assert plots.heatmap_figsize(15) == pytest.approx((12.6, 11.2))
    assert drawn.size_px == (1260, 1120)
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (1120, 1260)
    assert image[..., :3].std() > 0.05  # not a blank page
    assert drawn.num_heatmaps == 15
    assert drawn.num_axes == 16  # 15 heatmaps + 1 colour bar (unused grid slots removed)
    expected = [(c, e, int(np.argmax(coeffs[c, e]))) for c in range(15) for e in range(len(EDGES))]
    assert list(drawn.marks) == expected
    assert _leftovers(tmp_path) == []


def test_heatmap_grid_for_other_depths_and_svg(tmp_path):
    one = plots.plot_attention_heatmaps(_dirichlet(1), tmp_path / "one.png")
    assert (one.num_heatmaps, one.num_axes) == (1, 2)
    assert one.size_px == (380, 480)  # one 2.2 x 3.2 in panel plus margins
    assert matplotlib.image.imread(tmp_path / "one.png").shape[:2] == (480, 380)
    # L = 7 with DARTS softmax(alpha)-like logits: 5 + 2 panels, 3 slots removed.
    logits = np.random.default_rng(3).normal(size=(7, 14, 8))
    alphas = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    seven = plots.plot_attention_heatmaps(alphas, tmp_path / "seven.svg", reductions=[2, 4])
    assert (seven.num_heatmaps, seven.num_axes) == (7, 8)
    text = (tmp_path / "seven.svg").read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    # matplotlib names each text in an SVG comment.
    assert "cell 2 (reduction)" in text and "cell 3 (normal)" in text


def test_cell_heatmap_marks_each_rows_argmax(tmp_path):
    coeffs = _dirichlet(1, seed=5)[0]
    drawn = plots.plot_cell_heatmap(coeffs, tmp_path / "cell.png", "cell 0")
    assert drawn.size_px == (500, 640)
    assert matplotlib.image.imread(tmp_path / "cell.png").shape[:2] == (640, 500)
    assert [(e, op) for _, e, op in drawn.marks] == list(enumerate(np.argmax(coeffs, axis=1)))


def test_bad_coefficients_and_paths_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"shape \[L, 14, 8\]"):
        plots.plot_attention_heatmaps(np.ones((15, 14, 7)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="finite"):
        plots.plot_cell_heatmap(np.full((14, 8), np.nan), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\.png, \.svg"):
        plots.plot_cell_heatmap(np.ones((14, 8)), tmp_path / "x.jpeg")
    assert os.listdir(tmp_path) == []


# A hand-written cell: two zero edges (dropped), node 5 fed by 3 edges,
# concat without node 3 (a user genotype may do that).
_CELL = Cell(
    reduction=False,
    edges=(
        Edge(0, 2, "sep_conv_3x3"),
        Edge(1, 2, "zero"),
        Edge(1, 3, "skip_connect"),
        Edge(2, 3, "max_pool_3x3"),
        Edge(0, 4, "dil_conv_5x5"),
        Edge(3, 4, "zero"),
        Edge(1, 5, "avg_pool_3x3"),
        Edge(2, 5, "sep_conv_5x5"),
        Edge(4, 5, "dil_conv_3x3"),
    ),
    concat=(2, 4, 5),
)
_EXPECTED_EDGES = {
    ("c_{k-2}", "2", "sep_conv_3x3"),
    ("c_{k-1}", "3", "skip_connect"),
    ("2", "3", "max_pool_3x3"),
    ("c_{k-2}", "4", "dil_conv_5x5"),
    ("c_{k-1}", "5", "avg_pool_3x3"),
    ("2", "5", "sep_conv_5x5"),
    ("4", "5", "dil_conv_3x3"),
    ("2", "c_{k}", ""),
    ("4", "c_{k}", ""),
    ("5", "c_{k}", ""),
}


def test_draw_cell_draws_exactly_the_kept_edges(tmp_path):
    path = tmp_path / "cell.png"
    drawing = plots.draw_cell(_CELL, path, title="hand-written", backend="matplotlib")
    assert drawing.backend == "matplotlib"
    assert drawing.nodes == ("c_{k-2}", "c_{k-1}", "2", "3", "4", "5", "c_{k}")
    assert drawing.edges == frozenset(_EXPECTED_EDGES)
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (636, 1272)  # 10.6 x 5.3 data units of 1 in, at 120 dpi
    assert image[..., :3].std() > 0.05
    svg = plots.draw_cell(_CELL, tmp_path / "cell.svg", backend="matplotlib")
    assert svg.edges == drawing.edges
    assert "<svg" in (tmp_path / "cell.svg").read_text()
    assert _leftovers(tmp_path) == []


def test_pydot_graph_has_the_same_nodes_and_edges():
    pytest.importorskip("pydot")
    nodes, edges = plots.cell_graph(_CELL)
    source = plots._pydot_graph(nodes, edges, "t").to_string()
    assert source.count("->") == len(_EXPECTED_EDGES)
    for op in ("sep_conv_3x3", "skip_connect", "dil_conv_3x3"):
        assert op in source
    assert "zero" not in source


@pytest.mark.skipif(not plots.dot_available(), reason="Graphviz `dot` is not installed")
def test_draw_cell_with_graphviz(tmp_path):
    drawing = plots.draw_cell(_CELL, tmp_path / "cell.png", backend="pydot")
    assert drawing.edges == frozenset(_EXPECTED_EDGES)
    assert matplotlib.image.imread(tmp_path / "cell.png").shape[0] > 50


def test_draw_cell_refuses_an_unknown_backend(tmp_path):
    with pytest.raises(ValueError, match="backend"):
        plots.draw_cell(_CELL, tmp_path / "cell.png", backend="tikz")


def test_write_run_plots_redraws_the_plots_directory(tmp_path):
    coeffs = _dirichlet(3, seed=7)
    RunDir(tmp_path).write_attention(coeffs, 100)
    write_genotype(tmp_path / "genotype.json", select_genotype(coeffs, "argmax", {"method": "asm"}))
    written = plots.write_run_plots(tmp_path)
    cells = tmp_path / "plots" / "cells"
    expected = [str(tmp_path / "plots" / "attention.png")] + [
        str(cells / f"cell{i:02d}.png") for i in range(3)
    ]
    assert written == expected
    assert sorted(os.listdir(cells)) == ["cell00.png", "cell01.png", "cell02.png"]
    assert sorted(os.listdir(tmp_path / "plots")) == ["attention.png", "cells"]
    w, h = plots.heatmap_figsize(3)
    assert matplotlib.image.imread(expected[0]).shape[:2] == (round(h * 100), round(w * 100))
    # Only genotype.json: the cells only.
    (tmp_path / "attention.json").unlink()
    assert plots.write_run_plots(tmp_path) == expected[1:]


def test_write_run_plots_on_an_empty_run_writes_nothing(tmp_path):
    assert plots.write_run_plots(tmp_path) == []
    assert os.listdir(tmp_path) == []


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"old")

    def half_then_crash(tmp):
        with open(tmp, "wb") as f:
            f.write(b"\x89PNG half")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        plots._write_atomic(path, half_then_crash)
    assert path.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_plots_does_not_import_tensorflow():
    code = "import sys, asmnas_tf.plots; sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
