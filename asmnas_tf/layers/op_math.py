"""Tensor maths of the candidate operations (SPEC §2), shared by every layer.

The reference op layers (`ops.py`) and the fused mixed edge of the supernet
(`mixed_edge.py`) both call these functions, so the two cannot drift apart.
All tensors are NHWC. Padding is symmetric, as in the PyTorch DARTS code.
TensorFlow's "same" padding is that only at stride 1 (odd windows); at
stride 2 on even sizes it is asymmetric and would shift every strided window
by one pixel, so strided ops pad explicitly or subsample a stride-1 result.
"""

import math

import keras
import tensorflow as tf
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


def subsample(x, stride):
    """Every `stride`-th pixel from the first: output size ceil(H / stride).

    Where H and W are known multiples of the stride, a reshape and a slice
    (each row and column split into stride groups, the first of each kept):
    the slice's gradient is a Pad, where the strided slice's
    (StridedSliceGrad) took 2-6x as long on the development CPU
    (docs/bench-log.md).
    """
    if stride == 1:
        return x
    height, width, channels = x.shape[1:]
    if height is None or width is None or height % stride or width % stride:
        return x[:, ::stride, ::stride, :]
    grouped = tf.reshape(x, [-1, height // stride, stride, width // stride, stride * channels])
    first = tf.slice(grouped, [0, 0, 0, 0, 0], [-1, -1, 1, -1, channels])
    return tf.reshape(first, [-1, height // stride, width // stride, channels])


# The convolutions and pools below are raw TensorFlow ops rather than
# keras.ops: the same maths with fewer graph nodes (padding, dilation and
# counts in the op's attributes instead of extra nodes). A paper-size
# supernet has 210 mixed edges, and its first training step is spent
# tracing and optimising their graph (docs/bench-log.md, "Start-up levers").


def depthwise_conv(x, kernel, stride=1, dilation=1):
    """k x k depthwise convolution, symmetric padding dilation*(k-1)/2.

    Undilated: one node each way, the padding an attribute: "SAME" at
    stride 1 (symmetric for an odd k; with "EXPLICIT" the backward ran on
    TensorFlow's own kernels instead of oneDNN's, twice the time in the
    evaluation network, docs/bench-log.md), explicit at
    stride 2, where SAME would pad the bottom and right only. Dilated:
    TensorFlow's CPU backprop kernels ignore a dilation attribute, so
    `tf.nn.depthwise_conv2d`'s SpaceToBatch form, whose SAME padding is the
    symmetric one at stride 1. TensorFlow refuses stride > 1 together with
    dilation > 1: compute at stride 1 and subsample, which is exact for
    symmetric padding (SPEC §2). From `WIDE_KERNEL` on, and for dilated
    kernels where `_native_dilation` allows one op forward, the stride-1
    convolution has a hand-written gradient (`_depthwise_by_forwards`).
    """
    wide = kernel.shape[0] >= WIDE_KERNEL and (stride == 1 or dilation > 1) and _cpu_host()
    if wide or (dilation > 1 and _native_dilation(x.dtype)):
        return subsample(_depthwise_by_forwards(x, tf.convert_to_tensor(kernel), dilation), stride)
    if dilation > 1 or stride == 1:
        return subsample(_same_depthwise(x, kernel, dilation), stride)
    pad = (kernel.shape[0] - 1) // 2
    return tf.raw_ops.DepthwiseConv2dNative(
        input=x,
        filter=kernel,
        strides=[1, stride, stride, 1],
        padding="EXPLICIT",
        explicit_paddings=[0, 0, pad, pad, pad, pad, 0, 0],
    )


# From this kernel size on, the stride-1 depthwise convolution takes its
# gradient from `_depthwise_by_forwards` on a CPU host: oneDNN's own filter
# gradient of a 5 x 5 depthwise kernel ran 3-7x its forward on the
# development CPUs (3 x 3: about equal), docs/bench-log.md.
# Not measured on a GPU, where the step keeps TensorFlow's own gradient.
WIDE_KERNEL = 5
_NATIVE_DILATION = {}  # dtype name -> whether this host's DepthwiseConv2dNative takes a dilation


def _cpu_host():
    """No GPU visible: the step runs on the CPU, where the levers below were measured."""
    return not tf.config.list_physical_devices("GPU")


def _native_dilation(dtype):
    """Whether a dilated depthwise convolution can be one DepthwiseConv2dNative here.

    oneDNN's CPU kernel (float32, bfloat16) takes the dilation attribute and
    ran 2.5-3x faster than `tf.nn.depthwise_conv2d`'s SpaceToBatch form;
    TensorFlow's own kernels (float16, float64, oneDNN off) and its backprop
    kernels refuse or ignore it, so it is used only forward, under
    `_depthwise_by_forwards`'s gradient. Probed once per dtype on a tiny
    tensor; never with a GPU visible (the step would run there).
    """
    name = tf.as_dtype(dtype).name
    if name not in _NATIVE_DILATION:
        supported = False
        if _cpu_host():
            with tf.init_scope(), tf.device("/CPU:0"):
                try:
                    tf.raw_ops.DepthwiseConv2dNative(
                        input=tf.zeros([1, 5, 5, 1], dtype), filter=tf.zeros([3, 3, 1, 1], dtype),
                        strides=[1, 1, 1, 1], padding="SAME", dilations=[1, 2, 2, 1])
                    supported = True
                except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.NotFoundError):
                    pass
        _NATIVE_DILATION[name] = supported
    return _NATIVE_DILATION[name]


def _same_depthwise(x, kernel, dilation):
    """Stride-1 depthwise convolution, symmetric padding dilation * (k - 1) / 2 (SAME at stride 1).

    Dilated: one op where `_native_dilation` allows (its gradient must then
    be `_depthwise_by_forwards`'s), else SpaceToBatch form.
    """
    if dilation > 1 and not _native_dilation(x.dtype):
        return tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME", dilations=[dilation, dilation])
    return tf.raw_ops.DepthwiseConv2dNative(
        input=x, filter=kernel, strides=[1, 1, 1, 1], padding="SAME", dilations=[1, dilation, dilation, 1])


def _depthwise_by_forwards(x, kernel, dilation):
    """`_same_depthwise` whose gradient is two forward depthwise convolutions.

    Input: the same convolution of the output gradient with the kernel
    flipped in H and W (the adjoint of a stride-1 correlation with symmetric
    zero padding). Kernel: `depthwise_kernel_gradient`.
    """

    @tf.custom_gradient
    def convolve(x, kernel):
        def gradient(g):
            grad_x = _same_depthwise(g, tf.reverse(kernel, [0, 1]), dilation)
            return grad_x, depthwise_kernel_gradient(x, g, kernel.shape[0], dilation)

        return _same_depthwise(x, kernel, dilation), gradient

    return convolve(x, kernel)


def depthwise_kernel_gradient(x, g, size, dilation):
    """sum_{b,h,w} x_pad[b, h + d i, w + d j, c] g[b, h, w, c]: the [k, k, C, 1] gradient of `_same_depthwise`'s kernel.

    One forward depthwise convolution: x's images, each padded by p rows
    above and below, stacked into one tall image, correlated at stride d
    with g as the filter (g's images stacked the same way, 2p zero rows
    under each, so that no window reads across two images); the
    convolution's own padding adds p columns each side and 2p rows at the
    bottom, so that its output is k x k: the kernel's gradient.
    """
    pad = dilation * (size - 1) // 2
    width = x.shape[2] if x.shape[2] is not None else tf.shape(x)[2]
    channels = x.shape[3]
    # After g exists: x's padded copy depends on x alone, so the executor
    # would otherwise make it during the forward and hold it to the backward
    # (+0.3 GB at the paper's size).
    with tf.control_dependencies([g]):
        x = tf.identity(x)
    tall = tf.reshape(tf.pad(x, [[0, 0], [pad, pad], [0, 0], [0, 0]]), [1, -1, width, channels])
    taps = tf.reshape(tf.pad(g, [[0, 0], [0, 2 * pad], [0, 0], [0, 0]]), [-1, width, channels, 1])
    grad = tf.raw_ops.DepthwiseConv2dNative(
        input=tall, filter=taps, strides=[1, dilation, dilation, 1], padding="EXPLICIT",
        explicit_paddings=[0, 0, 0, 2 * pad, pad, pad, 0, 0])
    return tf.reshape(grad, [size, size, channels, 1])


def pointwise_conv(x, kernel, stride=1, padding="VALID"):
    """1x1 convolution, kernel [1, 1, C_in, C_out], no bias (DARTS).

    At stride 2 it reads every other pixel from the first (a subsampled 1x1).
    """
    return tf.nn.conv2d(x, kernel, stride, padding)


def max_pool_3x3(x, stride):
    """3x3 max pool, padding 1 that never wins (PyTorch's -inf padding).

    TensorFlow's SAME pooling at stride 1 is that padding; its SAME at
    stride 2 would pad asymmetrically on even sizes, so stride 2 subsamples
    the stride-1 result (PyTorch's stride-2 windows are the stride-1 windows
    centred on the even pixels).
    """
    return subsample(tf.nn.max_pool2d(x, 3, 1, "SAME"), stride)


def avg_pool_3x3(x, stride):
    """3x3 average that excludes the padding (count_include_pad=False).

    TensorFlow's SAME average pooling divides by the number of valid pixels
    in the window; stride 2 as `max_pool_3x3`.
    """
    return subsample(tf.nn.avg_pool2d(x, 3, 1, "SAME"), stride)


def factorized_reduce_halves(x, kernel_even, kernel_odd):
    """The two 1x1 stride-2 convolutions of FactorizedReduce, [even, odd].

    The second one reads the grid offset by one pixel. DARTS slices x[1:, 1:],
    which on odd sizes gives one row fewer than the first path; padding the
    shifted input back to H x W (explicitly, in the convolution) keeps both
    at ceil(H/2) and is identical to DARTS on even sizes (the only ones DARTS
    supports).
    """
    even = pointwise_conv(x, kernel_even, 2)
    # A slice, not x[:, 1:, 1:]: its gradient is a Pad, the strided slice's a slower StridedSliceGrad.
    shifted = tf.slice(x, [0, 1, 1, 0], [-1, -1, -1, -1])
    odd = pointwise_conv(shifted, kernel_odd, 2, [[0, 0], [0, 1], [0, 1], [0, 0]])
    return [even, odd]


def factorized_reduce_convs(x, kernel_even, kernel_odd):
    """`factorized_reduce_halves`, concatenated on the channel axis."""
    return tf.concat(factorized_reduce_halves(x, kernel_even, kernel_odd), axis=-1)


def batch_moments(x):
    """Biased per-channel mean and variance over N, H, W (as Keras's BN)."""
    return ops.moments(x, axes=[0, 1, 2])


def normalize(x, mean, variance, gamma=None, beta=None):
    return ops.batch_normalization(
        x, mean, variance, axis=-1, offset=beta, scale=gamma, epsilon=BN_EPSILON
    )


def moving_average(moving, batch_value):
    return moving * BN_MOMENTUM + batch_value * (1.0 - BN_MOMENTUM)
