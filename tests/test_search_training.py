"""Single-level training (SPEC §4): optimizer semantics, exact clip, 2 replicas."""

import keras
import numpy as np
import tensorflow as tf

from asmnas_tf.training import optim
from asmnas_tf.host.distribute import make_strategy
from asmnas_tf.supernet.model import SupernetModel, compile_supernet
from asmnas_tf.supernet.builder import build_supernet


def two_cpu_strategy():
    # conftest splits the CPU in two logical devices.
    return make_strategy("mirrored")


def test_coupled_sgd_matches_pytorch_semantics():
    # PyTorch SGD: g += wd * w; buf = mu * buf + g; w -= lr * buf (lr changes per step).
    w0 = np.array([1.0, -2.0, 0.5], "float32")
    grads = [np.array([0.3, 0.1, -0.2], "float32"), np.array([-0.1, 0.4, 0.2], "float32")]
    rates = [0.1, 0.05]
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([0], rates)  # step 0, then 1+
    opt = optim.CoupledSGD(learning_rate=schedule, momentum=0.9, l2=0.01)
    var = keras.Variable(w0)
    opt.build([var])
    w, buf = w0.astype("float64"), np.zeros(3)
    for g, lr in zip(grads, rates):
        opt.apply_gradients([(tf.constant(g), var)])
        d = g + 0.01 * w
        buf = 0.9 * buf + d
        w = w - lr * buf
    np.testing.assert_allclose(np.asarray(var), w, rtol=1e-6)


def test_cosine_schedule_goes_to_zero():
    schedule = optim.cosine_learning_rate(0.025, 100)
    assert float(schedule(0)) == np.float32(0.025)
    assert abs(float(schedule(50)) - 0.0125) < 1e-7
    assert float(schedule(100)) == 0.0


def _linear_model(strategy, clipnorm):
    with strategy.scope():
        inputs = keras.Input((3,))
        logits = keras.layers.Dense(2, kernel_initializer="ones", bias_initializer="zeros")(inputs)
        model = SupernetModel(inputs=inputs, outputs={"logits": logits, "coefficients": inputs}, clipnorm=clipnorm)
        compile_supernet(model, optim.CoupledSGD(learning_rate=1.0, momentum=0.0, l2=0.0))
    return model


def _numpy_clipped_step(x, y, clipnorm):
    """One SGD step (lr 1) on the mean cross-entropy of the GLOBAL batch, clipped."""
    kernel, bias = np.ones((3, 2)), np.zeros(2)
    logits = x @ kernel + bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d = (p - np.eye(2)[y]) / len(x)
    g_kernel, g_bias = x.T @ d, d.sum(0)
    norm = np.sqrt((g_kernel ** 2).sum() + (g_bias ** 2).sum())
    scale = min(1.0, clipnorm / (norm + 1e-6))
    return kernel - scale * g_kernel, bias - scale * g_bias, norm ** 2


def test_global_norm_clip_is_exact_under_two_replicas():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype("float32") * 3
    x[:4] += 4.0  # the two replicas see different data: their gradients differ
    y = (rng.random(8) > 0.5).astype("int32")
    # clipnorm 0.5 clips (norm^2 = 1.57); 100 does not, which checks the scale.
    for strategy, clipnorm in [(two_cpu_strategy(), 0.5), (two_cpu_strategy(), 100.0),
                               (tf.distribute.get_strategy(), 0.5)]:
        model = _linear_model(strategy, clipnorm)
        history = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=1, verbose=0)
        kernel, bias, norm_sq = _numpy_clipped_step(x.astype("float64"), y, clipnorm)
        assert abs(norm_sq - 1.569) < 1e-3
        assert abs(history.history["loss"][0] - np.log(2)) < 1e-6  # equal logits at the start
        np.testing.assert_allclose(model.layers[1].kernel.numpy(), kernel, atol=1e-5)
        np.testing.assert_allclose(model.layers[1].bias.numpy(), bias, atol=1e-5)
        np.testing.assert_allclose(history.history["grad_norm_sq"][0], norm_sq, rtol=1e-4)


def _learnable_images(n, size=8, classes=4, seed=0):
    """Class = the bright quadrant of the image: easy to learn, not trivial."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(scale=0.3, size=(n, size, size, 1)).astype("float32")
    half = size // 2
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, r * half:(r + 1) * half, c * half:(c + 1) * half] += 1.5
    return x, y.astype("int32")


def test_tiny_search_trains_under_two_replicas_and_loss_goes_down():
    keras.utils.set_random_seed(0)
    strategy = two_cpu_strategy()
    assert strategy.num_replicas_in_sync == 2
    x, y = _learnable_images(128)
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(128, seed=0).batch(32)
    with strategy.scope():
        model = build_supernet((8, 8, 1), 4, num_cells=2, channels=4, attention_hidden_units=8)
        compile_supernet(model, optim.search_optimizer(total_steps=5 * 4))
    history = model.fit(data, epochs=5, verbose=0).history
    print("\nloss per epoch:", np.round(history["loss"], 3), "accuracy:", np.round(history["accuracy"], 3))
    assert history["loss"][-1] < 0.8 * history["loss"][0]
    assert history["accuracy"][-1] > 0.5
    assert all(np.isfinite(history["grad_norm_sq"]))
