"""Architecture selection (paper §4.3, Algorithm 1 steps 6-13; SPEC §4).

With the weights frozen and the supernet in inference mode, one pass over
the selection split gives the mean attention coefficient of every
(cell, edge, op). Each cell is then reduced to a discrete cell:

- `argmax` (the paper's rule): every edge keeps its op with the largest mean
  coefficient, which may be `zero` (the edge is dropped);
- `top2` (the DARTS rule): every intermediate node keeps the two incoming
  edges whose best non-zero op has the largest coefficient.
"""


import numpy as np

from asmnas_tf.space.genotype import Cell, Edge, Genotype
from asmnas_tf.supernet.budget import Problem, best_choices
from asmnas_tf.space.primitives import reduction_indices
from asmnas_tf.space.search_space import search_space
from asmnas_tf.training.inference import accuracy, outputs_and_labels
from asmnas_tf.supernet.model import COEFFICIENTS, LOGITS
from asmnas_tf.errors import UserError
from asmnas_tf.names import RULES  # noqa: F401  (importers use it from here too)


def coefficient_samples(model, dataset):
    """(coefficients per sample [N, L, 14, |O|] float32, accuracy) over `dataset`.

    Inference mode (BN uses its moving statistics, nothing is updated): the
    weights stay frozen. Run in this process alone (`inference.py`), so it
    works the same under every strategy. `accuracy`: the supernet's on
    `dataset`, from the same pass.
    """
    outputs, labels = outputs_and_labels(model, dataset)
    return np.asarray(outputs[COEFFICIENTS], dtype=np.float32), accuracy(outputs[LOGITS], labels)


def mean_coefficients(model, dataset):
    """(mean coefficient per (cell, edge, op) [L, 14, |O|], samples, accuracy) over `dataset`."""
    samples, selection_accuracy = coefficient_samples(model, dataset)
    return samples.mean(axis=0, dtype=np.float64), samples.shape[0], selection_accuracy


def _argmax_edges(cell_coefficients, space, allowed):
    edges = []
    for (source, target), coeffs in zip(space.edges, cell_coefficients):
        k = int(np.argmax(np.where(allowed, coeffs, -np.inf)))
        edges.append(Edge(source, target, space.primitives[k], float(coeffs[k])))
    return edges


def _top2_edges(cell_coefficients, space, allowed):
    edges = []
    for target in space.intermediate_nodes:
        candidates = []
        for (source, edge_target), coeffs in zip(space.edges, cell_coefficients):
            if edge_target != target:
                continue
            non_zero = np.where(allowed, np.asarray(coeffs, dtype=np.float64), -np.inf)
            if space.has_zero:
                non_zero[space.index("zero")] = -np.inf
            k = int(np.argmax(non_zero))
            candidates.append((-float(coeffs[k]), source, k))
        # Largest coefficient first; ties go to the lower source node.
        for neg_weight, source, k in sorted(candidates)[:2]:
            edges.append(Edge(source, target, space.primitives[k], -neg_weight))
    return sorted(edges, key=lambda e: (e.target, e.source))


def _cap_parameter_free(edges, cell_coefficients, space, allowed, cap):
    """At most `cap` kept edges with a parameter-free op: the others take their best op with parameters.

    The edges given up first are those where the switch costs the least
    coefficient (the parameter-free pick's value minus the best other's).
    """
    free = set(space.parameter_free_indices())
    parametric = np.array([k not in free for k in range(len(space.primitives))]) & allowed
    index = {pair: i for i, pair in enumerate(space.edges)}
    chosen = [(i, edge) for i, edge in enumerate(edges) if space.index(edge.op) in free and edge.op != "zero"]
    if cap >= len(chosen):
        return edges
    costs = []
    for i, edge in chosen:
        coeffs = np.asarray(cell_coefficients[index[(edge.source, edge.target)]], np.float64)
        best = int(np.argmax(np.where(parametric, coeffs, -np.inf)))
        costs.append((coeffs[space.index(edge.op)] - coeffs[best], i, best, coeffs[best]))
    edges = list(edges)
    for _, i, best, value in sorted(costs)[:len(chosen) - cap]:
        edges[i] = Edge(edges[i].source, edges[i].target, space.primitives[best], float(value))
    return edges


def _edges_of_choices(cell_values, choices, space):
    """The kept edges of one cell's choices (-1: not kept), by target then source."""
    return [Edge(source, target, space.primitives[k], float(cell_values[e][k]))
            for e, ((source, target), k) in enumerate(zip(space.edges, choices)) if k >= 0]


def select_genotype(mean_coeffs, rule="argmax", source=None, space=None, exclude_zero=False,
                    max_parameter_free=None, budget=None):
    """The genotype of `mean_coeffs` [L, |edges|, |O|] under `rule`, in `space` (the bound search_space()).

    `exclude_zero`: `zero` is never picked. `max_parameter_free`: at most
    that many kept edges per cell carry a parameter-free op other than zero
    (a dropped edge is not an op); the rest switch to their best op with
    parameters (`search_remedies`). `budget`: a (CostTable, Budget) pair:
    the genotype of largest summed value whose evaluation network fits
    (`budget.py`, an exact integer program).
    """
    if rule not in RULES:
        raise UserError(f"Expected rule in {RULES}. Received: rule={rule!r}")
    space = search_space() if space is None else space
    mean_coeffs = np.asarray(mean_coeffs)
    expected = (len(space.edges), len(space.primitives))
    if mean_coeffs.ndim != 3 or mean_coeffs.shape[1:] != expected:
        raise UserError(f"Expected coefficients of shape [L, {expected[0]}, {expected[1]}]. "
                         f"Received: {mean_coeffs.shape}")
    reductions = reduction_indices(len(mean_coeffs))
    pick = _argmax_edges if rule == "argmax" else _top2_edges
    allowed = np.array([not (exclude_zero and name == "zero") for name in space.primitives])
    if budget is not None:
        table, limits = budget
        problem = Problem(mean_coeffs, table, rule, tuple(allowed), max_parameter_free)
        choices = best_choices(problem, limits)
        if choices is None:
            raise UserError(f"no genotype fits the budget of {limits.describe()}")
        edge_lists = [_edges_of_choices(cell, row, space) for cell, row in zip(mean_coeffs, choices)]
    else:
        edge_lists = []
        for cell in mean_coeffs:
            edges = pick(cell, space, allowed)
            if max_parameter_free is not None:
                edges = _cap_parameter_free(edges, cell, space, allowed, max_parameter_free)
            edge_lists.append(edges)
    cells = []
    for index, edges in enumerate(edge_lists):
        cells.append(Cell(reduction=index in reductions, edges=tuple(edges), concat=space.intermediate_nodes))
    cells = tuple(cells)
    return Genotype(cells=cells, source=dict(source or {}, rule=rule), primitives=space.primitives,
                    nodes=space.nodes)
