"""The search space as plain data (SPEC §2): operations, cell topology, reductions."""

import math
from asmnas_tf.errors import UserError
from asmnas_tf.space.search_space import DARTS_SPACE, NUM_INPUT_NODES  # noqa: F401

# The DARTS space's values (the default space, `search_space.py`): operation
# space O, in the order that fixes each op's index (SPEC §2).
PRIMITIVES = DARTS_SPACE.primitives

# A cell has N = 7 nodes: inputs 0 (c_{k-2}) and 1 (c_{k-1}), intermediate
# nodes 2..5, and the output node (concat of 2..5).
NUM_INTERMEDIATE_NODES = DARTS_SPACE.nodes
INTERMEDIATE_NODES = DARTS_SPACE.intermediate_nodes

# Every intermediate node j takes one edge from every node i < j: 14 edges,
# in this canonical order (by destination, then source).
EDGES = DARTS_SPACE.edges


def reduction_indices(num_cells):
    """0-indexed reduction cells at 1/3 and 2/3 of the depth (SPEC §2).

    L = 15 gives (4, 9), the paper's 5th and 10th cells; L = 8 and L = 20 give
    the DARTS positions (2, 5) and (6, 13).
    """
    if num_cells < 1:
        raise UserError(f"Expected num_cells >= 1. Received: num_cells={num_cells}")
    first = math.ceil(num_cells / 3) - 1
    second = math.ceil(2 * num_cells / 3) - 1
    return tuple(sorted({first, second}))


def edge_name(source, target):
    return f"edge{source}to{target}"


def cell_name(index):
    """Layer-name prefix of cell `index`: `cell04`."""
    return f"cell{index:02d}"
