"""DARTS's architecture parameters alpha (paper §3, eq. 3.1).

One row alpha_{i,j} in R^|O| per edge; a mixed edge weights its ops by
softmax(alpha_{i,j}) (`MixedEdge(mixing="alpha")`). Two ways to share them:

- `sharing="darts"` (DARTS): two variables, `alpha_normal` [14, |O|] and
  `alpha_reduce` [14, |O|], shared by all normal / all reduction cells, so
  the search yields one normal and one reduction cell;
- `sharing="per_cell"`: one variable `alpha` [L, 14, |O|], a row per edge of
  every cell, so that all L cells can differ, as ASM-NAS's (SPEC §3).

Either way the layer outputs alpha per cell, [L, 14, |O|]: the supernet
slices its rows without knowing how they are shared. Initialised
1e-3 * N(0, 1), as DARTS.
"""

import keras
from keras import ops

from asmnas_tf.space.primitives import reduction_indices
from asmnas_tf.space.search_space import DARTS_SPACE, make_space
from asmnas_tf.errors import UserError

SHARINGS = ("darts", "per_cell")
INIT_STDDEV = 1e-3


@keras.saving.register_keras_serializable(package="asmnas_tf")
class ArchitectureParameters(keras.layers.Layer):
    """Holds the alpha variables; `call(images)` returns alpha per cell [L, 14, |O|].

    The input only anchors the layer in the functional graph; the output
    does not depend on it. The variables keep the variable dtype (float32
    under mixed precision: the softmax of eq. 3.1 runs in float32).
    """

    def __init__(self, num_cells, sharing="darts", primitives=None, nodes=None, **kwargs):
        super().__init__(**kwargs)
        self.space = make_space(primitives or DARTS_SPACE.primitives, nodes or DARTS_SPACE.nodes)
        if num_cells < 1:
            raise UserError(f"Expected num_cells >= 1. Received: num_cells={num_cells}")
        if sharing not in SHARINGS:
            raise UserError(f"Expected sharing in {SHARINGS}. Received: sharing={sharing!r}")
        self.num_cells = num_cells
        self.sharing = sharing

    def build(self, input_shape):
        row_shape = (len(self.space.edges), len(self.space.primitives))

        def add(name, shape):
            return self.add_weight(
                shape=shape,
                initializer=keras.initializers.RandomNormal(stddev=INIT_STDDEV),
                autocast=False,
                name=name,
            )

        if self.sharing == "darts":
            self.alpha_normal = add("alpha_normal", row_shape)
            self.alpha_reduce = add("alpha_reduce", row_shape)
        else:
            self.alpha = add("alpha", (self.num_cells,) + row_shape)

    def call(self, inputs):
        # `.value`: the variable's value, or the substitute in a stateless call.
        if self.sharing == "per_cell":
            return self.alpha.value
        reductions = reduction_indices(self.num_cells)
        normal, reduce = self.alpha_normal.value, self.alpha_reduce.value
        return ops.stack([reduce if index in reductions else normal for index in range(self.num_cells)])

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((self.num_cells, len(self.space.edges), len(self.space.primitives)), dtype=self.variable_dtype)

    def get_config(self):
        return {**super().get_config(), "num_cells": self.num_cells, "sharing": self.sharing,
                "primitives": list(self.space.primitives), "nodes": self.space.nodes}
