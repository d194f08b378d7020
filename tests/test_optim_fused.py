"""The fused weight update: the same numbers as PyTorch's SGD and clip."""

import keras
import numpy as np
import tensorflow as tf

from asmnas_tf.training import optim
from asmnas_tf.host.distribute import make_strategy
from asmnas_tf.training.grad_clip import clip_by_global_norm


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


def _update_graph_constants(num_variables):
    variables = [keras.Variable(np.full((3, 2), i, "float32")) for i in range(num_variables)]
    opt = optim.CoupledSGD(learning_rate=0.1, momentum=0.9, l2=0.01)
    opt.build(variables)
    graph = tf.function(lambda grads: opt.apply_gradients(zip(grads, variables))).get_concrete_function(
        [tf.TensorSpec((3, 2), tf.float32)] * num_variables).graph
    return sum(op.type == "Const" for op in graph.get_operations())


def test_the_update_makes_its_l2_and_momentum_constants_once_not_per_variable():
    # Keras's per-variable update_step cast l2 and momentum for each variable: 2 constants more each.
    assert _update_graph_constants(12) == _update_graph_constants(3)


def test_the_update_under_two_replicas_matches_numpy():
    # The process's one MirroredStrategy (distribute.py): a second strategy over the same
    # devices reuses its collective instance keys and aborts every later all-reduce of the
    # process (a full `make test` failed this test and the 2-replica tests after it on its worker).
    strategy = make_strategy()
    assert strategy.num_replicas_in_sync == 2
    rng = np.random.default_rng(2)
    w = [rng.normal(size=s) for s in [(4, 3), (5,)]]
    with strategy.scope():
        variables = [keras.Variable(v.astype("float32")) for v in w]
        opt = optim.CoupledSGD(learning_rate=0.1, momentum=0.9, l2=0.01)
        opt.build(variables)
    grads = [rng.normal(size=v.shape).astype("float32") for v in w]

    @tf.function
    def step():
        # Each replica's gradient is half of the whole: Keras all-reduces them by sum.
        return strategy.run(lambda: opt.apply_gradients(zip([tf.constant(g / 2) for g in grads], variables)))

    bufs = [np.zeros_like(v) for v in w]
    for _ in range(2):
        step()
        for i, g in enumerate(grads):
            bufs[i] = 0.9 * bufs[i] + g + 0.01 * w[i]
            w[i] = w[i] - 0.1 * bufs[i]
    for v, expected in zip(variables, w):
        np.testing.assert_allclose(np.asarray(v), expected, rtol=1e-5, atol=1e-6)
