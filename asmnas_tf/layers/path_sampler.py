"""Random search with weight sharing, RSPS (Li & Talwalkar 2019): one path per step.

The supernet's edges mix by one-hot coefficients (`MixedEdge(mixing="path")`)
that this layer outputs per cell, [L, 14, |O|]:

- in training, one op per edge drawn uniformly at every step (all 8 ops,
  zero included, as the argmax rule and `random_genotype` may pick it), the
  same for the whole batch and every replica: a stateless draw from
  (seed, step), where `step` is a non-trainable variable saved with the
  weights, so a resumed run draws the paths the uninterrupted one would;
- in inference, the fixed architecture held in `architecture` [L, 14]
  (set by the RSPS selection to rank its sampled candidates).

An op with coefficient 0 gets an exact zero gradient: each step trains the
weights of one path only (its BatchNorm statistics aside, which every op
updates, as in the supernet).
"""

import keras
import tensorflow as tf

from asmnas_tf.space.search_space import DARTS_SPACE, make_space
from asmnas_tf.errors import UserError


@keras.saving.register_keras_serializable(package="asmnas_tf")
class PathSampler(keras.layers.Layer):
    """`call(images)` returns one-hot coefficients per cell [L, 14, |O|] (see the module)."""

    def __init__(self, num_cells, seed=0, primitives=None, nodes=None, **kwargs):
        super().__init__(**kwargs)
        self.space = make_space(primitives or DARTS_SPACE.primitives, nodes or DARTS_SPACE.nodes)
        if num_cells < 1:
            raise UserError(f"Expected num_cells >= 1. Received: num_cells={num_cells}")
        self.num_cells = num_cells
        self.seed = int(seed)

    def build(self, input_shape):
        self.step = self.add_weight(shape=(), dtype="int32", initializer="zeros", trainable=False,
                                    aggregation="only_first_replica", name="step")
        self.architecture = self.add_weight(shape=(self.num_cells, len(self.space.edges)), dtype="int32",
                                            initializer="zeros", trainable=False, name="architecture")

    def call(self, inputs, training=None):
        if training:
            step = tf.convert_to_tensor(self.step)
            chosen = tf.random.stateless_uniform((self.num_cells, len(self.space.edges)), seed=tf.stack([self.seed, step]),
                                                 minval=0, maxval=len(self.space.primitives), dtype=tf.int32)
            self.step.assign(step + 1)
        else:
            chosen = tf.convert_to_tensor(self.architecture)
        return tf.one_hot(chosen, len(self.space.primitives), dtype=self.variable_dtype)

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor((self.num_cells, len(self.space.edges), len(self.space.primitives)), dtype=self.variable_dtype)

    def get_config(self):
        return {**super().get_config(), "num_cells": self.num_cells, "seed": self.seed,
                "primitives": list(self.space.primitives), "nodes": self.space.nodes}
