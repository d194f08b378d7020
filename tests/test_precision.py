"""Mixed precision (`training/precision.py`): loss scaling in our own train steps.

On a tiny supernet, evaluation network and DARTS supernet: one step under
'mixed_float16' (loss-scaled) and 'mixed_bfloat16' moves the weights as the
float32 step does, within a stated tolerance; a step whose scaled gradient
overflows is skipped and halves the scale; the clip sees the unscaled norm.
"""

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from asmnas_tf.errors import UserError
from asmnas_tf.evaluation.builder import build_eval_net, resolve_genotype
from asmnas_tf.evaluation.model import compile_eval_model
from asmnas_tf.training import precision
from asmnas_tf.training.grad_clip import clip_by_global_norm
from asmnas_tf.training.optim import CoupledSGD
from asmnas_tf.supernet import runner as search
from asmnas_tf.supernet.builder import build_supernet
from asmnas_tf.supernet.darts import architecture_optimizer, compile_darts
from asmnas_tf.supernet.model import compile_supernet

# Relative error (L2) of one step's weight update against float32's: measured
# 0.027 / 0.024 (float16, supernet / eval net), 0.118 / 0.076 (bfloat16: 8
# bits); a scale not divided out would be off by 2^15. Loss: 1.5e-4 / 1.1e-3.
TOLERANCE = {"mixed_float16": 0.06, "mixed_bfloat16": 0.25}


@pytest.fixture
def global_policy():
    """Sets Keras's global policy for the test, float32 again afterwards."""
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


def _batch(shape=(8, 8, 8, 3), classes=4):
    rng = np.random.default_rng(0)
    return (tf.constant(rng.normal(size=shape).astype("float32")),
            tf.constant(rng.integers(0, classes, size=shape[0]).astype("int32")))


def _supernet():
    keras.utils.set_random_seed(0)
    return compile_supernet(build_supernet((8, 8, 3), 4, num_cells=2, channels=4), CoupledSGD(0.1))


def _eval_net():
    keras.utils.set_random_seed(0)
    model = build_eval_net(resolve_genotype("DARTS_V2", 2), (8, 8, 3), 4, channels=4, drop_path=False)
    return compile_eval_model(model, CoupledSGD(0.1))


def _step_update(build, initial=None):
    """(model, initial weights, update of the trainable weights by one train step, loss)."""
    model = build()
    if initial is not None:
        model.set_weights(initial)
    weights = model.get_weights()
    start = [np.asarray(v) for v in model.trainable_variables]
    logs = model.train_step(_batch())
    update = np.concatenate([(np.asarray(v) - s).ravel() for v, s in zip(model.trainable_variables, start)])
    return model, weights, update, float(logs["loss"])


def _relative(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_clip_with_a_loss_scale_is_the_unscaled_clip_times_the_scale():
    rng = np.random.default_rng(3)
    grads = [rng.normal(size=(5, 3)).astype("float32"), rng.normal(size=7).astype("float32")]
    norm = np.sqrt(sum((g.astype("float64") ** 2).sum() for g in grads))
    for clipnorm in (0.5 * norm, 2.0 * norm):  # clipped, and not
        expected = [g * min(1.0, clipnorm / (norm + 1e-6)) for g in grads]
        scaled, norm_sq = clip_by_global_norm([tf.constant(g * 1024.0) for g in grads], clipnorm, loss_scale=1024.0)
        np.testing.assert_allclose(float(norm_sq), norm ** 2, rtol=1e-5)
        for got, want in zip(scaled, expected):
            np.testing.assert_allclose(np.asarray(got) / 1024.0, want, rtol=1e-5)
    # An overflow anywhere: every gradient NaN, so the wrapper skips the step.
    bad = [tf.constant(grads[0]), tf.constant(np.full(7, np.inf, "float32"))]
    clipped, _ = clip_by_global_norm(bad, 5.0, loss_scale=2.0)
    assert all(np.isnan(np.asarray(g)).all() for g in clipped)


@pytest.mark.parametrize("build", [_supernet, _eval_net], ids=["supernet", "eval_net"])
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_one_mixed_step_moves_the_weights_as_float32(build, policy, global_policy):
    model32, initial, update32, loss32 = _step_update(build)
    global_policy(policy)
    model, _, update, loss = _step_update(build, initial)
    assert model.compute_dtype == policy.split("_")[1]
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (policy == "mixed_float16")
    if scaled:  # the step was finite: applied, scale kept
        assert float(model.optimizer.dynamic_scale) == 2.0 ** 15
        assert int(model.optimizer.iterations) == 1
    # Without the scale divided out the update would be 2^15 times off.
    assert _relative(update, update32) < TOLERANCE[policy]
    assert abs(loss - loss32) < 0.005 * abs(loss32)


def test_an_overflowing_step_is_skipped_and_halves_the_scale(global_policy):
    global_policy("mixed_float16")
    model = _supernet()
    model.optimizer.dynamic_scale.assign(2.0 ** 100)  # the float16 backward overflows
    before = [np.asarray(v) for v in model.trainable_variables]
    model.train_step(_batch())
    for v, b in zip(model.trainable_variables, before):
        np.testing.assert_array_equal(np.asarray(v), b)
    assert float(model.optimizer.dynamic_scale) == 2.0 ** 99
    assert int(model.optimizer.iterations) == 0
    # The skipped step's infinite norm is not in the epoch's means.
    assert float(model.grad_norm_sq_tracker.count) == 0.0
    model.optimizer.dynamic_scale.assign(2.0 ** 10)
    logs = model.train_step(_batch())
    assert int(model.optimizer.iterations) == 1 and float(model.grad_norm_sq_tracker.count) == 1.0
    assert np.isfinite(float(logs["grad_norm_sq"])) and np.isfinite(float(logs["attention_grad_norm"]))


def test_mixed_metrics_are_the_unscaled_gradients(global_policy):
    """grad_norm_sq and the attention/ops gradient norms: float32's, not times the loss scale."""
    reference = _supernet()
    initial = reference.get_weights()
    logs32 = reference.train_step(_batch())
    global_policy("mixed_float16")
    model = _supernet()
    model.set_weights(initial)
    logs = model.train_step(_batch())
    for name in ("grad_norm_sq", "attention_grad_norm", "ops_grad_norm"):
        assert float(logs[name]) == pytest.approx(float(logs32[name]), rel=0.05), name


def _darts(second_order):
    keras.utils.set_random_seed(0)
    model = build_supernet((8, 8, 3), 4, num_cells=3, channels=4, mixing="alpha")
    return compile_darts(model, CoupledSGD(0.1), architecture_optimizer(), second_order=second_order)


def _darts_like(reference, second_order):
    """A DARTS model in the current policy with `reference`'s weights and momentum slots."""
    model = _darts(second_order)
    model.set_weights(reference.get_weights())
    inner = precision.inner_optimizer(model.optimizer)
    for variable, value in zip(inner.variables, reference.optimizer.variables):
        variable.assign(np.asarray(value))
    return model


def _flat(tensors):
    return np.concatenate([np.asarray(t, "float64").ravel() for t in tensors])


@pytest.mark.parametrize("second_order", [False, True], ids=["first_order", "second_order"])
def test_darts_architecture_gradient_carries_the_loss_scale_exactly(second_order, global_policy):
    """In float32 with a LossScaleOptimizer: the scaled gradient / scale is float32's (first and second order)."""
    x, y = _batch()
    reference = _darts(second_order)
    reference.weight_step(x, y)  # a momentum buffer for the virtual step
    want = _flat(reference.architecture_gradients(x, y, x[::-1], y[::-1])[0])
    model = _darts_like(reference, second_order)
    model.architecture_optimizer = keras.optimizers.LossScaleOptimizer(model.architecture_optimizer,
                                                                       initial_scale=2.0 ** 12)
    model.architecture_optimizer.build(model.architecture_variables)
    got = _flat(model.architecture_gradients(x, y, x[::-1], y[::-1])[0]) / 2.0 ** 12
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    assert np.abs(want).max() > 1e-4  # a real gradient, not zeros

    # Under mixed float16 (the wrapper is put in by compile_darts): the same
    # direction; float16's 11 bits cost more in the second order (its finite
    # difference of two gradients). Measured: cosine 0.9995 / 0.922, norm
    # ratio 1.003 / 0.904 (first / second order).
    global_policy("mixed_float16")
    mixed = _darts_like(reference, second_order)
    assert isinstance(mixed.architecture_optimizer, keras.optimizers.LossScaleOptimizer)
    scale = float(mixed.architecture_optimizer.dynamic_scale)
    got = _flat(mixed.architecture_gradients(x, y, x[::-1], y[::-1])[0]) / scale
    cosine = got @ want / np.linalg.norm(got) / np.linalg.norm(want)
    assert cosine > 0.8 and 0.7 < np.linalg.norm(got) / np.linalg.norm(want) < 1.4
    before = [np.asarray(v) for v in mixed.architecture_variables]
    mixed.architecture_step(x, y, x[::-1], y[::-1])  # Adam applies it unscaled, once
    assert int(mixed.architecture_optimizer.iterations) == 1
    assert any(np.abs(np.asarray(v) - b).max() > 0 for v, b in zip(mixed.architecture_variables, before))


def test_a_bad_policy_is_one_line_before_any_work(tmp_path):
    run = tmp_path / "run"
    with gin.unlock_config():
        gin.bind_parameter("precision_policy.policy", "float64")
    try:
        with pytest.raises(UserError, match=r"^precision_policy.policy='float64' is not one of float32, "
                                            r"mixed_float16, mixed_bfloat16\n"):  # then gin's context
            search.run_search(str(run), search.search_config(epochs=1))
    finally:
        gin.clear_config()
    assert not run.exists()


def test_the_gin_policy_is_set_by_a_run_and_none_leaves_keras_alone(global_policy):
    global_policy("mixed_bfloat16")
    assert precision.apply_precision_policy() == "mixed_bfloat16"  # unbound: the user's policy holds
    with gin.unlock_config():
        gin.bind_parameter("precision_policy.policy", "float32")
    try:
        assert precision.apply_precision_policy() == "float32"
    finally:
        gin.clear_config()
