"""Published DARTS-family genotypes, so users can train them too (SPEC §5).

Each is kept in its classic form: a normal and a reduce list of
(op, input_node) pairs, two per intermediate node, in node order. Pairs 2k and
2k+1 feed intermediate node k. In the classic code the states are
[c_{k-2}, c_{k-1}, node0, node1, ...], so input index 2 is the first
intermediate node, which is our node 2: the numbering is the same as ours.
The classic `none` op never appears in these lists, and all use concat 2..5.
"""

from asmnas_tf.space.genotype import Cell, Edge, Genotype, GenotypeError
from asmnas_tf.space.primitives import INTERMEDIATE_NODES, reduction_indices

NAMES = ("DARTS_V1", "DARTS_V2", "PC_DARTS", "PDARTS")

# (normal, reduce) pairs per name.
_CLASSIC = {
    # DARTS first order. Source: quark0/darts, cnn/genotypes.py, DARTS_V1.
    "DARTS_V1": (
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0),
         ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 0), ("skip_connect", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1),
         ("skip_connect", 2), ("max_pool_3x3", 0),
         ("max_pool_3x3", 0), ("skip_connect", 2),
         ("skip_connect", 2), ("avg_pool_3x3", 0)],
    ),
    # DARTS second order (the paper's "DARTS"). Source: quark0/darts,
    # cnn/genotypes.py, DARTS_V2.
    "DARTS_V2": (
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("skip_connect", 0),
         ("skip_connect", 0), ("dil_conv_3x3", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1),
         ("skip_connect", 2), ("max_pool_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2),
         ("skip_connect", 2), ("max_pool_3x3", 1)],
    ),
    # PC-DARTS searched on CIFAR-10. Source: yuhuixu1993/PC-DARTS,
    # genotypes.py, PC_DARTS_cifar (= PCDARTS).
    "PC_DARTS": (
        [("sep_conv_3x3", 1), ("skip_connect", 0),
         ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
         ("sep_conv_5x5", 0), ("sep_conv_3x3", 1),
         ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
        [("sep_conv_5x5", 1), ("max_pool_3x3", 0),
         ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 0), ("sep_conv_3x3", 3),
         ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
    ),
    # P-DARTS searched on CIFAR-10. Source: chenxin061/pdarts, genotypes.py, PDARTS.
    "PDARTS": (
        [("skip_connect", 0), ("dil_conv_3x3", 1),
         ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("sep_conv_3x3", 3),
         ("sep_conv_3x3", 0), ("dil_conv_5x5", 4)],
        [("avg_pool_3x3", 0), ("sep_conv_5x5", 1),
         ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
         ("max_pool_3x3", 0), ("dil_conv_3x3", 1),
         ("dil_conv_3x3", 1), ("dil_conv_5x5", 3)],
    ),
}


def classic_pairs(name):
    """The published (normal, reduce) lists of (op, input_node) pairs."""
    _check_name(name)
    normal, reduce = _CLASSIC[name]
    return list(normal), list(reduce)


def named_genotype(name, num_cells):
    """The named genotype for a `num_cells`-deep network: the normal cell at
    normal positions, the reduce cell at `reduction_indices(num_cells)`."""
    _check_name(name)
    normal, reduce = _CLASSIC[name]
    normal_cell = Cell(reduction=False, edges=_edges(normal))
    reduce_cell = Cell(reduction=True, edges=_edges(reduce))
    reductions = reduction_indices(num_cells)
    cells = tuple(reduce_cell if i in reductions else normal_cell for i in range(num_cells))
    return Genotype(cells=cells, source={"method": "named", "name": name})


def _edges(pairs):
    # Pairs 2k and 2k+1 feed intermediate node k, i.e. our node 2 + k.
    return tuple(
        Edge(source=source, target=INTERMEDIATE_NODES[k // 2], op=op)
        for k, (op, source) in enumerate(pairs)
    )


def _check_name(name):
    if not isinstance(name, str) or name not in NAMES:
        raise GenotypeError(
            f"genotype: name: unknown named genotype {name!r} (expected one of {', '.join(NAMES)})"
        )
