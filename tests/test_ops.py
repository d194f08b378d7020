"""Candidate operations (SPEC §2): shapes, exact values, DARTS weight counts."""

import keras
import numpy as np
import pytest

from asmnas_tf.layers import ops
from asmnas_tf.space.primitives import PRIMITIVES

C = 16


def _call(layer, x, training=False):
    return np.asarray(layer(x, training=training))


@pytest.mark.parametrize("size", [7, 8])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", PRIMITIVES)
def test_output_shape_odd_and_even(name, stride, size):
    x = np.random.default_rng(0).normal(size=(2, size, size, C)).astype("float32")
    layer = ops.make_op(name, C, stride, affine=False, pool_batch_norm=True)
    out = -(-size // stride)  # ceil(size / stride), as PyTorch with symmetric padding
    assert _call(layer, x, training=True).shape == (2, out, out, C)



@pytest.mark.parametrize("size", [7, 8])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", PRIMITIVES)
def test_stated_output_shape_is_what_call_returns(name, stride, size):
    # Keras builds a functional graph from compute_output_shape without calling the layer: it must not lie.
    x = np.random.default_rng(0).normal(size=(2, size, size, C)).astype("float32")
    layer = ops.make_op(name, C, stride, affine=True)
    assert tuple(layer.compute_output_shape((None, size, size, C))) == (None, *_call(layer, x).shape[1:])
    symbolic = layer(keras.Input((size, size, C)))
    assert tuple(symbolic.shape) == (None, *_call(layer, x, training=True).shape[1:])


@pytest.mark.parametrize("reduction_prev", [False, True])
def test_cell_preprocessing_states_its_output_shape(reduction_prev):
    layers = ops.cell_preprocessing(C, True, reduction_prev, "pre")
    for layer, size in zip(layers, (16 if reduction_prev else 8, 8)):
        x = np.random.default_rng(1).normal(size=(2, size, size, 12)).astype("float32")
        assert tuple(layer.compute_output_shape((None, size, size, 12))) == (None, *_call(layer, x).shape[1:])

def test_zero_is_exactly_zero():
    x = np.random.default_rng(1).normal(size=(3, 9, 9, C)).astype("float32") * 100
    assert np.array_equal(_call(ops.make_op("zero", C, 1, False), x), np.zeros((3, 9, 9, C)))
    assert np.array_equal(_call(ops.make_op("zero", C, 2, False), x), np.zeros((3, 5, 5, C)))


def test_skip_connect_stride_1_is_identity():
    x = np.random.default_rng(2).normal(size=(2, 6, 6, C)).astype("float32")
    assert np.array_equal(_call(ops.make_op("skip_connect", C, 1, True), x), x)


def _trainable_count(name, stride, affine):
    layer = ops.make_op(name, C, stride, affine=affine, pool_batch_norm=True)
    layer.build((None, 8, 8, C))
    return sum(int(np.prod(w.shape)) for w in layer.trainable_weights)


def test_trainable_weight_counts_match_darts_definitions():
    # By hand, C = 16, convolutions without bias (DARTS operations.py):
    # sep_conv_k: 2 x (depthwise k*k*C + pointwise C*C); dil_conv_k: one of them;
    # FactorizedReduce: two 1x1 convs C -> C/2. BN affine adds 2C per BN.
    sep3 = 2 * (9 * C + C * C)
    sep5 = 2 * (25 * C + C * C)
    dil3 = 9 * C + C * C
    dil5 = 25 * C + C * C
    reduce = 2 * C * (C // 2)
    assert (sep3, sep5, dil3, dil5, reduce) == (800, 1312, 400, 656, 256)
    expected_search = {
        "zero": 0, "max_pool_3x3": 0, "avg_pool_3x3": 0, "skip_connect": 0,
        "sep_conv_3x3": sep3, "sep_conv_5x5": sep5, "dil_conv_3x3": dil3, "dil_conv_5x5": dil5,
    }
    for name, count in expected_search.items():
        assert _trainable_count(name, 1, affine=False) == count, name
    assert _trainable_count("skip_connect", 2, affine=False) == reduce
    # Affine BN (evaluation network): +2C per BN; sep_conv has two BNs.
    assert _trainable_count("sep_conv_3x3", 1, affine=True) == sep3 + 2 * 2 * C
    assert _trainable_count("dil_conv_5x5", 2, affine=True) == dil5 + 2 * C
    assert _trainable_count("skip_connect", 2, affine=True) == reduce + 2 * C


def test_avg_pool_excludes_padding_and_max_pool_ignores_it():
    x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1) - 100.0  # all negative
    avg = _call(ops.Pool3x3("avg", 1), x)[0, :, :, 0]
    mx = _call(ops.Pool3x3("max", 1), x)[0, :, :, 0]
    grid = x[0, :, :, 0]
    assert np.isclose(avg[0, 0], grid[:2, :2].mean())  # 4 real pixels, not 9
    assert np.isclose(avg[1, 1], grid[:3, :3].mean())
    assert mx[0, 0] == grid[:2, :2].max()  # padding never wins, even below 0
    # Stride 2 windows start at -1, as PyTorch's padding=1 (not TF's "same").
    avg2 = _call(ops.Pool3x3("avg", 2), x)[0, :, :, 0]
    assert np.isclose(avg2[1, 1], grid[1:4, 1:4].mean())


def test_dilated_conv_at_stride_2_equals_subsampled_stride_1():
    x = np.random.default_rng(3).normal(size=(2, 9, 9, C)).astype("float32")
    strided = ops.DilConv(C, 5, stride=2, dilation=2, affine=False)
    dense = ops.DilConv(C, 5, stride=1, dilation=2, affine=False)
    strided.build(x.shape)
    dense.build(x.shape)
    dense.set_weights(strided.get_weights())
    # Inference mode: BN uses the same (initial) statistics in both.
    np.testing.assert_allclose(_call(strided, x), _call(dense, x)[:, ::2, ::2], atol=1e-5)


@pytest.mark.parametrize("name", PRIMITIVES)
def test_op_layers_serialize(name):
    layer = ops.make_op(name, C, 2, affine=True, name=f"op_{name}")
    x = np.random.default_rng(4).normal(size=(2, 8, 8, C)).astype("float32")
    expected = _call(layer, x)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    if not clone.built:
        clone.build(x.shape)
    if layer.weights:
        clone.set_weights(layer.get_weights())
    assert clone.get_config() == layer.get_config()
    np.testing.assert_array_equal(_call(clone, x), expected)


def _numpy_depthwise(x, kernel, stride, dilation=1):
    """Depthwise k x k convolution with symmetric zero padding d (k - 1) / 2, as PyTorch's groups=C conv."""
    k = kernel.shape[0]
    pad = dilation * (k - 1) // 2
    padded = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    h, w = x.shape[1], x.shape[2]
    out = np.zeros(x.shape, np.float64)
    for i in range(k):
        for j in range(k):
            out += padded[:, i * dilation:i * dilation + h, j * dilation:j * dilation + w, :] * kernel[i, j, :, 0]
    return out[:, ::stride, ::stride, :]


def _numpy_depthwise_kernel_gradient(x, upstream, size, dilation):
    """d sum(upstream * conv(x, kernel)) / d kernel at stride 1: sum_{b,h,w} x_pad[b, h + d i, w + d j] upstream[b, h, w]."""
    pad = dilation * (size - 1) // 2
    padded = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    h, w = x.shape[1], x.shape[2]
    grad = np.zeros((size, size, x.shape[3], 1))
    for i in range(size):
        for j in range(size):
            window = padded[:, i * dilation:i * dilation + h, j * dilation:j * dilation + w, :]
            grad[i, j, :, 0] = (window * upstream).sum(axis=(0, 1, 2))
    return grad


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_conv_gradients_equal_numpy_and_autodiff(kernel_size, dilation, stride):
    """The 5 x 5 kernels' hand-written gradient (op_math._wide_depthwise) and the 3 x 3 ones' native one:
    the kernel gradient equal to numpy's sum of products in float64 (to 1e-10, images 9 x 6, so a
    window that crossed two stacked images or confused H and W would show), and both gradients equal
    to TensorFlow's autodiff of tf.nn.depthwise_conv2d in float32 to 1e-5, with an unknown batch."""
    import tensorflow as tf

    from asmnas_tf.layers import op_math

    rng = np.random.default_rng(kernel_size * 100 + dilation * 10 + stride)
    x = rng.normal(size=(3, 9, 6, 4))
    kernel = rng.normal(size=(kernel_size, kernel_size, 4, 1))
    expected = _numpy_depthwise(x, kernel, stride, dilation)
    upstream = rng.normal(size=expected.shape)

    def gradients(conv, x_value, kernel_value, upstream_value):
        with tf.GradientTape() as tape:
            tape.watch([x_value, kernel_value])
            y = conv(x_value, kernel_value)
        return (y, *tape.gradient(y, [x_value, kernel_value], output_gradients=upstream_value))

    y, _, grad_kernel = gradients(lambda a, b: op_math.depthwise_conv(a, b, stride, dilation),
                                  tf.constant(x), tf.constant(kernel), tf.constant(upstream))
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-10)
    dense_upstream = np.zeros(x.shape)  # a stride-2 output is the stride-1 one subsampled
    dense_upstream[:, ::stride, ::stride, :] = upstream
    np.testing.assert_allclose(grad_kernel.numpy(),
                               _numpy_depthwise_kernel_gradient(x, dense_upstream, kernel_size, dilation),
                               rtol=1e-10, atol=1e-10)

    def native(a, b):
        dense = tf.nn.depthwise_conv2d(a, b, [1, 1, 1, 1], "SAME", dilations=[dilation, dilation])
        return dense[:, ::stride, ::stride, :]

    x32, k32, up32 = (tf.constant(v, tf.float32) for v in (x, kernel, upstream))
    ours = tf.function(
        lambda a, b, g: gradients(lambda u, v: op_math.depthwise_conv(u, v, stride, dilation), a, b, g),
        input_signature=[tf.TensorSpec((None, 9, 6, 4)), tf.TensorSpec(k32.shape), tf.TensorSpec((None, *up32.shape[1:]))],
    )(x32, k32, up32)
    for got, want in zip(ours, gradients(native, x32, k32, up32)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [7, 8])
def test_depthwise_conv_pads_symmetrically_forward_and_backward(kernel_size, stride, size):
    """op_math.depthwise_conv (SAME at stride 1, explicit at 2) against numpy, and its gradients
    against TensorFlow's explicitly padded kernel: the same numbers whichever padding attribute it uses."""
    import tensorflow as tf

    from asmnas_tf.layers import op_math

    rng = np.random.default_rng(kernel_size * 10 + stride + size)
    x = rng.normal(size=(2, size, size, 3))
    kernel = rng.normal(size=(kernel_size, kernel_size, 3, 1))
    np.testing.assert_allclose(op_math.depthwise_conv(tf.constant(x), tf.constant(kernel), stride).numpy(),
                               _numpy_depthwise(x, kernel, stride), rtol=1e-10, atol=1e-10)

    pad = (kernel_size - 1) // 2
    x32, k32 = tf.constant(x, tf.float32), tf.constant(kernel, tf.float32)
    upstream = tf.constant(rng.normal(size=_numpy_depthwise(x, kernel, stride).shape), tf.float32)

    def gradients(conv):
        with tf.GradientTape() as tape:
            tape.watch([x32, k32])
            y = conv(x32, k32)
        return tape.gradient(y, [x32, k32], output_gradients=upstream)

    ours = gradients(lambda a, b: op_math.depthwise_conv(a, b, stride))
    explicit = gradients(lambda a, b: tf.raw_ops.DepthwiseConv2dNative(
        input=a, filter=b, strides=[1, stride, stride, 1], padding="EXPLICIT",
        explicit_paddings=[0, 0, pad, pad, pad, pad, 0, 0]))
    for got, want in zip(ours, explicit):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(8, 6), (7, 7), (8, 5)])
def test_subsample_values_and_gradient(size):
    """op_math.subsample at stride 2 (a reshape and a slice on even sizes, a strided slice otherwise):
    every other pixel from the first, and the gradient the upstream one at those pixels, 0 elsewhere."""
    import tensorflow as tf

    from asmnas_tf.layers import op_math

    rng = np.random.default_rng(sum(size))
    x = tf.constant(rng.normal(size=(2, *size, 3)), tf.float32)
    upstream = rng.normal(size=(2, -(-size[0] // 2), -(-size[1] // 2), 3)).astype("float32")
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = op_math.subsample(x, 2)
    np.testing.assert_array_equal(y.numpy(), x.numpy()[:, ::2, ::2, :])
    expected = np.zeros(x.shape, np.float32)
    expected[:, ::2, ::2, :] = upstream
    np.testing.assert_array_equal(tape.gradient(y, x, output_gradients=tf.constant(upstream)).numpy(), expected)


def test_dilated_depthwise_conv_is_one_op_forward_where_the_kernel_takes_a_dilation():
    """With oneDNN (float32), a dilated depthwise convolution and its gradient contain no SpaceToBatch:
    one dilated DepthwiseConv2dNative forward (its values: the numpy and autodiff tests above);
    without it (float64) the SpaceToBatch form, whose kernels TensorFlow has for every dtype."""
    import tensorflow as tf

    from asmnas_tf.layers import op_math

    def op_types(dtype):
        x, kernel = tf.zeros([2, 8, 8, 3], dtype), tf.zeros([3, 3, 3, 1], dtype)

        def step(a, b):
            with tf.GradientTape() as tape:
                tape.watch([a, b])
                y = op_math.depthwise_conv(a, b, 1, 2)
            return tape.gradient(y, [a, b])

        graph = tf.function(step).get_concrete_function(x, kernel).graph
        return {node.op for node in graph.as_graph_def().node} | {
            node.op for function in graph.as_graph_def().library.function for node in function.node_def}

    assert "SpaceToBatchND" in op_types(tf.float64)
    if op_math._native_dilation(tf.float32):
        assert "SpaceToBatchND" not in op_types(tf.float32)
