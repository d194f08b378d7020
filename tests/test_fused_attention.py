"""ASM's fused CPU kernels (`kernels/fused_attention.cc`) against the TensorFlow-op path of the edge.

The same edge, weights and batch through both paths: outputs, coefficients
and every gradient (the edge input, the flat kernel: the ops' weights and
T1..T4) to 1e-5. `tests/test_mixed_edge.py` holds both paths to the
reference op layers as well.
"""

import numpy as np
import pytest
import tensorflow as tf

import gin

from asmnas_tf.kernels import fused_attention
from asmnas_tf.layers.mixed_edge import MixedEdge
from asmnas_tf.space.primitives import PRIMITIVES

C = 8


def _with_kernels(enabled, fn):
    gin.bind_parameter("use_fused_attention.enabled", enabled)
    try:
        return fn()
    finally:
        gin.clear_config()


def _edge_results(edge, x, target, weights):
    with tf.GradientTape() as tape:
        tape.watch(x)
        mixed, coeffs = edge(x, training=True)
        loss = tf.reduce_mean((mixed - target) ** 2) + tf.reduce_sum(coeffs * weights)
    return [np.asarray(t) for t in (mixed, coeffs, *tape.gradient(loss, [x, edge.kernel]))]


def test_the_set_up_built_the_kernels_and_they_load():
    """`make setup` builds them (g++ and TensorFlow's flags): the suite runs the fused path."""
    assert fused_attention.load() is not None
    assert not fused_attention._stale()


@pytest.mark.parametrize("size", [7, 8])
@pytest.mark.parametrize("stride", [1, 2])
def test_fused_kernels_equal_the_tensorflow_ops(stride, size):
    rng = np.random.default_rng(stride * 10 + size)
    x = tf.constant(rng.normal(size=(3, size, size, C)).astype("float32"))
    edge = MixedEdge(C, stride, hidden_units=8)
    edge(x)
    # Larger T1..T4 weights than their init: coefficients far from uniform, ReLUs both ways.
    start = rng.normal(size=edge.kernel.shape).astype("float32")
    edge.kernel.assign(start)
    out = -(-size // stride)
    target = tf.constant(rng.normal(size=(3, out, out, C)).astype("float32"))
    weights = tf.constant(rng.normal(size=(3, len(PRIMITIVES))).astype("float32"))
    fused = _with_kernels(True, lambda: _edge_results(edge, x, target, weights))
    edge.kernel.assign(start)
    reference = _with_kernels(False, lambda: _edge_results(edge, x, target, weights))
    assert fused[1].std(axis=1).min() > 1e-3  # the coefficients do differ between ops
    for got, want in zip(fused, reference):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_the_kernel_names_a_shape_it_cannot_take():
    kernels = fused_attention.load()
    ys = [tf.zeros([2, 4, 4, 3 * C]), tf.zeros([2, 4, 4, C])]
    widths = [8, 16, 16, 16, 8]
    params = [t for i in range(4) for t in (tf.zeros([widths[i], widths[i + 1]]), tf.zeros([widths[i + 1]]))]
    with pytest.raises(tf.errors.InvalidArgumentError, match="4 op output blocks but 3 primitive indices"):
        kernels.asm_attend_forward(ys=ys, params=params, channels=C, num_primitives=8, primitive_of_block=[1, 2, 3])
    with pytest.raises(tf.errors.InvalidArgumentError, match="op output group 1 has shape"):
        kernels.asm_attend_forward(ys=[ys[0], tf.zeros([2, 4, 4, C + 1])], params=params, channels=C,
                                   num_primitives=8, primitive_of_block=[1, 2, 3, 4])


def test_without_the_library_the_edge_keeps_tensorflow_ops_and_says_so(monkeypatch, tmp_path, capfd):
    monkeypatch.setattr(fused_attention, "LIBRARY", str(tmp_path / "_fused_attention.so"))
    monkeypatch.setattr(fused_attention, "_loaded", {})
    assert fused_attention.load() is None
    assert fused_attention.load() is None  # once
    err = capfd.readouterr().err
    assert err.count("Note: ASM's edges use TensorFlow ops, not the fused kernels") == 1
    assert "`make setup` builds it" in err


def test_a_failed_build_leaves_no_library(monkeypatch, tmp_path):
    library = tmp_path / "_fused_attention.so"
    monkeypatch.setattr(fused_attention, "LIBRARY", str(library))
    with pytest.raises(Exception):
        fused_attention.build(compiler="false")  # a "compiler" that fails
    assert list(tmp_path.iterdir()) == []
