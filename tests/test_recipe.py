"""The evaluation network's training recipe: each option does what it says, and only that.

Schedules against a hand computation; label smoothing against its closed
form; Nesterov against PyTorch's update written out; the weight average
against numpy's EMA of the recorded weight trajectory, through a real
(2-replica) training run, and the tested, saved and served weights are that
average; test-time augmentation against the mean of the model on the images
and their mirrors, in the run and in the served model.
"""

import json
import os
import subprocess
import sys

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

import asmnas_tf as nas
from asmnas_tf.errors import UserError
from asmnas_tf.evaluation.builder import build_eval_net, resolve_genotype
from asmnas_tf.evaluation.export import MODEL_FILE, export_saved_model
from asmnas_tf.evaluation.model import LOGITS, EvalModel
from asmnas_tf.evaluation.recipe import check_recipe, train_optimizer
from asmnas_tf.evaluation.tta import softmax, tta_metrics
from asmnas_tf.training.optim import CoupledSGD

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
SHAPE = (8, 8, 1)


@pytest.fixture
def bindings():
    """gin.bind_parameter for one test; the configuration is cleared after it."""
    def bind(**values):
        with gin.unlock_config():
            for key, value in values.items():
                gin.bind_parameter(key.replace("__", "."), value)
    yield bind
    gin.clear_config()


def _rates(optimizer, steps):
    """The schedule's rate at each optimizer step (0: the first update)."""
    return np.array([float(optimizer._learning_rate(step)) for step in steps])


# ---------------------------------------------------------------- schedules


def test_default_schedule_is_the_papers_cosine_to_zero():
    optimizer = train_optimizer(steps_per_epoch=10, epochs=4, learning_rate=0.025)
    steps = np.arange(0, 41, 5)
    expected = 0.025 * 0.5 * (1 + np.cos(np.pi * steps / 40))
    np.testing.assert_allclose(_rates(optimizer, steps), expected, rtol=1e-5, atol=1e-8)
    assert not optimizer.use_ema and not optimizer.nesterov and optimizer.l2 == 3e-4


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_warmup_then_decay_by_hand(schedule):
    # 10 steps an epoch, 5 epochs, 1 epoch of warm-up: 10 warm steps, 40 decaying.
    optimizer = train_optimizer(steps_per_epoch=10, epochs=5, learning_rate=0.1, schedule=schedule,
                                warmup_epochs=1.0)
    steps = np.array([0, 4, 9, 10, 20, 30, 49, 50])
    warm = 0.1 * (steps + 1) / 10
    after = steps - 10
    decay = {"cosine": 0.1 * 0.5 * (1 + np.cos(np.pi * np.minimum(after, 40) / 40)),
             "linear": 0.1 * (1 - np.minimum(after, 40) / 40),
             "constant": np.full(len(steps), 0.1)}[schedule]
    expected = np.where(steps < 10, warm, decay)
    np.testing.assert_allclose(_rates(optimizer, steps), expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("scaling, factor", [("none", 1.0), ("linear", 4.0), ("sqrt", 2.0)])
def test_learning_rate_scales_with_the_batch(scaling, factor):
    optimizer = train_optimizer(steps_per_epoch=10, epochs=2, batch_size=256, learning_rate=0.05,
                                schedule="constant", lr_scaling=scaling, reference_batch_size=64)
    assert _rates(optimizer, [0, 7]) == pytest.approx([0.05 * factor] * 2, rel=1e-6)


def test_schedule_round_trips_through_keras_serialization():
    optimizer = train_optimizer(steps_per_epoch=10, epochs=5, learning_rate=0.1, schedule="linear",
                                warmup_epochs=0.5, nesterov=True, ema_decay=0.99)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    steps = [0, 3, 5, 17, 49]
    np.testing.assert_allclose(_rates(restored, steps), _rates(optimizer, steps), rtol=1e-7)
    assert restored.nesterov and restored.use_ema and restored.ema_momentum == 0.99


# ---------------------------------------------------------------- the update and the loss


def test_nesterov_matches_pytorchs_update_written_out():
    lr, mu, l2 = 0.1, 0.9, 0.01
    gradients = [np.array([0.5, -1.0], np.float32), np.array([0.25, 2.0], np.float32),
                 np.array([-1.0, 0.5], np.float32)]
    variable = keras.Variable(np.array([1.0, 2.0], np.float32))
    optimizer = CoupledSGD(learning_rate=lr, momentum=mu, l2=l2, nesterov=True)
    optimizer.build([variable])
    w, buf = np.array([1.0, 2.0]), np.zeros(2)
    for g in gradients:
        optimizer.apply_gradients([(tf.constant(g), variable)])
        d = g + l2 * w           # coupled L2
        buf = mu * buf + d       # torch.optim.SGD(nesterov=True)
        w = w - lr * (d + mu * buf)
    np.testing.assert_allclose(variable.numpy(), w, rtol=1e-6)


def test_label_smoothing_changes_the_loss_by_its_closed_form():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 1.0], [-2.0, 4.0, 0.0]], np.float32)
    labels = np.array([0, 2, 1, 0])
    log_p = np.log(softmax(logits))
    ce = -np.mean(log_p[np.arange(4), labels])
    uniform = -np.mean(log_p.mean(axis=1))  # the cross-entropy against the uniform target
    inputs = keras.Input((3,))
    model = EvalModel(inputs=inputs, outputs={LOGITS: keras.layers.Identity()(inputs)})
    for epsilon in (0.0, 0.1, 0.3):
        loss = float(model.cross_entropy(labels, logits, epsilon))
        assert loss == pytest.approx((1 - epsilon) * ce + epsilon * uniform, rel=1e-5)


def test_batch_norm_momentum_reaches_every_batch_norm_and_its_update():
    cells = resolve_genotype("DARTS_V2", 3)
    default = build_eval_net(cells, SHAPE, 4, channels=4)
    model = build_eval_net(cells, SHAPE, 4, channels=4, bn_momentum=0.99)
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) >= 10 and {layer.momentum for layer in norms} == {0.99}
    assert any(layer.path.startswith("auxiliary_head") for layer in norms)  # the head's too
    assert {layer.momentum for layer in default._flatten_layers()
            if isinstance(layer, keras.layers.BatchNormalization)} == {0.9}
    x = np.random.default_rng(0).normal(size=(6, *SHAPE)).astype("float32")
    stem = keras.Model(model.input, model.get_layer("stem_conv").output)
    batch_mean = stem(x).numpy().mean(axis=(0, 1, 2))
    model(x, training=True)
    np.testing.assert_allclose(model.get_layer("stem_bn").moving_mean.numpy(), 0.01 * batch_mean,
                               rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- checks


@pytest.mark.parametrize("binding, value, message", [
    ("train_optimizer.ema_decay", 1.0, "train_optimizer.ema_decay=1.0: expected a number in (0, 1), or None"),
    ("train_optimizer.ema_decay", 0, "train_optimizer.ema_decay=0: expected a number in (0, 1), or None"),
    ("train_optimizer.warmup_epochs", 4, "train_optimizer.warmup_epochs=4: expected a number in [0, 4)"),
    ("train_optimizer.learning_rate", 0.0, "train_optimizer.learning_rate=0.0: expected a number in (0, inf)"),
    ("train_optimizer.nesterov", "yes", "train_optimizer.nesterov='yes': expected True or False"),
    ("train_optimizer.reference_batch_size", 0, "train_optimizer.reference_batch_size=0: expected an integer"),
    ("build_eval_net.auxiliary_weight", -1, "build_eval_net.auxiliary_weight=-1: expected a number in [0, inf)"),
    ("build_eval_net.label_smoothing", 1.0, "build_eval_net.label_smoothing=1.0: expected a number in [0, 1)"),
    ("make_dataset.crop_padding", 1.5, "make_dataset.crop_padding=1.5: expected an integer >= 0"),
])
def test_each_binding_is_checked_with_its_range(bindings, binding, value, message):
    bindings(**{binding.replace(".", "__"): value})
    with pytest.raises(UserError) as raised:
        check_recipe(epochs=4, batch_size=64)
    assert str(raised.value).startswith(message)


def test_the_api_checks_the_recipe_before_reading_any_data(bindings):
    bindings(train_optimizer__warmup_epochs=2.0)
    with pytest.raises(UserError, match=r"warmup_epochs=2.0: expected a number in \[0, 2\)"):
        nas.train("DARTS_V2", "not arrays at all", epochs=2)


# ---------------------------------------------------------------- EMA and TTA through a real run


def _tiny_data(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 60, (n, *SHAPE)).astype(np.uint8)
    x[np.arange(n), :, :, 0] += (y * 60).astype(np.uint8)[:, None, None]  # the class is the brightness
    return x, y


class _WeightTrajectory(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append([v.numpy().copy() for v in self.model.trainable_variables])


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory):
    """2 cells, C = 4, 3 epochs x 3 steps, EMA 0.6, TTA flip, under a 2-replica MirroredStrategy."""
    model_dir = str(tmp_path_factory.mktemp("ema") / "run")
    x, y = _tiny_data(48, 0)
    x_test, y_test = _tiny_data(40, 1)
    trajectory = _WeightTrajectory()
    with gin.unlock_config():
        gin.bind_parameter("train_optimizer.ema_decay", 0.6)
        gin.bind_parameter("train_optimizer.learning_rate", 0.1)
        gin.bind_parameter("make_dataset.crop_padding", 0)
        gin.bind_parameter("make_dataset.flip", True)  # numpy arrays: 'auto' would not flip them
    try:
        result = nas.train("DARTS_V2", x, y, x_test, y_test, num_cells=2, channels=4,
                           network_options={"auxiliary": False}, batch_size=16, epochs=3, drop_path=0.0,
                           test_time_augmentation="flip", save_every_steps=0, verbose=0,
                           callbacks=[trajectory], model_dir=model_dir)
    finally:
        gin.clear_config()
    return result, trajectory.weights, (x_test, y_test), model_dir


def test_tested_weights_are_numpys_ema_of_the_trajectory(averaged_run):
    result, trajectory, _, _ = averaged_run
    assert len(trajectory) == 9 and result.results["weight_average"] is True
    average = [w.astype(np.float64) for w in trajectory[0]]  # Keras: the first step copies the weights
    for step, weights in enumerate(trajectory[1:], 1):
        m = min(0.6, (1 + step) / (10 + step))  # the warm-up (train_optimizer.ema_warmup, the default)
        average = [m * a + (1 - m) * w for a, w in zip(average, weights)]
    final = [v.numpy() for v in result.model.trainable_variables]
    assert any(np.max(np.abs(f - w)) > 1e-4 for f, w in zip(final, trajectory[-1]))  # not the last weights
    for f, a in zip(final, average):
        np.testing.assert_allclose(f, a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("warmup", [False, True])
def test_the_weight_average_warms_up_as_tensorflows_ema(warmup):
    """One variable, gradient 1, lr 0.1, no momentum: w_t = -0.1 (t + 1); the average against numpy's."""
    variable = tf.Variable([0.0])
    optimizer = CoupledSGD(learning_rate=0.1, momentum=0.0, l2=0.0, use_ema=True, ema_momentum=0.99,
                           ema_warmup=warmup)
    optimizer.build([variable])
    average = None
    for step in range(30):
        optimizer.apply([tf.constant([1.0])], [variable])
        w = -0.1 * (step + 1)
        m = 0.0 if step == 0 else (min(0.99, (1 + step) / (10 + step)) if warmup else 0.99)
        average = w if average is None else m * average + (1 - m) * w
        np.testing.assert_allclose(optimizer._model_variables_moving_average[0].numpy(), [average], rtol=1e-5)
    # after 30 steps the warm-up's average is near the weights (-3.0), Keras's still near the start
    assert (average < -2.0) if warmup else (average > -1.0)
    assert CoupledSGD.from_config(optimizer.get_config()).ema_warmup is warmup


def _normalised(result, images):
    info = result.normalization
    return ((images.astype(np.float32) / 255.0 - np.float32(info["mean"])) / np.float32(info["std"]))


def test_tta_accuracy_is_the_mean_of_the_image_and_its_mirror(averaged_run):
    result, _, (x_test, y_test), model_dir = averaged_run
    saved = keras.saving.load_model(os.path.join(model_dir, MODEL_FILE), compile=False)
    for v_saved, v_run in zip(saved.trainable_variables, result.model.trainable_variables):
        np.testing.assert_array_equal(v_saved.numpy(), v_run.numpy())  # the average is what was saved
    x = _normalised(result, x_test)
    plain = softmax(saved(x, training=False)[LOGITS].numpy())
    mirror = softmax(saved(x[:, :, ::-1, :], training=False)[LOGITS].numpy())
    mean = 0.5 * (plain + mirror)
    assert result.results["test_accuracy"] == pytest.approx(np.mean(mean.argmax(1) == y_test), abs=1e-9)
    assert result.results["test_accuracy_single_view"] == pytest.approx(np.mean(plain.argmax(1) == y_test), abs=1e-9)
    assert result.results["test_loss"] == pytest.approx(-np.mean(np.log(mean[np.arange(40), y_test])), rel=1e-5)
    dataset = tf.data.Dataset.from_tensor_slices((x, y_test)).batch(16)
    assert tta_metrics(saved, dataset, "flip")["accuracy"] == result.results["test_accuracy"]


def test_served_model_carries_the_average_and_tta_only_when_asked(averaged_run, tmp_path):
    result, _, (x_test, _), model_dir = averaged_run
    saved = keras.saving.load_model(os.path.join(model_dir, MODEL_FILE), compile=False)
    x = _normalised(result, x_test)
    plain = softmax(saved(x, training=False)[LOGITS].numpy())
    mean = 0.5 * (plain + softmax(saved(x[:, :, ::-1, :], training=False)[LOGITS].numpy()))
    paths = {tta: export_saved_model(model_dir, destination=str(tmp_path / f"served-{tta}"),
                                     test_time_augmentation=tta) for tta in (None, "flip")}
    np.save(tmp_path / "images.npy", x_test)
    script = ("import sys, json, numpy as np, tensorflow as tf\n"
              "x = np.load(sys.argv[1])\n"
              "out = {p: tf.saved_model.load(p).signatures['serving_default'](images=tf.constant(x))"
              "['probabilities'].numpy().tolist() for p in sys.argv[2:]}\n"
              "assert 'asmnas_tf' not in sys.modules\n"
              "print(json.dumps(out))\n")
    served = subprocess.run([sys.executable, "-c", script, str(tmp_path / "images.npy"), *paths.values()],
                            env=ENV, cwd=tmp_path, capture_output=True, text=True, check=True, timeout=300)
    probabilities = json.loads(served.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(probabilities[paths[None]], plain, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(probabilities[paths["flip"]], mean, rtol=1e-4, atol=1e-6)
    assert not np.allclose(plain, mean, atol=1e-4)  # the mirror changes the answer: the test can fail


def test_flip_tta_is_dropped_with_a_note_where_auto_does_not_flip(capsys):
    """A user's arrays under make_dataset.flip = 'auto': not flipped in training, so not at test time."""
    x, y = _tiny_data(32, 0)
    with gin.unlock_config():
        gin.bind_parameter("make_dataset.crop_padding", 0)
    try:
        result = nas.train("DARTS_V2", x, y, x[:16], y[:16], num_cells=1, channels=4,
                           network_options={"auxiliary": False}, batch_size=16, epochs=1, drop_path=0.0,
                           test_time_augmentation="flip", save_every_steps=0, verbose=0)
    finally:
        gin.clear_config()
    assert result.results["test_time_augmentation"] is None and "test_accuracy_single_view" not in result.results
    assert "note: 'arrays' is not flipped in training (make_dataset.flip = 'auto'" in capsys.readouterr().out

