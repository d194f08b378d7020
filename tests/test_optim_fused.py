"""The fused weight update (issue 5): the same numbers as PyTorch's SGD and clip."""

import keras
import numpy as np
import tensorflow as tf

from asmnas_tf.runtime import optim
from asmnas_tf.runtime.grad_clip import clip_by_global_norm


def test_fused_update_matches_pytorch_on_several_variables_and_keeps_the_buffers():
    # clip_grad_norm_(params, 1.0), then SGD(momentum=0.9, weight_decay=0.01), lr changing per step.
    rng = np.random.default_rng(0)
    shapes = [(3, 3, 2, 4), (4,), (7, 5)]
    w = [rng.normal(size=s) for s in shapes]
    variables = [keras.Variable(v.astype("float32")) for v in w]
    rates = [0.1, 0.05, 0.02]
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([0, 1], rates)
    opt = optim.CoupledSGD(learning_rate=schedule, momentum=0.9, l2=0.01)
    opt.build(variables)
    step = tf.function(lambda grads: opt.apply_gradients(zip(clip_by_global_norm(grads, 1.0)[0], variables)))
    bufs = [np.zeros(s) for s in shapes]
    for lr in rates:
        grads = [rng.normal(size=s).astype("float32") for s in shapes]
        step([tf.constant(g) for g in grads])
        norm = np.sqrt(sum((g.astype("float64") ** 2).sum() for g in grads))
        scale = min(1.0, 1.0 / (norm + 1e-6))
        for i, g in enumerate(grads):
            bufs[i] = 0.9 * bufs[i] + (scale * g + 0.01 * w[i])
            w[i] = w[i] - lr * bufs[i]
    for v, w_i, buf in zip(variables, w, bufs):
        np.testing.assert_allclose(np.asarray(v), w_i, rtol=1e-5, atol=1e-6)
        # The DARTS virtual step reads the buffers this way (architect.py).
        np.testing.assert_allclose(np.asarray(opt.momentums[opt._get_variable_index(v)]), buf, rtol=1e-5, atol=1e-6)


def test_global_norm_squared_is_the_sum_of_squares():
    rng = np.random.default_rng(1)
    grads = [rng.normal(size=s).astype("float32") for s in [(5, 3), (3,), (2, 2, 2)]]
    clipped, norm_sq = clip_by_global_norm([tf.constant(g) for g in grads], 2.0)
    expected = sum((g.astype("float64") ** 2).sum() for g in grads)
    np.testing.assert_allclose(float(norm_sq), expected, rtol=1e-6)
    scale = 2.0 / (np.sqrt(expected) + 1e-6)
    for c, g in zip(clipped, grads):
        np.testing.assert_allclose(np.asarray(c), scale * g, rtol=1e-6)
