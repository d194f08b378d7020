"""Drop-path for the evaluation network, and its DARTS schedule (SPEC §6).

DARTS (`utils.drop_path`) drops a whole edge output per sample: with
probability p the sample's tensor becomes 0, otherwise it is divided by
1 - p. The probability grows linearly with the epoch,
`drop_prob * epoch / epochs` (epoch counted from 0), so the first epoch
trains without it. Edges whose op is the identity are never dropped.

The current probability lives in a non-trainable scalar variable of each
`DropPath` layer, so that the compiled train step reads the value in force
instead of a constant frozen at trace time; `DropPathSchedule` sets it at the
start of every epoch. At inference the layer is the identity.
"""

import keras
import numpy as np
from keras import ops
from asmnas_tf.errors import UserError


@keras.saving.register_keras_serializable(package="asmnas_tf")
class DropPath(keras.layers.Layer):
    """Per-sample drop of the input (training only), rate read from a variable."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        self.rate = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="rate"
        )

    def compute_output_shape(self, input_shape):  # no scratch trace of `call` at build (ops.py)
        return tuple(input_shape)

    def call(self, x, training=None):
        if not training:
            return x
        keep = 1.0 - ops.cast(self.rate, x.dtype)
        noise = keras.random.uniform((ops.shape(x)[0], 1, 1, 1), seed=self.seed_generator, dtype=x.dtype)
        # floor(keep + U[0, 1)) is 1 with probability keep (DARTS's bernoulli_).
        mask = ops.floor(keep + noise)
        # One pass over x each way: the [B, 1, 1, 1] scale first (DARTS divides
        # x by keep, then multiplies by the mask: two passes, and a division's
        # gradient to trace).
        return x * (mask / keep)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}

    # The random stream's position is saved with the weights (Keras keeps a
    # SeedGenerator's state out of them), so that a run resumed from a saved
    # state draws the masks an uninterrupted run would (`train_loop.py`).
    def save_own_variables(self, store):
        super().save_own_variables(store)
        store["seed_state"] = np.asarray(self.seed_generator.state)

    def load_own_variables(self, store):
        self.rate.assign(store["0"])
        if "seed_state" in store.keys():  # files written before the state was saved lack it
            self.seed_generator.state.assign(np.asarray(store["seed_state"]))


def drop_path_layers(model):
    """Every DropPath layer of `model`, nested ones included."""
    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, DropPath)]


def set_drop_path_rate(model, rate):
    if not 0.0 <= rate < 1.0:
        raise UserError(f"Expected 0 <= drop-path rate < 1. Received: rate={rate}")
    for layer in drop_path_layers(model):
        layer.rate.assign(rate)


class DropPathSchedule(keras.callbacks.Callback):
    """rate = drop_prob * epoch / epochs at the start of each epoch (DARTS)."""

    def __init__(self, drop_prob, epochs):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0 or epochs < 1:
            raise UserError(
                f"Expected 0 <= drop_prob < 1 and epochs >= 1. Received: drop_prob={drop_prob}, epochs={epochs}"
            )
        self.drop_prob = drop_prob
        self.epochs = epochs

    def rate_at(self, epoch):
        return self.drop_prob * epoch / self.epochs

    def on_epoch_begin(self, epoch, logs=None):
        set_drop_path_rate(self.model, self.rate_at(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["drop_path_rate"] = self.rate_at(epoch)
