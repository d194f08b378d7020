"""Tensor maths of the candidate operations (SPEC §2), shared by every layer.

The reference op layers (`ops.py`) and the fused mixed edge of the supernet
(`mixed_edge.py`) both call these functions, so the two cannot drift apart.
All tensors are NHWC. Padding is explicit and symmetric, as in the PyTorch
DARTS code: TensorFlow's "same" padding is asymmetric at stride 2 and would
shift every strided window by one pixel.
"""

import math

import keras
from keras import ops

# BatchNorm as in PyTorch (momentum 0.1 there, 0.9 in Keras's convention).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def torch_uniform(fan_in):
    """PyTorch's default conv/linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    For a depthwise kernel fan_in is k*k (one input channel per group), which
    Keras's VarianceScaling would get wrong (it counts all channels).
    """
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def pad_spatial(x, pad, value=0.0):
    if pad == 0:
        return x
    return ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], constant_values=value)


def subsample(x, stride):
    """Every `stride`-th pixel from the first: output size ceil(H / stride)."""
    if stride == 1:
        return x
    return x[:, ::stride, ::stride, :]


def depthwise_conv(x, kernel, stride=1, dilation=1):
    """k x k depthwise convolution, symmetric padding dilation*(k-1)/2.

    TensorFlow refuses stride > 1 together with dilation > 1: compute at
    stride 1 and subsample, which is exact for symmetric padding (SPEC §2).
    """
    pad = dilation * (kernel.shape[0] - 1) // 2
    x = pad_spatial(x, pad)
    if dilation > 1:
        y = ops.depthwise_conv(x, kernel, strides=1, padding="valid", dilation_rate=dilation)
        return subsample(y, stride)
    return ops.depthwise_conv(x, kernel, strides=stride, padding="valid")


def pointwise_conv(x, kernel):
    """1x1 convolution, kernel [1, 1, C_in, C_out], no bias (DARTS)."""
    return ops.conv(x, kernel, strides=1, padding="valid")


def max_pool_3x3(x, stride):
    # Padding with -inf makes the padded pixels never win, as in PyTorch.
    x = pad_spatial(x, 1, value=-math.inf)
    return ops.max_pool(x, pool_size=3, strides=stride, padding="valid")


def avg_pool_3x3(x, stride):
    """3x3 average that excludes the padding (count_include_pad=False)."""
    sums = ops.average_pool(pad_spatial(x, 1), pool_size=3, strides=stride, padding="valid")
    ones = ops.ones_like(x[:1, :, :, :1])
    counts = ops.average_pool(pad_spatial(ones, 1), pool_size=3, strides=stride, padding="valid")
    return sums / counts


def factorized_reduce_convs(x, kernel_even, kernel_odd):
    """The two 1x1 stride-2 convolutions of FactorizedReduce, concatenated.

    The second one reads the grid offset by one pixel. DARTS slices x[1:, 1:],
    which on odd sizes gives one row fewer than the first path; padding the
    shifted input back to H x W keeps both at ceil(H/2) and is identical to
    DARTS on even sizes (the only ones DARTS supports).
    """
    shifted = ops.pad(x[:, 1:, 1:, :], [[0, 0], [0, 1], [0, 1], [0, 0]])
    even = pointwise_conv(subsample(x, 2), kernel_even)
    odd = pointwise_conv(subsample(shifted, 2), kernel_odd)
    return ops.concatenate([even, odd], axis=-1)


def batch_moments(x):
    """Biased per-channel mean and variance over N, H, W (as Keras's BN)."""
    return ops.moments(x, axes=[0, 1, 2])


def normalize(x, mean, variance, gamma=None, beta=None):
    return ops.batch_normalization(
        x, mean, variance, axis=-1, offset=beta, scale=gamma, epsilon=BN_EPSILON
    )


def moving_average(moving, batch_value):
    return moving * BN_MOMENTUM + batch_value * (1.0 - BN_MOMENTUM)
