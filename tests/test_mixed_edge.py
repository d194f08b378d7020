"""The fused supernet edge equals the reference op layers + attention layer.

Same weights in, same outputs and gradients out (SPEC §2-3), in training
mode (batch statistics) and inference mode (moving statistics).
"""

import collections

import gin
import numpy as np
import pytest
import tensorflow as tf

from asmnas_tf.layers import ops
from asmnas_tf.layers.attention import ArchitectureAttention
from asmnas_tf.layers.mixed_edge import MixedEdge
from asmnas_tf.space.primitives import PRIMITIVES
from fused_kernels import count_kernel_calls

C = 8


def _reference(stride, hidden):
    candidates = {name: ops.make_op(name, C, stride, affine=False, pool_batch_norm=True) for name in PRIMITIVES}
    return candidates, ArchitectureAttention(len(PRIMITIVES), hidden)


def _reference_weights(candidates, attention, stride):
    """The reference layers' weights under the fused edge's piece names."""
    w = {}
    for k in (3, 5):
        sep = candidates[f"sep_conv_{k}x{k}"]
        w[f"sep{k}_dw1"], w[f"sep{k}_pw1"] = sep.first.depthwise, sep.first.pointwise
        w[f"sep{k}_dw2"], w[f"sep{k}_pw2"] = sep.second.depthwise, sep.second.pointwise
        dil = candidates[f"dil_conv_{k}x{k}"]
        w[f"dil{k}_dw"], w[f"dil{k}_pw"] = dil.depthwise, dil.pointwise
    if stride == 2:
        w["skip_even"] = candidates["skip_connect"].kernel_even
        w["skip_odd"] = candidates["skip_connect"].kernel_odd
    w.update(attention.params)
    return w


def _pair(stride, hidden=8, size=7, seed=0):
    x = tf.constant(np.random.default_rng(seed).normal(size=(3, size, size, C)).astype("float32"))
    candidates, attention = _reference(stride, hidden)
    attention([op(x, training=False) for op in candidates.values()])  # build everything
    edge = MixedEdge(C, stride, hidden)
    edge(x)
    ref_w = _reference_weights(candidates, attention, stride)
    flat = np.concatenate([np.asarray(ref_w[name]).ravel() for name, _, _ in edge.pieces])
    edge.kernel.assign(flat)
    return x, candidates, attention, edge, ref_w


@pytest.fixture(params=[True, False], ids=["fused_kernels", "tensorflow_ops"])
def attention_path(request, monkeypatch):
    """ASM's training edge on the fused CPU kernels (the default where built) or on TensorFlow ops.

    Yields the kernels' call counts on the fused path (it fails where the
    set-up built no kernels: `fused_kernels.py`), None on TensorFlow ops.
    """
    calls = count_kernel_calls(monkeypatch) if request.param else None
    gin.bind_parameter("use_fused_attention.enabled", request.param)
    yield calls
    gin.clear_config()


def _assert_kernel_calls(calls, forward, backward):
    if calls is not None:  # the fused path
        assert calls == collections.Counter(asm_attend_forward=forward, asm_attend_backward=backward)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("stride", [1, 2])
def test_fused_edge_matches_reference(stride, training, attention_path):
    x, candidates, attention, edge, _ = _pair(stride)
    ref_mixed, ref_coeffs = attention([op(x, training=training) for op in candidates.values()])
    mixed, coeffs = edge(x, training=training)
    _assert_kernel_calls(attention_path, forward=int(training), backward=0)  # inference keeps the TensorFlow ops
    np.testing.assert_allclose(np.asarray(coeffs), np.asarray(ref_coeffs), atol=1e-5)
    np.testing.assert_allclose(np.asarray(mixed), np.asarray(ref_mixed), atol=1e-5)


@pytest.mark.parametrize("coefficient_loss", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_fused_edge_gradients_match_reference(stride, coefficient_loss, attention_path):
    """Also with a loss term on the coefficients: both inputs of the edge's hand-written backward."""
    x, candidates, attention, edge, ref_w = _pair(stride, seed=1)
    target = tf.constant(np.random.default_rng(2).normal(size=edge(x)[0].shape).astype("float32"))
    weights = tf.constant(np.random.default_rng(3).normal(size=(3, len(PRIMITIVES))).astype("float32"))

    def loss_of(mixed, coeffs):
        loss = tf.reduce_mean((mixed - target) ** 2)
        return loss + tf.reduce_sum(coeffs * weights) if coefficient_loss else loss

    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ref_loss = loss_of(*attention([op(x, training=True) for op in candidates.values()]))
        loss = loss_of(*edge(x, training=True))
    names = [name for name, _, _ in edge.pieces]
    ref_grads = tape.gradient(ref_loss, [x] + [ref_w[n] for n in names])
    grads = tape.gradient(loss, [x, edge.kernel])
    _assert_kernel_calls(attention_path, forward=1, backward=1)
    np.testing.assert_allclose(np.asarray(grads[0]), np.asarray(ref_grads[0]), atol=1e-5)
    flat_ref = np.concatenate([np.asarray(g).ravel() for g in ref_grads[1:]])
    np.testing.assert_allclose(np.asarray(grads[1]), flat_ref, atol=1e-5)


def test_training_updates_the_moving_statistics_like_keras_batchnorm():
    x, candidates, attention, edge, _ = _pair(1, seed=3)
    for op in candidates.values():
        op(x, training=True)
    edge(x, training=True)
    ref = candidates["sep_conv_5x5"].second.bn
    slot = edge.bn_slots.index("sep5_b")
    np.testing.assert_allclose(np.asarray(edge.moving_mean)[slot], np.asarray(ref.moving_mean), atol=1e-6)
    np.testing.assert_allclose(np.asarray(edge.moving_variance)[slot], np.asarray(ref.moving_variance), atol=1e-6)


def test_weight_count_is_the_sum_of_the_ops_and_attention():
    # stride 2: 800 + 1312 + 400 + 656 + 64 (FactorizedReduce) at C = 8 ... computed by hand:
    sep = lambda k: 2 * (k * k * C + C * C)  # noqa: E731
    dil = lambda k: k * k * C + C * C  # noqa: E731
    attention = (8 * 16 + 16) + 2 * (16 * 16 + 16) + (16 * 8 + 8)
    edge = MixedEdge(C, 2, 16)
    edge.build((None, 8, 8, C))
    assert edge.kernel.shape[0] == sep(3) + sep(5) + dil(3) + dil(5) + C * C + attention
    assert len(edge.trainable_weights) == 1


def test_uniform_mixing_has_equal_coefficients():
    x = tf.constant(np.random.default_rng(5).normal(size=(2, 6, 6, C)).astype("float32"))
    edge = MixedEdge(C, 1, mixing="uniform")
    _, coeffs = edge(x, training=True)
    np.testing.assert_allclose(np.asarray(coeffs), np.full((2, 8), 1 / 8), atol=1e-7)


@pytest.mark.parametrize("stride", [1, 2])
def test_replacement_makes_the_edge_its_selected_op(stride):
    """The stability experiment's hook (paper Fig. 3): op k alone, or mixed at -1."""
    x, candidates, attention, edge, _ = _pair(stride)
    edge.replacement = tf.Variable(-1, dtype=tf.int32, trainable=False)
    ref_mixed, _ = attention([op(x, training=False) for op in candidates.values()])
    mixed, _ = edge(x, training=False)
    np.testing.assert_allclose(np.asarray(mixed), np.asarray(ref_mixed), atol=1e-5)
    for k, name in enumerate(PRIMITIVES):
        edge.replacement.assign(k)
        replaced, coeffs = edge(x, training=False)
        np.testing.assert_array_equal(np.asarray(coeffs), np.eye(len(PRIMITIVES))[[k] * 3])
        expected = candidates[name](x, training=False)
        np.testing.assert_allclose(np.asarray(replaced), np.asarray(expected), atol=1e-5, err_msg=name)


@pytest.mark.parametrize("mode", ["function", "noinline"])
def test_edges_as_one_shared_graph_function_equal_the_inlined_edges(mode):
    """mixed_edge.set_edge_graph_mode: same outputs, gradients and moving statistics; one trace for two edges."""
    from asmnas_tf.layers import mixed_edge

    x = tf.constant(np.random.default_rng(4).normal(size=(3, 7, 7, C)).astype("float32"))
    edges = [MixedEdge(C, 1, 8), MixedEdge(C, 1, 8)]
    for edge in edges:
        edge(x)
    start = [edge.get_weights() for edge in edges]

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            mixed = [edge(x, training=True)[0] for edge in edges]
            loss = tf.reduce_sum(tf.square(mixed[0] - 0.5 * mixed[1]))
        return mixed, tape.gradient(loss, [x] + [edge.kernel for edge in edges])

    def run(edge_mode):
        mixed_edge.set_edge_graph_mode(edge_mode)
        try:
            for edge, weights in zip(edges, start):
                edge.set_weights(weights)
            out = tf.function(step.python_function)(x)  # a fresh trace in this mode
            return [np.asarray(t) for t in tf.nest.flatten(out)] + [np.asarray(e.moving_variance) for e in edges]
        finally:
            mixed_edge.set_edge_graph_mode("function")

    traces = mixed_edge._EDGE_FUNCTIONS[mode].experimental_get_tracing_count()
    shared = run(mode)
    assert mixed_edge._EDGE_FUNCTIONS[mode].experimental_get_tracing_count() - traces == 1  # both edges, one trace
    inlined = run("inline")
    assert len(shared) == len(inlined) == 7
    for a, b in zip(shared, inlined):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(inlined[-1], 1.0)  # the moving statistics moved


def test_every_weight_piece_has_pytorchs_default_init():
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) per piece (SPEC §2): inside the bound, std = bound / sqrt(3)."""
    tf.random.set_seed(0)
    edge = MixedEdge(16, 2, 16)
    edge(tf.zeros((1, 8, 8, 16)))
    pieces = edge.unpack(edge.kernel)
    for name, shape, fan_in in edge.pieces:
        values = np.asarray(pieces[name]).ravel()
        bound = 1.0 / np.sqrt(fan_in)
        assert values.shape == (int(np.prod(shape)),)
        assert np.abs(values).max() <= bound, name
        if values.size >= 256:
            assert abs(values.std() / (bound / np.sqrt(3)) - 1.0) < 0.15, name


def test_training_gradients_with_an_unknown_batch_equal_the_static_ones(attention_path):
    """The fused attention's backward takes its sizes from tf.shape when the batch is unknown (Keras's fit)."""
    x, _, _, edge, _ = _pair(1, seed=6)
    target = tf.constant(np.random.default_rng(7).normal(size=(3, 7, 7, C)).astype("float32"))

    def grads(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            mixed, coeffs = edge(t, training=True)
            loss = tf.reduce_mean((mixed - target) ** 2) + tf.reduce_sum(coeffs[:, 2])
        return tape.gradient(loss, [t, edge.kernel])

    start = edge.get_weights()
    static = [np.asarray(g) for g in grads(x)]
    _assert_kernel_calls(attention_path, forward=1, backward=1)
    edge.set_weights(start)
    unknown = tf.function(grads, input_signature=[tf.TensorSpec((None, 7, 7, C))])
    assert unknown.get_concrete_function().structured_outputs[0].shape.as_list() == [None, 7, 7, C]
    for got, want in zip(unknown(x), static):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
