"""What each choice of a genotype costs in the evaluation network: parameters and multiply-adds.

The functional network holds only the layers its output depends on, so
its size is a sum over what is alive in it:

    fixed (stem, global pool, classifier)
    + sum over alive cells c of
        pre_cost[c, s] for each input s (0: c_{k-2}, 1: c_{k-1}) the cell uses
        + edge_cost[c, edge, op] for each kept edge (`zero` costs nothing)

A cell uses input s when a kept non-zero edge leaves node s; it also uses
input 1 when an intermediate node has no such edge (that node is zeros
shaped like input 1). The last cell is alive, and so is the cell the
auxiliary head reads when the network has one (the head is not counted,
as in `size_report`, but it keeps its cell in the graph); cell c is alive
when an alive cell uses it (cell c + 1 as its input 1, cell c + 2 as its
input 0).
A cell's output concatenates all its intermediate nodes, so an alive cell's
kept edges all count.

The costs are measured, not modelled: the network is built once per op of
the space with that op on every edge (the network the train step builds,
from the same `build_eval_net` bindings), and every edge and preprocessing
layer is counted as `size_report` counts it. `fixed` is what remains; it is
the same in every build, which is checked.
"""

import dataclasses

import numpy as np

from asmnas_tf.layers.aux_head import AuxiliaryHead
from asmnas_tf.evaluation.size_report import _count, _layer_macs, size_report
from asmnas_tf.space.genotype import Cell, Edge, Genotype
from asmnas_tf.space.primitives import cell_name, edge_name, reduction_indices

PARAMS, MACS = 0, 1


@dataclasses.dataclass(frozen=True)
class CostTable:
    """One network shape's costs: `fixed` (params, macs), `pre_costs` [cells, 2, 2], `edge_costs` [cells, edges, ops, 2]."""

    space: object
    fixed: tuple
    pre_costs: np.ndarray
    edge_costs: np.ndarray
    always_alive: tuple = ()

    def usage(self, choices):
        """(alive [cells] bool, uses [cells, 2] bool) of `choices` [cells, edges] (-1: edge not kept)."""
        choices = np.asarray(choices)
        space = self.space
        zero = space.index("zero") if space.has_zero else -1
        kept = (choices >= 0) & (choices != zero)
        sources = np.array([source for source, _ in space.edges])
        targets = np.array([target for _, target in space.edges])
        uses = np.stack([kept[:, sources == 0].any(axis=1), kept[:, sources == 1].any(axis=1)], axis=1)
        empty_node = np.stack([~kept[:, targets == node].any(axis=1) for node in space.intermediate_nodes], axis=1)
        uses[:, 1] |= empty_node.any(axis=1)
        alive = np.zeros(len(choices), bool)
        for c in reversed(range(len(choices))):
            alive[c] = (c == len(choices) - 1 or c in self.always_alive
                        or (alive[c + 1] and uses[c + 1, 1])
                        or (c + 2 < len(choices) and alive[c + 2] and uses[c + 2, 0]))
        return alive, uses & alive[:, None]

    def of_choices(self, choices):
        """(params, macs) of the evaluation network of `choices` [cells, edges] op indices."""
        choices = np.asarray(choices)
        alive, uses = self.usage(choices)
        cells, edges = np.nonzero((choices >= 0) & alive[:, None])
        total = (np.asarray(self.fixed, np.int64) + self.edge_costs[cells, edges, choices[cells, edges]].sum(axis=0)
                 + (self.pre_costs * uses[:, :, None]).sum(axis=(0, 1)))
        return int(total[PARAMS]), int(total[MACS])

    def of_genotype(self, genotype):
        """(params, macs) of the evaluation network of `genotype`."""
        return self.of_choices(genotype_choices(genotype, self.space))


def genotype_choices(genotype, space):
    """[cells, edges] op index of every edge of `genotype` (-1 where the cell keeps no such edge)."""
    index = {pair: i for i, pair in enumerate(space.edges)}
    choices = np.full((len(genotype.cells), len(space.edges)), -1, np.int64)
    for c, cell in enumerate(genotype.cells):
        for edge in cell.edges:
            choices[c, index[(edge.source, edge.target)]] = space.index(edge.op)
    return choices


def _uniform_genotype(num_cells, space, op):
    reductions = reduction_indices(num_cells)
    cells = tuple(Cell(reduction=c in reductions, concat=space.intermediate_nodes,
                       edges=tuple(Edge(s, t, op) for s, t in space.edges)) for c in range(num_cells))
    return Genotype(cells=cells, source={"rule": "argmax"}, primitives=space.primitives, nodes=space.nodes)


def measure_costs(input_shape, num_classes, num_cells, space, build=None):
    """The CostTable of `space` in the network `build(genotype, input_shape, num_classes)` makes.

    `build`: None builds with `build_eval_net` and its bound arguments (the
    train step's); the auxiliary head is left out, as `size_report` does.
    """
    if build is None:
        from asmnas_tf.evaluation.builder import build_eval_net

        def build(genotype, shape, classes):
            return build_eval_net(genotype, shape, classes, drop_path=False, space=space)

    costs = np.zeros((num_cells, len(space.edges), len(space.primitives), 2), np.int64)
    pre_costs = np.zeros((num_cells, 2, 2), np.int64)
    fixed = set()
    for k, op in enumerate(space.primitives):
        model = build(_uniform_genotype(num_cells, space, op), tuple(input_shape), num_classes)
        layers = {layer.name: layer for layer in model.layers}

        def cost(name):
            layer = layers.get(name)
            return (0, 0) if layer is None else (_count(layer.trainable_weights), _layer_macs(layer))

        present = np.zeros(2, np.int64)
        for c in range(num_cells):
            for e, (source, target) in enumerate(space.edges):
                costs[c, e, k] = cost(f"{cell_name(c)}_{edge_name(source, target)}_{op}")  # `zero`: no layer
                present += costs[c, e, k]
            for s in (0, 1):
                found = cost(f"{cell_name(c)}_pre{s}")
                if f"{cell_name(c)}_pre{s}" in layers:
                    pre_costs[c, s] = found
                present += found
        total = size_report(model)
        auxiliary = any(isinstance(layer, AuxiliaryHead) for layer in model.layers)
        fixed.add((total["params"] - int(present[PARAMS]), total["macs"] - int(present[MACS])))
        del model
    if len(fixed) != 1:  # would mean the size is not the sum above: no exact budget then
        raise AssertionError(f"the network's fixed cost differs between ops: {sorted(fixed)}")
    always_alive = (reduction_indices(num_cells)[-1],) if auxiliary and reduction_indices(num_cells) else ()
    return CostTable(space=space, fixed=fixed.pop(), pre_costs=pre_costs, edge_costs=costs,
                     always_alive=always_alive)
