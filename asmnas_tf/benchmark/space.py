"""The benchmark's cell space: every architecture, as a code and as a genotype.

The space is a `SearchSpace` like any other (`search_space.py`): 3 ops
(`zero`, `skip_connect`, `sep_conv_3x3`: a dropped edge, a parameter-free
and a convolutional op) on a cell of 2 intermediate nodes, whose 5 edges
(0->2, 1->2, 0->3, 1->3, 2->3) each take one op: 3^5 = 243 architectures.
The paper's argmax rule keeps every edge, so its picks are architectures of
this table as they are; the top2 rule drops one edge into node 3, which is
`zero` on that edge.

An architecture is its code: the op index of each edge in the space's edge
order, as digits ("22122"). Its network repeats the one cell at every
position; the reduction positions (`reduction_indices`) run it with stride 2
on the edges leaving the cell's inputs (the evaluation network's rule).
A search's pick is scored by its normal cell (`architecture_of`).
"""

import itertools

from asmnas_tf.errors import UserError
from asmnas_tf.space.genotype import Cell, Edge, Genotype
from asmnas_tf.space.primitives import reduction_indices
from asmnas_tf.space.search_space import make_space

BENCH_PRIMITIVES = ("zero", "skip_connect", "sep_conv_3x3")
BENCH_NODES = 2
BENCH_SPACE = make_space(BENCH_PRIMITIVES, BENCH_NODES)


def all_architectures(space=BENCH_SPACE):
    """Every code of `space`, in lexicographic order (|O|^|edges| of them)."""
    return tuple("".join(str(k) for k in ops)
                 for ops in itertools.product(range(len(space.primitives)), repeat=len(space.edges)))


def check_code(code, space=BENCH_SPACE):
    """One line when `code` is not an architecture of `space`."""
    if not isinstance(code, str) or len(code) != len(space.edges) or \
            any(not c.isdigit() or int(c) >= len(space.primitives) for c in code):
        raise UserError(f"architecture={code!r} is not a code of the benchmark's space "
                        f"(expected {len(space.edges)} digits in 0..{len(space.primitives) - 1})")
    return code


def cell_of(code, reduction, space=BENCH_SPACE):
    check_code(code, space)
    edges = tuple(Edge(source, target, space.primitives[int(k)]) for (source, target), k in zip(space.edges, code))
    return Cell(reduction=reduction, edges=edges, concat=space.intermediate_nodes)


def genotype_of(code, num_cells, space=BENCH_SPACE):
    """The network genotype of architecture `code`: its cell at every one of `num_cells` positions."""
    reductions = reduction_indices(num_cells)
    cells = tuple(cell_of(code, index in reductions, space) for index in range(num_cells))
    return Genotype(cells=cells, source={"method": "benchmark", "architecture": code},
                    primitives=space.primitives, nodes=space.nodes)


def architecture_of(genotype, space=BENCH_SPACE):
    """The code of a genotype's first normal cell (edges it lacks are `zero`); one line if not of `space`."""
    if genotype.space != space:
        raise UserError(f"a genotype of the space {genotype.space.describe()} cannot be scored on the benchmark "
                        f"(its space: {space.describe()})")
    normal = next((cell for cell in genotype.cells if not cell.reduction), genotype.cells[0])
    kept = {(edge.source, edge.target): edge.op for edge in normal.edges}
    if "zero" not in space.primitives and len(kept) < len(space.edges):
        raise UserError("the genotype drops an edge, and the benchmark's space has no zero op")
    return "".join(str(space.index(kept.get(edge, "zero"))) for edge in space.edges)


def describe(code, space=BENCH_SPACE):
    """`0->2 sep_conv_3x3, 1->2 skip_connect, ...`: a code in words."""
    return ", ".join(f"{s}->{t} {space.primitives[int(k)]}" for (s, t), k in zip(space.edges, code))
