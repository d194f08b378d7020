"""FusedBatchNorm = Keras's BatchNormalization: outputs, gradients, moving statistics."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from asmnas_tf.layers import op_math
from asmnas_tf.layers.batch_norm import FusedBatchNorm, batch_norm


def _pair(affine, momentum=op_math.BN_MOMENTUM):
    kwargs = dict(momentum=momentum, epsilon=op_math.BN_EPSILON, center=affine, scale=affine)
    keras_bn, fused = keras.layers.BatchNormalization(**kwargs), FusedBatchNorm(**kwargs)
    rng = np.random.default_rng(0)
    for layer in (keras_bn, fused):
        layer.build((None, 5, 6, 3))
    for a, b in zip(keras_bn.weights, fused.weights):
        value = rng.uniform(0.5, 1.5, a.shape).astype("float32")
        a.assign(value)
        b.assign(value)
    return keras_bn, fused


@pytest.mark.parametrize("affine", [True, False])
def test_training_outputs_gradients_and_moving_statistics_match_keras(affine):
    keras_bn, fused = _pair(affine, momentum=0.7)
    x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, (4, 5, 6, 3)).astype("float32"))
    upstream = tf.constant(np.random.default_rng(2).normal(size=(4, 5, 6, 3)).astype("float32"))
    initial = [w.numpy() for w in fused.non_trainable_weights]
    results = []
    for layer in (keras_bn, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * upstream)
        grads = tape.gradient(loss, [x] + [w.value for w in layer.trainable_weights])
        results.append((y.numpy(), [g.numpy() for g in grads], [w.numpy() for w in layer.non_trainable_weights]))
    (y_k, g_k, stats_k), (y_f, g_f, stats_f) = results
    np.testing.assert_allclose(y_f, y_k, rtol=1e-5, atol=1e-5)
    assert len(g_f) == len(g_k) == (3 if affine else 1)
    for a, b in zip(g_f, g_k):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # moving = 0.7 * moving + 0.3 * batch statistic, the variance biased (Keras's).
    batch = x.numpy().reshape(-1, 3)
    expected = [0.7 * initial[0] + 0.3 * batch.mean(0), 0.7 * initial[1] + 0.3 * batch.var(0)]
    for got, keras_value, numpy_value in zip(stats_f, stats_k, expected):
        np.testing.assert_allclose(got, keras_value, rtol=1e-5)
        np.testing.assert_allclose(got, numpy_value, rtol=1e-5)

@pytest.mark.parametrize("batch", [None, 4], ids=["unknown_batch", "static_batch"])
def test_moving_variance_is_biased_whether_or_not_the_batch_size_is_known(batch):
    # (n - 1) / n from the shape in the graph (unknown batch) or as a number (static): the same statistic.
    _, fused = _pair(True, momentum=0.6)
    initial = fused.moving_variance.numpy()
    x = np.random.default_rng(5).normal(1.0, 2.0, (4, 5, 6, 3)).astype("float32")
    step = tf.function(lambda t: fused(t, training=True), input_signature=[tf.TensorSpec((batch, 5, 6, 3))])
    step(tf.constant(x))
    expected = 0.6 * initial + 0.4 * x.reshape(-1, 3).var(0)
    np.testing.assert_allclose(fused.moving_variance.numpy(), expected, rtol=1e-5)


def test_inference_uses_moving_statistics_as_keras():
    keras_bn, fused = _pair(True)
    x = np.random.default_rng(3).normal(size=(2, 5, 6, 3)).astype("float32")
    np.testing.assert_allclose(fused(x, training=False).numpy(), keras_bn(x, training=False).numpy(),
                               rtol=1e-5, atol=1e-6)
    gamma, beta, mean, variance = (w.numpy() for w in fused.weights)
    expected = (x - mean) / np.sqrt(variance + op_math.BN_EPSILON) * gamma + beta
    np.testing.assert_allclose(fused(x, training=False).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_other_shapes_take_keras_path_and_config_round_trips():
    layer = batch_norm("bn")
    assert isinstance(layer, keras.layers.BatchNormalization)
    x = np.random.default_rng(4).normal(size=(8, 3)).astype("float32")  # 2-D: not fusable
    y = layer(x, training=True).numpy()
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + op_math.BN_EPSILON), rtol=1e-4, atol=1e-4)
    clone = FusedBatchNorm.from_config(layer.get_config())
    assert clone.momentum == op_math.BN_MOMENTUM and clone.epsilon == op_math.BN_EPSILON


def test_one_value_per_channel_keeps_keras_statistics():
    # n = 1 ((n - 1) / n = 0): the kernel's own average cannot be used; the batch variance is 0 (Keras's).
    keras_bn, fused = _pair(True, momentum=0.6)
    x = np.random.default_rng(6).normal(size=(1, 1, 1, 3)).astype("float32")
    initial = fused.moving_variance.numpy()
    keras_bn(x, training=True)
    fused(x, training=True)
    np.testing.assert_allclose(fused.moving_mean.numpy(), keras_bn.moving_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(), 0.6 * initial, rtol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(), keras_bn.moving_variance.numpy(), rtol=1e-6)
