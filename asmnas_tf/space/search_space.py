"""A search space: the op set O and the number of intermediate nodes per cell.

The supernet, selection, the genotype file and the evaluation network all
take their op set and cell shape from one `SearchSpace`, bound in gin as
`search_space.primitives` and `search_space.nodes`:

    search_space.primitives = ["zero", "skip_connect", "max_pool_3x3", "sep_conv_3x3"]
    search_space.nodes = 3

A cell has two input nodes (c_{k-2}, c_{k-1}), `nodes` intermediate nodes
and the output node that concatenates them; intermediate node j takes one
edge from every node i < j. The default is the DARTS space (8 ops, 4 nodes,
14 edges). Ops are rows of `op_table.OP_TABLE`; their order fixes each op's
index (coefficient columns, genotype files).
"""

import dataclasses
import functools

import gin

from asmnas_tf.errors import UserError
from asmnas_tf.space.op_table import op_spec

NUM_INPUT_NODES = 2
DARTS_PRIMITIVES = ("zero", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
DARTS_NODES = 4


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    primitives: tuple = DARTS_PRIMITIVES
    nodes: int = DARTS_NODES

    @functools.cached_property
    def intermediate_nodes(self):
        return tuple(range(NUM_INPUT_NODES, NUM_INPUT_NODES + self.nodes))

    @functools.cached_property
    def edges(self):
        """(source, target) of every supernet edge, by target, then source."""
        return tuple((i, j) for j in self.intermediate_nodes for i in range(j))

    @functools.cached_property
    def specs(self):
        return tuple(op_spec(name) for name in self.primitives)

    @property
    def has_zero(self):
        return "zero" in self.primitives

    def index(self, name):
        return self.primitives.index(name)

    def parameter_free_indices(self):
        return tuple(k for k, spec in enumerate(self.specs) if spec.parameter_free)

    def describe(self):
        return f"{len(self.primitives)} ops [{', '.join(self.primitives)}], {self.nodes} nodes"


def make_space(primitives=DARTS_PRIMITIVES, nodes=DARTS_NODES, binding="search_space"):
    """A checked SearchSpace: one line naming the binding, the value and what is accepted."""
    if isinstance(primitives, str) or not isinstance(primitives, (list, tuple)):
        raise UserError(f"{binding}.primitives={primitives!r} is not a list of op names")
    if not primitives:
        raise UserError(f"{binding}.primitives=[] is empty (expected at least one op of the op table)")
    for name in primitives:
        op_spec(name, f"{binding}.primitives: op")
    if len(set(primitives)) != len(primitives):
        twice = sorted({name for name in primitives if list(primitives).count(name) > 1})
        raise UserError(f"{binding}.primitives lists {twice[0]!r} twice (expected distinct ops)")
    if set(primitives) == {"zero"}:
        raise UserError(f"{binding}.primitives=['zero'] has no op that passes anything "
                        f"(expected at least one op other than zero)")
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise UserError(f"{binding}.nodes={nodes!r} is not an int >= 1")
    return SearchSpace(tuple(primitives), int(nodes))


@gin.configurable("search_space")
def search_space(primitives=DARTS_PRIMITIVES, nodes=DARTS_NODES):
    """The bound search space (gin `search_space.primitives`, `search_space.nodes`)."""
    return make_space(tuple(primitives) if isinstance(primitives, list) else primitives, nodes)


DARTS_SPACE = SearchSpace()
