"""The candidate operations as Keras layers (DARTS definitions, SPEC §2).

These are the straightforward, one-layer-per-op reference implementations.
Each states its output shape (`compute_output_shape`): without it Keras
traces `call` in a scratch graph for every layer of a functional build
(a quarter of the evaluation network's build).
The evaluation network is built from them; the supernet uses the fused
`MixedEdge`, which is tested against these layers on the same weights.
Every layer is serializable (`get_config`, registered under `asmnas_tf`).
"""

import keras
from keras import ops

from asmnas_tf.layers import op_math
from asmnas_tf.layers.batch_norm import batch_norm as make_batch_norm  # Pool3x3 has a `batch_norm` flag
from asmnas_tf.space.op_table import op_spec
from asmnas_tf.errors import UserError

_register = keras.saving.register_keras_serializable(package="asmnas_tf")


def _strided_shape(input_shape, stride, channels):
    """NHWC shape after a stride-s op with symmetric padding: ceil(size / s)."""
    spatial = [None if d is None else -(-d // stride) for d in input_shape[1:3]]
    return (input_shape[0], *spatial, channels)


def _check_stride(stride):
    if stride not in (1, 2):
        raise UserError(f"Expected stride 1 or 2. Received: stride={stride}")


@_register
class Zero(keras.layers.Layer):
    """`zero`: zeros of the output shape (subsampled at stride 2)."""

    def __init__(self, stride=1, **kwargs):
        super().__init__(**kwargs)
        _check_stride(stride)
        self.stride = stride

    def call(self, x):
        return ops.zeros_like(op_math.subsample(x, self.stride))

    def compute_output_shape(self, input_shape):
        return _strided_shape(input_shape, self.stride, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


@_register
class Identity(keras.layers.Layer):
    """`skip_connect` at stride 1."""

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def call(self, x):
        return x


@_register
class FactorizedReduce(keras.layers.Layer):
    """ReLU, two 1x1 stride-2 convs (second offset by one pixel), concat, BN."""

    def __init__(self, channels, affine=True, **kwargs):
        super().__init__(**kwargs)
        if channels < 2 or channels % 2:
            raise UserError(f"Expected an even channels >= 2. Received: channels={channels}")
        self.channels = channels
        self.affine = affine
        self.bn = make_batch_norm("bn", affine)

    def build(self, input_shape):
        c_in = input_shape[-1]
        half = self.channels // 2
        init = op_math.torch_uniform(c_in)
        self.kernel_even = self.add_weight(shape=(1, 1, c_in, half), initializer=init, name="kernel_even")
        self.kernel_odd = self.add_weight(shape=(1, 1, c_in, half), initializer=init, name="kernel_odd")
        self.bn.build(_strided_shape(input_shape, 2, self.channels))

    def call(self, x, training=None):
        y = op_math.factorized_reduce_convs(ops.relu(x), self.kernel_even, self.kernel_odd)
        return self.bn(y, training=training)

    def compute_output_shape(self, input_shape):
        return _strided_shape(input_shape, 2, self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "affine": self.affine}


@_register
class Pool3x3(keras.layers.Layer):
    """3x3 max or average pool, stride s; optionally followed by BN.

    In the supernet every pool is followed by BatchNorm(affine=False) (DARTS
    MixedOp); in the evaluation network it is not.
    """

    def __init__(self, kind, stride=1, batch_norm=False, affine=False, **kwargs):
        super().__init__(**kwargs)
        if kind not in ("max", "avg"):
            raise UserError(f"Expected kind 'max' or 'avg'. Received: kind={kind!r}")
        _check_stride(stride)
        self.kind = kind
        self.stride = stride
        self.batch_norm = batch_norm
        self.affine = affine
        self.bn = make_batch_norm("bn", affine) if batch_norm else None

    def build(self, input_shape):
        if self.bn is not None:
            self.bn.build(_strided_shape(input_shape, self.stride, input_shape[-1]))

    def call(self, x, training=None):
        pool = op_math.max_pool_3x3 if self.kind == "max" else op_math.avg_pool_3x3
        y = pool(x, self.stride)
        return self.bn(y, training=training) if self.bn is not None else y

    def compute_output_shape(self, input_shape):
        return _strided_shape(input_shape, self.stride, input_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "kind": self.kind,
            "stride": self.stride,
            "batch_norm": self.batch_norm,
            "affine": self.affine,
        }


@_register
class DilConv(keras.layers.Layer):
    """ReLU, depthwise k x k (dilation d, stride s), 1x1 conv, BN.

    With dilation 1 this is one half of a separable convolution.
    """

    def __init__(self, channels, kernel_size, stride=1, dilation=1, affine=True, **kwargs):
        super().__init__(**kwargs)
        _check_stride(stride)
        self.channels = channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.affine = affine
        self.bn = make_batch_norm("bn", affine)

    def build(self, input_shape):
        c_in, k = input_shape[-1], self.kernel_size
        self.depthwise = self.add_weight(
            shape=(k, k, c_in, 1), initializer=op_math.torch_uniform(k * k), name="depthwise"
        )
        self.pointwise = self.add_weight(
            shape=(1, 1, c_in, self.channels), initializer=op_math.torch_uniform(c_in), name="pointwise"
        )
        self.bn.build(_strided_shape(input_shape, self.stride, self.channels))

    def call(self, x, training=None):
        y = op_math.depthwise_conv(ops.relu(x), self.depthwise, self.stride, self.dilation)
        return self.bn(op_math.pointwise_conv(y, self.pointwise), training=training)

    def compute_output_shape(self, input_shape):
        return _strided_shape(input_shape, self.stride, self.channels)

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "dilation": self.dilation,
            "affine": self.affine,
        }


@_register
class SepConv(keras.layers.Layer):
    """Two stacked DilConv(dilation 1): the first strided, C_in -> C_in."""

    def __init__(self, channels, kernel_size, stride=1, affine=True, **kwargs):
        super().__init__(**kwargs)
        _check_stride(stride)
        self.channels = channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.affine = affine
        self.first = None
        self.second = DilConv(channels, kernel_size, 1, 1, affine, name="second")

    def build(self, input_shape):
        self.first = DilConv(input_shape[-1], self.kernel_size, self.stride, 1, self.affine, name="first")
        self.first.build(input_shape)
        self.second.build(_strided_shape(input_shape, self.stride, input_shape[-1]))

    def call(self, x, training=None):
        return self.second(self.first(x, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return _strided_shape(input_shape, self.stride, self.channels)

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "affine": self.affine,
        }


@_register
class ReLUConvBN(keras.layers.Layer):
    """ReLU, 1x1 conv, BN: the preprocessing of a cell's inputs (DARTS)."""

    def __init__(self, channels, affine=True, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.affine = affine
        self.bn = make_batch_norm("bn", affine)

    def build(self, input_shape):
        c_in = input_shape[-1]
        self.kernel = self.add_weight(
            shape=(1, 1, c_in, self.channels), initializer=op_math.torch_uniform(c_in), name="kernel"
        )
        self.bn.build(_strided_shape(input_shape, 1, self.channels))

    def call(self, x, training=None):
        return self.bn(op_math.pointwise_conv(ops.relu(x), self.kernel), training=training)

    def compute_output_shape(self, input_shape):
        return _strided_shape(input_shape, 1, self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "affine": self.affine}


def make_op(op_name, channels, stride, affine, pool_batch_norm=False, name=None):
    """The layer for candidate `op_name` (C -> C channels, stride 1 or 2), from its op-table row."""
    spec = op_spec(op_name, "op_name")
    if spec.kind == "zero":
        return Zero(stride, name=name)
    if spec.kind == "pool":
        return Pool3x3(spec.pool, stride, pool_batch_norm, affine, name=name)
    if spec.kind == "skip":
        return Identity(name=name) if stride == 1 else FactorizedReduce(channels, affine, name=name)
    if spec.kind == "sep_conv":
        return SepConv(channels, spec.kernel_size, stride, affine, name=name)
    return DilConv(channels, spec.kernel_size, stride, spec.dilation, affine, name=name)


def cell_preprocessing(channels, affine, reduction_prev, name):
    """The layers that bring a cell's two inputs to `channels` (DARTS).

    c_{k-1} through a 1x1 ReLU-Conv-BN; c_{k-2} the same, or through a
    FactorizedReduce when the previous cell halved the resolution.
    """
    if reduction_prev:
        pre0 = FactorizedReduce(channels, affine=affine, name=f"{name}_pre0")
    else:
        pre0 = ReLUConvBN(channels, affine=affine, name=f"{name}_pre0")
    return pre0, ReLUConvBN(channels, affine=affine, name=f"{name}_pre1")
