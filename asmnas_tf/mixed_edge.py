"""One supernet edge: all 8 candidate ops and their mixing, in one layer.

A supernet built one Keras layer per op has ~4,000 small weight tensors at
the paper's size, and tracing the optimizer update of each of them dominates
the first training step. Here every trainable weight of an edge (its
convolutions and its attention module T1..T4) lives in ONE flat variable,
sliced in `call`, and the BatchNorm statistics of all its ops in one pair of
variables: ~250 trainable tensors for the whole paper-size supernet.

The maths is the reference op layers' (`op_math.py`, `attention.py`); the
tests check equal outputs and gradients on the same weights.
"""

import itertools
import math

import keras
from keras import ops

from asmnas_tf import attention, op_math
from asmnas_tf.primitives import PRIMITIVES

_register = keras.saving.register_keras_serializable(package="asmnas_tf")

MIXINGS = ("attention", "uniform", "alpha")

# BatchNorm slots of one edge, all over C channels (BN is affine=False in the
# supernet, SPEC §2, so only moving statistics are stored).
_BN_SLOTS = ("max_pool", "avg_pool", "sep3_a", "sep3_b", "sep5_a", "sep5_b", "dil3", "dil5")
_BN_SLOTS_STRIDED = _BN_SLOTS + ("skip",)


def _conv_piece_shapes(channels, stride):
    """(name, shape, fan_in) of every convolution kernel of the edge's ops."""
    c = channels
    pieces = []
    for k in (3, 5):
        pieces += [
            (f"sep{k}_dw1", (k, k, c, 1), k * k),
            (f"sep{k}_pw1", (1, 1, c, c), c),
            (f"sep{k}_dw2", (k, k, c, 1), k * k),
            (f"sep{k}_pw2", (1, 1, c, c), c),
        ]
    for k in (3, 5):
        pieces += [(f"dil{k}_dw", (k, k, c, 1), k * k), (f"dil{k}_pw", (1, 1, c, c), c)]
    if stride == 2:
        pieces += [("skip_even", (1, 1, c, c // 2), c), ("skip_odd", (1, 1, c, c // 2), c)]
    return pieces


@_register
class MixedEdge(keras.layers.Layer):
    """Edge (i, j) of a supernet cell: o_bar(x) = sum_k a_k o_k(x) (eq. 4.2).

    `mixing="attention"`: a from the architecture self-attention module
    (eq. 4.3-4.5); `mixing="uniform"`: fixed a_k = 1/|O| (the plain supernet
    of the timing benchmark); `mixing="alpha"`: a = softmax(alpha), DARTS's
    eq. 3.1, from this edge's row of architecture parameters `alpha` [|O|]
    passed to `call` (they live in `alphas.ArchitectureParameters`, shared
    between cells or not). Returns `(mixed, coefficients [B, |O|])`.
    """

    def __init__(self, channels, stride=1, hidden_units=16, mixing="attention", **kwargs):
        super().__init__(**kwargs)
        if stride not in (1, 2):
            raise ValueError(f"Expected stride 1 or 2. Received: stride={stride}")
        if mixing not in MIXINGS:
            raise ValueError(f"Expected mixing in {MIXINGS}. Received: mixing={mixing!r}")
        if channels < 2 or channels % 2:
            raise ValueError(f"Expected an even channels >= 2. Received: channels={channels}")
        self.channels = channels
        self.stride = stride
        self.hidden_units = hidden_units
        self.mixing = mixing
        self.pieces = _conv_piece_shapes(channels, stride)
        if mixing == "attention":
            self.pieces += attention.attention_param_shapes(len(PRIMITIVES), hidden_units)
        self.bn_slots = _BN_SLOTS_STRIDED if stride == 2 else _BN_SLOTS
        # The stability experiment (paper §5.3.1, Fig. 3) replaces one mixed
        # edge at a time by its selected op. It sets this to an int32
        # tf.Variable before the model is traced: k >= 0 makes the edge output
        # o_k(x) alone (coefficient 1), -1 leaves it mixed. One trace serves
        # every edge of the sweep. Not a weight, not saved.
        self.replacement = None

    def build(self, input_shape):
        if input_shape[-1] != self.channels:
            raise ValueError(
                f"Expected {self.channels} input channels. Received: input_shape={input_shape}"
            )
        size = sum(math.prod(shape) for _, shape, _ in self.pieces)
        self.kernel = self.add_weight(shape=(size,), initializer=self._initializer, name="kernel")
        stats_shape = (len(self.bn_slots), self.channels)
        self.moving_mean = self.add_weight(
            shape=stats_shape, initializer="zeros", trainable=False, autocast=False, name="moving_mean"
        )
        self.moving_variance = self.add_weight(
            shape=stats_shape, initializer="ones", trainable=False, autocast=False, name="moving_variance"
        )

    def _initializer(self, shape, dtype=None):
        # Each piece gets PyTorch's default init for its own fan-in.
        parts = [
            ops.reshape(op_math.torch_uniform(fan_in)(piece_shape, dtype=dtype), (-1,))
            for _, piece_shape, fan_in in self.pieces
        ]
        return ops.concatenate(parts, axis=0)

    def unpack(self, flat):
        """The flat weight vector split into its pieces, by name, in their shapes.

        One split (and one concat in the gradient) instead of a slice per
        piece, whose gradients would each be a full-size scatter.
        """
        sizes = [math.prod(shape) for _, shape, _ in self.pieces]
        parts = ops.split(flat, list(itertools.accumulate(sizes))[:-1])
        return {name: ops.reshape(part, shape) for (name, shape, _), part in zip(self.pieces, parts)}

    def call(self, x, alpha=None, training=None):
        if (alpha is None) != (self.mixing != "alpha"):
            raise ValueError(
                f"Expected an alpha row exactly when mixing='alpha'. "
                f"Received: mixing={self.mixing!r}, alpha={'None' if alpha is None else 'a tensor'}"
            )
        w = self.unpack(ops.cast(self.kernel, self.compute_dtype))
        batch_stats = {}

        def bn(slot, y):
            index = self.bn_slots.index(slot)
            if training:
                mean, variance = op_math.batch_moments(y)
                batch_stats[slot] = (mean, variance)
            else:
                mean, variance = self.moving_mean[index], self.moving_variance[index]
            return op_math.normalize(y, ops.cast(mean, y.dtype), ops.cast(variance, y.dtype))

        def dil_conv(inp, prefix, k, stride, dilation, slot, dw="dw", pw="pw"):
            y = op_math.depthwise_conv(inp, w[f"{prefix}_{dw}"], stride, dilation)
            return bn(slot, op_math.pointwise_conv(y, w[f"{prefix}_{pw}"]))

        s = self.stride
        relu_x = ops.relu(x)  # shared by every conv op of the edge
        outputs = {"zero": None}
        outputs["max_pool_3x3"] = bn("max_pool", op_math.max_pool_3x3(x, s))
        outputs["avg_pool_3x3"] = bn("avg_pool", op_math.avg_pool_3x3(x, s))
        if s == 1:
            outputs["skip_connect"] = x
        else:
            reduced = op_math.factorized_reduce_convs(relu_x, w["skip_even"], w["skip_odd"])
            outputs["skip_connect"] = bn("skip", reduced)
        for k in (3, 5):
            half = dil_conv(relu_x, f"sep{k}", k, s, 1, f"sep{k}_a", "dw1", "pw1")
            outputs[f"sep_conv_{k}x{k}"] = dil_conv(ops.relu(half), f"sep{k}", k, 1, 1, f"sep{k}_b", "dw2", "pw2")
        for k in (3, 5):
            outputs[f"dil_conv_{k}x{k}"] = dil_conv(relu_x, f"dil{k}", k, s, 2, f"dil{k}")
        ys = [outputs[name] for name in PRIMITIVES]

        if training:
            self._update_moving_stats(batch_stats)
        batch = ops.shape(x)[0]
        if self.mixing == "attention":
            coeffs = attention.coefficients(attention.embed(ys), w)
        elif self.mixing == "alpha":
            # eq. 3.1: the same softmax(alpha) for every sample, so selection
            # reads it per sample. In alpha's dtype: float32 variables even
            # under mixed precision (`alphas.py`).
            probabilities = ops.softmax(alpha, axis=-1)
            coeffs = ops.broadcast_to(probabilities[None, :], (batch, len(PRIMITIVES)))
        else:
            coeffs = ops.full((batch, len(PRIMITIVES)), 1.0 / len(PRIMITIVES), dtype="float32")
        if self.replacement is not None:
            coeffs = self._replace(coeffs)
        return attention.weighted_sum(ys, coeffs), coeffs

    def _replace(self, coeffs):
        """One-hot coefficients of op `replacement` where it is >= 0 (see __init__)."""
        k = ops.convert_to_tensor(self.replacement)
        one_hot = ops.one_hot(ops.maximum(k, 0), len(PRIMITIVES), dtype=coeffs.dtype)
        return ops.where(k >= 0, ops.broadcast_to(one_hot[None, :], ops.shape(coeffs)), coeffs)

    def _update_moving_stats(self, batch_stats):
        dtype = self.moving_mean.dtype  # float32, or float64 in a float64 layer
        means = [ops.cast(batch_stats[slot][0], dtype) for slot in self.bn_slots]
        variances = [ops.cast(batch_stats[slot][1], dtype) for slot in self.bn_slots]
        self.moving_mean.assign(op_math.moving_average(self.moving_mean, ops.stack(means)))
        self.moving_variance.assign(op_math.moving_average(self.moving_variance, ops.stack(variances)))

    def compute_output_spec(self, x, alpha=None, training=None):
        out_shape = list(x.shape)
        if self.stride == 2:
            out_shape[1:3] = [None if d is None else -(-d // 2) for d in out_shape[1:3]]
        return (
            keras.KerasTensor(out_shape, dtype=self.compute_dtype),
            keras.KerasTensor((x.shape[0], len(PRIMITIVES)), dtype="float32" if alpha is None else alpha.dtype),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "stride": self.stride,
            "hidden_units": self.hidden_units,
            "mixing": self.mixing,
        }
