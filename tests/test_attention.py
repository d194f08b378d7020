"""The architecture self-attention module against numpy (eq. 4.3-4.5)."""

import numpy as np
import tensorflow as tf

from asmnas_tf.layers import ops
from asmnas_tf.layers.attention import ArchitectureAttention
from asmnas_tf.space.primitives import PRIMITIVES

K = len(PRIMITIVES)


def numpy_attention(ys, params):
    """Eq. 4.3-4.5 and 4.2, written out in numpy."""
    e = np.stack([y.mean(axis=(1, 2, 3)) for y in ys], axis=1)  # eq. 4.3, [B, K]
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    h = relu(e @ params["t1_kernel"] + params["t1_bias"])
    h = relu(h @ params["t2_kernel"] + params["t2_bias"])
    h = relu(h @ params["t3_kernel"] + params["t3_bias"])
    z = 1.0 / (1.0 + np.exp(-(h @ params["t4_kernel"] + params["t4_bias"])))  # eq. 4.4
    a = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)  # eq. 4.5
    mixed = sum(a[:, k, None, None, None] * ys[k] for k in range(K))  # eq. 4.2
    return mixed, a


def _random_outputs(seed, batch=4, size=5, channels=6):
    rng = np.random.default_rng(seed)
    # Different means per op so that E is informative.
    return [rng.normal(loc=k - 3.0, size=(batch, size, size, channels)).astype("float32") for k in range(K)]


def test_matches_numpy_eq_4_3_to_4_5():
    layer = ArchitectureAttention(K, hidden_units=16)
    ys = _random_outputs(0)
    mixed, coeffs = layer(ys)
    params = {name: np.asarray(v) for name, v in layer.params.items()}
    expected_mixed, expected_coeffs = numpy_attention(ys, params)
    np.testing.assert_allclose(np.asarray(coeffs), expected_coeffs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(mixed), expected_mixed, atol=1e-5)


def test_coefficients_sum_to_one_per_sample():
    layer = ArchitectureAttention(K, hidden_units=8)
    _, coeffs = layer(_random_outputs(1, batch=7))
    coeffs = np.asarray(coeffs)
    assert coeffs.shape == (7, K)
    np.testing.assert_allclose(coeffs.sum(axis=1), np.ones(7), atol=1e-6)
    assert (coeffs > 0).all()


def test_hidden_width_sets_the_parameter_count():
    layer = ArchitectureAttention(K, hidden_units=16)
    layer(_random_outputs(2))
    # T1: 8x16+16, T2, T3: 16x16+16, T4: 16x8+8
    assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == 144 + 272 + 272 + 136


def test_gradients_reach_t1_to_t4_and_the_op_weights():
    x = np.random.default_rng(3).normal(size=(4, 6, 6, 8)).astype("float32")
    candidates = [ops.make_op(name, 8, 1, affine=False, pool_batch_norm=True) for name in PRIMITIVES]
    layer = ArchitectureAttention(K, hidden_units=16)
    target = np.random.default_rng(4).normal(size=(4, 6, 6, 8)).astype("float32")
    with tf.GradientTape() as tape:
        ys = [op(x, training=True) for op in candidates]
        mixed, _ = layer(ys)
        loss = tf.reduce_mean((mixed - target) ** 2)
    op_weights = [w for op in candidates for w in op.trainable_weights]
    grads = tape.gradient(loss, list(layer.params.values()) + op_weights)
    names = list(layer.params) + [w.path for w in op_weights]
    for name, g in zip(names, grads):
        assert g is not None, name
        assert float(tf.reduce_sum(tf.abs(g))) > 0.0, name
    assert len(op_weights) == 12  # 4 + 4 separable, 2 + 2 dilated kernels


def test_hand_written_gradient_equals_autodiff():
    """attention.coefficients_gradient (the fused edge's backward) against GradientTape, float32 and float64."""
    from asmnas_tf.layers import attention

    for dtype in ("float32", "float64"):
        rng = np.random.default_rng(7)
        params = {name: tf.constant(rng.normal(size=shape), dtype=dtype)
                  for name, shape, _ in attention.attention_param_shapes(len(PRIMITIVES), 6)}
        embedding = tf.constant(rng.normal(size=(5, len(PRIMITIVES))), dtype=dtype)
        upstream = tf.constant(rng.normal(size=(5, len(PRIMITIVES))), dtype="float32")
        with tf.GradientTape() as tape:
            tape.watch([embedding, *params.values()])
            activations = []
            coeffs = attention.coefficients(embedding, params, activations)
        expected = tape.gradient(coeffs, [embedding, *params.values()], output_gradients=upstream)
        grad_embedding, grads = attention.coefficients_gradient(upstream, coeffs, embedding, params, activations)
        assert len(activations) == 4 and grad_embedding.dtype == embedding.dtype
        tolerance = 1e-6 if dtype == "float32" else 1e-7  # the softmax runs in float32 either way
        np.testing.assert_allclose(np.asarray(grad_embedding), np.asarray(expected[0]), atol=tolerance)
        for name, want in zip(params, expected[1:]):
            np.testing.assert_allclose(np.asarray(grads[name]), np.asarray(want), atol=tolerance, err_msg=name)
