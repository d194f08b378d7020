"""Selection within a parameter / multiply-add budget: measured costs, the exact optimum, the front."""

import itertools
import json
import os

import gin
import numpy as np
import pytest

from asmnas_tf.errors import UserError
from asmnas_tf.evaluation.builder import build_eval_net
from asmnas_tf.evaluation.cost_table import MACS, PARAMS, CostTable, genotype_choices, measure_costs
from asmnas_tf.evaluation.size_report import size_report
from asmnas_tf.space.genotype import Cell, Edge, Genotype, random_genotype
from asmnas_tf.space.search_space import DARTS_SPACE, make_space
from asmnas_tf.supernet.budget import (Budget, Problem, best_choices, check_feasible, cheapest, pareto_front, score,
                                       unscored_below)
from asmnas_tf.supernet.runner import search
from asmnas_tf.supernet.selection import select_genotype

SHAPE, CLASSES, CELLS = (8, 8, 1), 4, 5
SMALL = make_space(["zero", "skip_connect", "sep_conv_3x3"], 2)


def _build(genotype, shape, classes):
    return build_eval_net(genotype, shape, classes, channels=4, drop_path=False, space=genotype.space)


@pytest.fixture(scope="module")
def darts_table():
    return measure_costs(SHAPE, CLASSES, CELLS, DARTS_SPACE, build=_build)


def _measured(genotype):
    report = size_report(_build(genotype, SHAPE, CLASSES))
    return report["params"], report["macs"]


def _cell(reduction, edges):
    return Cell(reduction=reduction, edges=tuple(Edge(s, t, op) for s, t, op in edges), concat=(2, 3, 4, 5))


def test_costs_add_up_to_the_built_network(darts_table):
    """Sparse and dense genotypes of both rules: the table's size is size_report's, exactly."""
    rng = np.random.default_rng(0)
    for zero_share in (0.2, 0.6, 0.9):
        probabilities = np.array([zero_share] + [(1 - zero_share) / 7] * 7)
        values = rng.random((CELLS, 14, 8)) * probabilities * 10
        genotype = select_genotype(values)
        assert darts_table.of_genotype(genotype) == _measured(genotype)
    for seed in range(2):
        genotype = random_genotype(CELLS, seed, rule="top2")
        assert darts_table.of_genotype(genotype) == _measured(genotype)


def test_a_cell_no_one_uses_costs_nothing(darts_table):
    """Cell 1 is read by cell 2 as input 1 and cell 3 as input 0; when neither reads it, it is not built."""
    chain_from_0 = [(0, 2, "sep_conv_3x3"), (2, 3, "sep_conv_3x3"), (3, 4, "sep_conv_3x3"), (4, 5, "sep_conv_3x3")]
    chain_from_1 = [(1, 2, "sep_conv_3x3"), (2, 3, "sep_conv_3x3"), (3, 4, "sep_conv_3x3"), (4, 5, "sep_conv_3x3")]
    dense = [(s, t, "sep_conv_3x3") for s, t in DARTS_SPACE.edges]
    base = random_genotype(CELLS, 0)
    cells = list(base.cells)
    cells[1], cells[2], cells[3] = (_cell(cells[1].reduction, dense), _cell(cells[2].reduction, chain_from_0),
                                    _cell(cells[3].reduction, chain_from_1))
    dead = Genotype(cells=tuple(cells), source={"rule": "argmax"})
    alive, _ = darts_table.usage(genotype_choices(dead, DARTS_SPACE))
    assert alive.tolist() == [True, False, True, True, True]
    assert darts_table.of_genotype(dead) == _measured(dead)
    cells[3] = _cell(cells[3].reduction, chain_from_0)  # cell 3 reads cell 1 now
    read = Genotype(cells=tuple(cells), source={"rule": "argmax"})
    assert darts_table.of_genotype(read) == _measured(read)
    assert darts_table.usage(genotype_choices(read, DARTS_SPACE))[0].all()
    assert darts_table.of_genotype(read)[PARAMS] > darts_table.of_genotype(dead)[PARAMS]


def _synthetic_table(seed, cells=2):
    rng = np.random.default_rng(seed)
    edge_costs = rng.integers(1, 1000, (cells, len(SMALL.edges), 3, 2))
    edge_costs[:, :, 0] = 0  # zero
    pre_costs = rng.integers(1, 300, (cells, 2, 2))
    return CostTable(space=SMALL, fixed=(500, 7000), pre_costs=pre_costs, edge_costs=edge_costs)


def _all_choices(rule, cells):
    if rule == "argmax":
        per_cell = list(itertools.product(range(3), repeat=len(SMALL.edges)))
    else:  # two incoming edges per node, non-zero ops: node 2 from {0, 1}, node 3 two of {0, 1, 2}
        per_cell = []
        for pair in itertools.combinations(range(2, 5), 2):
            for ops in itertools.product((1, 2), repeat=4):
                row = [-1] * 5
                for e, k in zip((0, 1, *pair), ops):
                    row[e] = k
                per_cell.append(tuple(row))
    return [np.array(rows) for rows in itertools.product(per_cell, repeat=cells)]


@pytest.mark.parametrize("rule", ["argmax", "top2"])
def test_the_solver_finds_the_brute_force_optimum(rule):
    """Every genotype of a 2-cell, 3-op, 2-node space enumerated: the best within each budget is the solver's."""
    table = _synthetic_table(1)
    values = np.random.default_rng(2).random((2, len(SMALL.edges), 3))
    problem = Problem(values, table, rule)
    everything = _all_choices(rule, 2)
    costs = np.array([table.of_choices(c) for c in everything])
    scores = np.array([score(problem, c) for c in everything])
    assert problem.table.of_choices(best_choices(problem, Budget())) == tuple(costs[scores.argmax()])
    for quantile in (0.05, 0.3, 0.6):
        limit_params = int(np.quantile(costs[:, PARAMS], quantile))
        limit_macs = int(np.quantile(costs[:, MACS], 1 - quantile))
        fits = (costs[:, PARAMS] <= limit_params) & (costs[:, MACS] <= limit_macs)
        choices = best_choices(problem, Budget(limit_params, limit_macs))
        if not fits.any():
            assert choices is None
            continue
        assert score(problem, choices) == pytest.approx(scores[fits].max(), abs=1e-12)
        params, macs = table.of_choices(choices)
        assert params <= limit_params and macs <= limit_macs
    assert cheapest(problem, PARAMS) == costs[:, PARAMS].min()
    assert cheapest(problem, MACS) == costs[:, MACS].min()
    front = pareto_front(problem, points=6)
    for row in front:  # nothing enumerated dominates a point of the front
        better = (scores >= row["score"] - 1e-12) & (costs[:, PARAMS] <= row["params"]) & \
                 (costs[:, MACS] <= row["multiply_adds"])
        assert not np.any(better & ((scores > row["score"] + 1e-12) | (costs[:, PARAMS] < row["params"])
                                    | (costs[:, MACS] < row["multiply_adds"])))


def test_a_loose_budget_picks_what_the_rule_picks(darts_table):
    values = np.random.default_rng(3).random((CELLS, 14, 8))
    for rule in ("argmax", "top2"):
        free = select_genotype(values, rule)
        budgeted = select_genotype(values, rule, budget=(darts_table, Budget(max_params=10**9)))
        assert budgeted.cells == free.cells
    capped = select_genotype(values, exclude_zero=True, max_parameter_free=1)
    assert select_genotype(values, exclude_zero=True, max_parameter_free=1,
                           budget=(darts_table, Budget(max_multiply_adds=10**12))).cells == capped.cells


def test_an_impossible_budget_names_the_smallest_network(darts_table):
    problem = Problem(np.zeros((CELLS, 14, 8)), darts_table)
    smallest = cheapest(problem, PARAMS)
    # Below every edge zero: a cell no one reads is not built, and chains from one input skip the other's conv.
    assert smallest < darts_table.of_choices(np.zeros((CELLS, 14), int))[PARAMS]
    with pytest.raises(UserError, match=f"smallest reachable evaluation network has {smallest:,} parameters"):
        check_feasible(problem, Budget(max_params=smallest - 1))
    check_feasible(problem, Budget(max_params=smallest))
    with pytest.raises(UserError, match=r"run_search.max_params=0 is not an int >= 1"):
        Budget(max_params=0).check()


def test_unscored_ops_rank_below_the_scored():
    values = np.array([[[-np.inf, 0.3, 0.1], [0.2, -np.inf, -np.inf]]])
    filled = unscored_below(values)
    np.testing.assert_array_equal(filled, [[[-0.9, 0.3, 0.1], [0.2, -0.8, -0.8]]])


def test_a_budgeted_search_picks_within_its_budget(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (128, 8, 8, 1)).astype("uint8")
    y = rng.integers(0, 4, 128)
    space = DARTS_SPACE
    with gin.unlock_config():
        gin.bind_parameter("build_eval_net.channels", 4)
    try:
        table = measure_costs(SHAPE, CLASSES, 2, space)
        problem = Problem(np.zeros((2, 14, 8)), table)
        low, high = cheapest(problem, PARAMS), table.of_choices(np.full((2, 14), 4))[PARAMS]
        limit = (low + high) // 3
        with pytest.raises(UserError, match="smallest reachable"):
            search(x, y, epochs=1, batch_size=16, num_cells=2, channels=4, max_params=low - 1,
                   model_dir=str(tmp_path / "impossible"), verbose=0)
        assert not os.path.exists(tmp_path / "impossible" / "genotype.json")
        model_dir = tmp_path / "run"
        result = search(x, y, epochs=1, batch_size=16, num_cells=2, channels=4, max_params=limit,
                        supernet_options={"attention_hidden_units": 8}, model_dir=str(model_dir), verbose=0)
        params, macs = _measured_with(result.genotype)
    finally:
        gin.clear_config()
    assert params <= limit
    assert result.genotype.source["cost"] == {"params": params, "multiply_adds": macs}
    record = json.loads((model_dir / "pareto.json").read_text())
    assert record["chosen"]["params"] == params and record["budget"]["max_params"] == limit
    front = record["front"]
    assert [r["params"] for r in front] == sorted(r["params"] for r in front)
    assert all(r["score"] <= record["chosen"]["score"] + 1e-9 for r in front if r["params"] <= limit)
    assert (model_dir / "plots" / "pareto.png").stat().st_size > 10_000


def _measured_with(genotype):
    report = size_report(build_eval_net(genotype, SHAPE, CLASSES, drop_path=False))
    return report["params"], report["macs"]
