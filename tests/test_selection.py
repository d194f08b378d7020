"""Selection (Algorithm 1, steps 6-13) on coefficients set by hand."""

import json

import numpy as np
import pytest

from asmnas_tf.space.genotype import GenotypeError, read_genotype, write_genotype
from asmnas_tf.space.primitives import EDGES, PRIMITIVES
from asmnas_tf.rundir.run_dir import RunDir
from asmnas_tf.supernet.selection import select_genotype

OP = {name: k for k, name in enumerate(PRIMITIVES)}


def _coefficients(num_cells, picks):
    """Uniform-ish coefficients with a chosen winner per (cell, edge)."""
    coeffs = np.full((num_cells, len(EDGES), len(PRIMITIVES)), 0.1)
    for (cell, edge), (op, weight) in picks.items():
        coeffs[cell, edge, OP[op]] = weight
    return coeffs / coeffs.sum(axis=-1, keepdims=True)


def test_argmax_keeps_each_edges_best_op_including_zero():
    picks = {(0, e): ("sep_conv_3x3", 0.5) for e in range(14)}
    picks[(0, 3)] = ("zero", 0.9)          # edge 1->3 is dropped
    picks[(1, 0)] = ("max_pool_3x3", 0.6)  # cell 1, edge 0->2
    picks[(1, 13)] = ("dil_conv_5x5", 0.7)  # cell 1, edge 4->5
    genotype = select_genotype(_coefficients(2, picks), "argmax", {"method": "asm"})
    cell0, cell1 = genotype.cells
    assert [(e.source, e.target) for e in cell0.edges] == list(EDGES)
    assert cell0.edges[3].op == "zero" and (cell0.edges[3].source, cell0.edges[3].target) == (1, 3)
    assert [e.op for i, e in enumerate(cell0.edges) if i != 3] == ["sep_conv_3x3"] * 13
    assert cell1.edges[0].op == "max_pool_3x3"
    assert cell1.edges[13].op == "dil_conv_5x5"
    assert cell0.edges[0].weight == pytest.approx(0.5 / (0.5 + 0.7))
    assert genotype.source == {"method": "asm", "rule": "argmax"}
    assert [c.reduction for c in genotype.cells] == [True, True]  # L = 2: cells 0 and 1


def test_top2_keeps_two_strongest_non_zero_edges_per_node():
    picks = {
        (0, 0): ("zero", 0.95),         # 0->2: best non-zero is weak
        (0, 1): ("sep_conv_5x5", 0.4),  # 1->2
        (0, 2): ("avg_pool_3x3", 0.3),  # 0->3
        (0, 3): ("skip_connect", 0.5),  # 1->3
        (0, 4): ("dil_conv_3x3", 0.2),  # 2->3
        (0, 9): ("max_pool_3x3", 0.6),  # 0->5
        (0, 13): ("sep_conv_3x3", 0.7),  # 4->5
    }
    genotype = select_genotype(_coefficients(3, picks), "top2")
    cell = genotype.cells[0]
    kept = [(e.source, e.target, e.op) for e in cell.edges]
    assert len(kept) == 8
    # Node 2 has two inputs only: both stay, 0->2 with its best NON-zero op
    # (all tied at 0.1, so the first: max_pool_3x3), not with zero.
    assert [k for k in kept if k[1] == 2] == [(0, 2, "max_pool_3x3"), (1, 2, "sep_conv_5x5")]
    assert [k for k in kept if k[1] == 3] == [(0, 3, "avg_pool_3x3"), (1, 3, "skip_connect")]
    assert [k for k in kept if k[1] == 5] == [(0, 5, "max_pool_3x3"), (4, 5, "sep_conv_3x3")]
    assert all(e.op != "zero" for c in genotype.cells for e in c.edges)
    for target in (2, 3, 4, 5):
        assert len({e.source for e in cell.edges if e.target == target}) == 2


def test_selected_genotype_round_trips_through_the_file(tmp_path):
    coeffs = np.random.default_rng(0).dirichlet(np.ones(8), size=(15, 14))
    genotype = select_genotype(coeffs, "argmax", {"method": "asm", "dataset": "x", "seed": 0})
    path = tmp_path / "genotype.json"
    write_genotype(path, genotype)
    again = read_genotype(path, num_cells=15)
    assert again == genotype
    assert [c.reduction for c in again.cells].count(True) == 2
    run = RunDir(tmp_path)
    assert run.read_attention() is None  # not written yet
    run.write_attention(coeffs, 123)
    record = run.read_attention()
    np.testing.assert_allclose(record.coefficients, coeffs, atol=1e-8)
    assert record.reductions == [4, 9] and record.num_samples == 123 and record.confidence is None
    assert json.loads((tmp_path / "attention.json").read_text())["num_samples"] == 123


def test_corrupted_genotype_is_refused_with_the_field_named(tmp_path):
    coeffs = np.random.default_rng(1).dirichlet(np.ones(8), size=(5, 14))
    path = tmp_path / "genotype.json"
    write_genotype(path, select_genotype(coeffs))
    data = json.loads(path.read_text())
    data["cells"][2]["edges"][4]["op"] = "conv_9x9"
    path.write_text(json.dumps(data))
    with pytest.raises(GenotypeError, match=r"cells\[2\]\.edges\[4\]\.op.*conv_9x9"):
        read_genotype(path)
    with pytest.raises(ValueError, match="rule"):
        select_genotype(coeffs, "top3")
