"""The DARTS baseline (paper §3, eq. 3.1 and 3.4) on ASM-NAS's supernet.

softmax(alpha) mixing, the second-order architecture gradient against an
exact double-backward reference, the first-order Adam step, tiny searches
(both orders, both alpha sharings) and `run_search(method='darts2')`.
"""

import csv
import json

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from asmnas_tf.commands import cli

from asmnas_tf.layers import op_math

from asmnas_tf.rundir import run_dir

from asmnas_tf.supernet import runner as search
from asmnas_tf.layers.alphas import ArchitectureParameters
from asmnas_tf.supernet.darts import ARCHITECTURE, CoupledAdam, DartsModel, compile_darts, step_functions
from asmnas_tf.host.distribute import make_strategy
from asmnas_tf.space.genotype import read_genotype
from asmnas_tf.layers.mixed_edge import MixedEdge
from asmnas_tf.training.optim import CoupledSGD
from asmnas_tf.space.primitives import EDGES, PRIMITIVES
from asmnas_tf.supernet.selection import mean_coefficients, select_genotype
from asmnas_tf.supernet.builder import build_supernet
from test_mixed_edge import C, _reference, _reference_weights
from test_search_training import _learnable_images


def _softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("stride", [1, 2])
def test_alpha_mixing_is_the_softmax_weighted_sum_of_the_reference_ops(stride):
    x = tf.constant(np.random.default_rng(0).normal(size=(3, 7, 7, C)).astype("float32"))
    alpha = np.random.default_rng(1).normal(size=len(PRIMITIVES)).astype("float32")
    candidates, attention = _reference(stride, 8)
    attention([op(x, training=False) for op in candidates.values()])
    edge = MixedEdge(C, stride, mixing="alpha")
    edge(x, tf.constant(alpha))
    ref_w = _reference_weights(candidates, attention, stride)
    edge.kernel.assign(np.concatenate([np.asarray(ref_w[name]).ravel() for name, _, _ in edge.pieces]))

    mixed, coeffs = edge(x, tf.constant(alpha), training=True)
    weights = _softmax(alpha.astype("float64"))
    expected = sum(weights[k] * np.asarray(candidates[name](x, training=True), "float64")
                   for k, name in enumerate(PRIMITIVES) if name != "zero")
    np.testing.assert_allclose(np.asarray(coeffs), np.tile(weights, (3, 1)), atol=1e-7)
    np.testing.assert_allclose(np.asarray(mixed), expected, atol=1e-5)
    with pytest.raises(ValueError, match="alpha row"):
        edge(x)


def _tiny_darts(num_cells=1, sharing="per_cell", second_order=True, lr=0.1, momentum=0.9, l2=3e-4, seed=0):
    keras.utils.set_random_seed(seed)
    model = build_supernet((8, 8, 1), 4, num_cells=num_cells, channels=4, mixing="alpha", alpha_sharing=sharing)
    compile_darts(model, CoupledSGD(learning_rate=lr, momentum=momentum, l2=l2), CoupledAdam(), second_order)
    return model


def _batches(n=8, seed=0):
    x, y = _learnable_images(2 * n, seed=seed)
    return tf.constant(x[:n]), tf.constant(y[:n]), tf.constant(x[n:]), tf.constant(y[n:])


def _snapshot(variables):
    return [np.array(v) for v in variables]


def _exact_batch_moments(x):
    """Batch moments whose second derivatives are exact.

    tf.nn.moments (behind keras.ops.moments) stops the gradient of the mean
    inside the variance: first derivatives are right, but a double backward
    misses the mean's dependence, 2% off here. The forward values are the same.
    """
    mean = keras.ops.mean(x, axis=[0, 1, 2])
    return mean, keras.ops.mean(keras.ops.square(x - mean), axis=[0, 1, 2])


def _float64_darts_model(xi, momentum, l2, hvp_radius):
    """Two mixed edges (stride 1, then 2) on alpha rows, pooled, classified: float64."""
    keras.utils.set_random_seed(0)
    d = "float64"
    images = keras.Input((8, 8, C), dtype=d)
    alpha = ArchitectureParameters(1, "per_cell", dtype=d, name=ARCHITECTURE)(images)
    h, c1 = MixedEdge(C, 1, mixing="alpha", dtype=d)(images, alpha[0, 0])
    h, c2 = MixedEdge(C, 2, mixing="alpha", dtype=d)(h, alpha[0, 1])
    logits = keras.layers.Dense(4, dtype=d)(keras.layers.GlobalAveragePooling2D(dtype=d)(h))
    model = DartsModel(inputs=images, outputs={"logits": logits, "coefficients": keras.ops.stack([c1, c2], 1)})
    model.cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=d)
    compile_darts(model, CoupledSGD(learning_rate=xi, momentum=momentum, l2=l2), CoupledAdam(), True, hvp_radius)
    return model


def _smooth_relu(x):
    return x * keras.ops.sigmoid(4.0 * x)


@pytest.mark.parametrize("smooth", [False, True])
def test_second_order_gradient_matches_exact_double_backward(monkeypatch, smooth):
    """The unrolled gradient with its finite-difference H v against autodiff through the inner step.

    With ReLU and max-pool, DARTS's radius eps * ||v|| = 0.01 crosses kinks of
    this tiny network (measured: 50% off), so the formula is checked at a
    radius of 1e-5; with the kinks smoothed away (`smooth`: relu -> x
    sigmoid(4x), max -> average pool) DARTS's own radius is checked.
    """
    monkeypatch.setattr(op_math, "batch_moments", _exact_batch_moments)
    if smooth:
        monkeypatch.setattr(keras.ops, "relu", _smooth_relu)
        monkeypatch.setattr(op_math, "max_pool_3x3", op_math.avg_pool_3x3)
    xi, momentum, l2 = 0.5, 0.9, 3e-4
    radius = 0.01 if smooth else 1e-5
    model = _float64_darts_model(xi, momentum, l2, hvp_radius=radius)
    rng = np.random.default_rng(3)
    x, y = _learnable_images(16)
    x = np.tile(x, (1, 1, 1, C)) + rng.normal(size=(16, 8, 8, C))
    x_train, y_train, x_val, y_val = tf.constant(x[:8]), tf.constant(y[:8]), tf.constant(x[8:]), tf.constant(y[8:])
    # A non-zero momentum buffer, so the virtual step's mu * buf term is tested too.
    buffers = [rng.normal(scale=0.1, size=v.shape) for v in model.weight_variables]
    for v, b in zip(model.weight_variables, buffers):
        model.optimizer.momentums[model.optimizer._get_variable_index(v)].assign(b)
    alpha_var = model.architecture_variables[0]
    alpha_var.assign(rng.normal(size=alpha_var.shape))  # a non-trivial softmax

    # Exact reference: d/d alpha L_val(w - xi (mu buf + grad_w L_train(w, alpha) + wd w), alpha),
    # by differentiating through the inner gradient (nested tapes).
    def loss(weights, alpha, x, y):
        it = iter(weights)
        values = [alpha if v is alpha_var else next(it) for v in model.trainable_variables]
        out, _ = model.stateless_call(values, list(model.non_trainable_variables), x, training=True)
        return model.cross_entropy(y, out["logits"])

    w = [tf.convert_to_tensor(v) for v in model.weight_variables]
    a = tf.convert_to_tensor(alpha_var)
    with tf.GradientTape() as outer:
        outer.watch(a)
        with tf.GradientTape() as inner:
            inner.watch(w)
            train_loss = loss(w, a, x_train, y_train)
        g = inner.gradient(train_loss, w)
        unrolled = [wi - xi * (momentum * b + gi + l2 * wi) for wi, b, gi in zip(w, buffers, g)]
        val_loss = loss(unrolled, a, x_val, y_val)
    exact = outer.gradient(val_loss, a).numpy()
    with tf.GradientTape() as tape:  # alpha's direct effect at w' alone (first-order part)
        tape.watch(a)
        direct = tape.gradient(loss([tf.stop_gradient(u) for u in unrolled], a, x_val, y_val), a).numpy()

    def errors():
        (ours,), ours_val_loss = model.architecture_gradients(x_train, y_train, x_val, y_val)
        assert abs(float(ours_val_loss) - float(val_loss)) < 1e-8
        ours = ours.numpy()
        whole = np.linalg.norm(ours - exact) / np.linalg.norm(exact)
        correction = np.linalg.norm(ours - exact) / np.linalg.norm(exact - direct)  # of the -xi H v term
        return whole, correction

    whole, correction = errors()
    print(f"\n{'smooth' if smooth else 'relu'} net, float64, radius eps*||v|| = {radius:g}: second-order "
          f"grad_alpha vs exact double backward: relative error {whole:.1e} (of the -xi*H*v term: "
          f"{correction:.1e}; that term is {np.linalg.norm(exact - direct) / np.linalg.norm(exact):.0%} of the gradient)")
    assert np.linalg.norm(exact - direct) > 0.1 * np.linalg.norm(exact)  # the correction matters here
    if smooth:
        # The finite difference is O(radius^2) on smooth functions: small at
        # DARTS's radius, and a quarter of it at half the radius.
        assert whole < 1e-3 and correction < 1e-2
        model.hvp_radius = radius / 2
        half_whole, half_correction = errors()
        print(f"  at radius {radius / 2:g}: relative error {half_whole:.1e} (of the term: {half_correction:.1e})")
        assert 3.0 < correction / half_correction < 5.0
    else:
        assert whole < 1e-6 and correction < 1e-6
        model.hvp_radius = 0.01
        print("  the same at DARTS's radius 0.01: relative error %.1e (of the term: %.1e)" % errors())

    # The architecture step changes alpha and nothing else (no restore needed: stateless).
    weights_before = _snapshot(model.weight_variables + model.non_trainable_variables)
    alpha_before = np.array(alpha_var)
    model.architecture_step(x_train, y_train, x_val, y_val)
    for before, after in zip(weights_before, model.weight_variables + model.non_trainable_variables):
        np.testing.assert_array_equal(np.asarray(after), before)
    assert np.abs(np.asarray(alpha_var) - alpha_before).max() > 1e-5


def _replica_values(variable):
    """Every replica's copy of a (mirrored) variable, as numpy arrays."""
    value = variable.value
    return [np.asarray(v) for v in getattr(value, "values", [value])]


@pytest.mark.parametrize("replicas", [1, 2])
def test_second_order_step_functions_run_the_two_halves_separately(replicas):
    """Graph mode, under one or two replicas (the all-reduced virtual step and eps)."""
    strategy = make_strategy("mirrored") if replicas == 2 else tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == replicas
    with strategy.scope():
        model = _float64_darts_model(xi=0.1, momentum=0.9, l2=3e-4, hvp_radius=0.01)
    x, y = _learnable_images(16)
    x = np.tile(x, (1, 1, 1, C)).astype("float64")
    batch = tf.data.Dataset.from_tensors(((x[:8], y[:8]), (x[8:], y[8:])))
    batch = next(iter(strategy.experimental_distribute_dataset(batch)))
    steps = step_functions(model, strategy)
    weights, alpha = _snapshot(model.weight_variables), np.array(model.architecture_variables[0])
    steps["architecture"](batch)
    assert all(np.array_equal(np.asarray(v), w) for v, w in zip(model.weight_variables, weights))
    assert not np.array_equal(np.asarray(model.architecture_variables[0]), alpha)
    alpha = np.array(model.architecture_variables[0])
    steps["weight"](batch)
    assert not any(np.array_equal(np.asarray(v), w) for v, w in zip(model.weight_variables, weights))
    np.testing.assert_array_equal(np.asarray(model.architecture_variables[0]), alpha)
    for variable in model.trainable_variables:  # the replicas agree
        copies = _replica_values(variable)
        assert len(copies) == replicas and all(np.array_equal(c, copies[0]) for c in copies)


def test_first_order_alpha_update_is_torch_adam_on_the_validation_gradient():
    lr, b1, b2, eps, l2 = 3e-4, 0.5, 0.999, 1e-8, 1e-3
    model = _tiny_darts(num_cells=4, sharing="darts", second_order=False)
    x_train, y_train, x_val, y_val = _batches(seed=1)
    alphas = model.architecture_variables
    assert [v.name for v in alphas] == ["alpha_normal", "alpha_reduce"]
    with tf.GradientTape() as tape:
        val_loss = model.cross_entropy(y_val, model(x_val, training=True)["logits"])
    grads = [g.numpy().astype("float64") for g in tape.gradient(val_loss, alphas)]
    before = [np.array(v, "float64") for v in alphas]
    weights_before = _snapshot(model.weight_variables)

    model.architecture_step(x_train, y_train, x_val, y_val)
    for g, a0, var in zip(grads, before, alphas):
        g = g + l2 * a0  # coupled L2, then torch.optim.Adam's first step
        m, v = (1 - b1) * g, (1 - b2) * g ** 2
        expected = a0 - lr / (1 - b1) * m / (np.sqrt(v) / np.sqrt(1 - b2) + eps)
        np.testing.assert_allclose(np.asarray(var), expected, rtol=0, atol=1e-9)
        assert np.abs(np.asarray(var) - a0).max() > 1e-4  # both alphas moved (~lr per entry)
    for before_w, var in zip(weights_before, model.weight_variables):
        np.testing.assert_array_equal(np.asarray(var), before_w)


def test_shared_alphas_select_the_same_normal_and_reduction_cells():
    model = _tiny_darts(num_cells=4, sharing="darts", second_order=False)
    rng = np.random.default_rng(4)
    for var in model.architecture_variables:
        var.assign(rng.normal(size=var.shape).astype("float32"))
    x, _ = _learnable_images(6)
    # What mean_coefficients computes, eagerly (its predict would trace the model).
    mean = np.asarray(model(x, training=False)["coefficients"], "float64").mean(axis=0)
    assert mean.shape == (4, 14, 8)
    normal, reduce = (_softmax(np.asarray(v, "float64")) for v in model.architecture_variables)
    np.testing.assert_allclose(mean[[0, 3]], [normal, normal], atol=1e-6)  # cells 1, 2 reduce
    np.testing.assert_allclose(mean[[1, 2]], [reduce, reduce], atol=1e-6)
    for rule in ("argmax", "top2"):
        genotype = select_genotype(mean, rule, {"method": "darts1"})
        cells = genotype.cells
        assert [c.reduction for c in cells] == [False, True, True, False]
        assert cells[0].edges == cells[3].edges and cells[1].edges == cells[2].edges
        assert cells[0].edges != cells[1].edges
        assert len(cells[0].edges) == (14 if rule == "argmax" else 8)
    argmax_cell = select_genotype(mean, "argmax").cells[0]
    assert [e.op for e in argmax_cell.edges] == [PRIMITIVES[k] for k in np.argmax(normal, axis=1)]


def test_tiny_first_order_search_trains_and_selects():
    keras.utils.set_random_seed(0)
    x, y = _learnable_images(128)
    half = tf.data.Dataset.from_tensor_slices((x[:64], y[:64])).shuffle(64, seed=0).batch(16)
    other = tf.data.Dataset.from_tensor_slices((x[64:], y[64:])).shuffle(64, seed=1).batch(16)
    model = _tiny_darts(num_cells=1, second_order=False, lr=0.05)
    model.architecture_optimizer.learning_rate = 3e-3
    alpha_before = np.array(model.architecture_variables[0])
    history = model.fit(tf.data.Dataset.zip((half, other)), epochs=4, verbose=0).history
    print("\ndarts1 loss per epoch:", np.round(history["loss"], 3), "arch_loss:", np.round(history["arch_loss"], 3))
    assert history["loss"][-1] < 0.8 * history["loss"][0]
    assert history["arch_loss"][-1] < history["arch_loss"][0]
    assert all(np.isfinite(history["grad_norm_sq"]))
    alpha = np.asarray(model.architecture_variables[0])
    assert np.abs(alpha - alpha_before).max() > 1e-2  # 16 Adam steps at 3e-3

    mean, _, _ = mean_coefficients(model, tf.data.Dataset.from_tensor_slices(x[64:]).batch(64))
    np.testing.assert_allclose(mean, _softmax(alpha.astype("float64")), atol=1e-6)
    genotype = select_genotype(mean, "argmax", {"method": "darts1"})
    assert len(genotype.cells) == 1 and len(genotype.cells[0].edges) == 14
    assert [e.op for e in genotype.cells[0].edges] == [PRIMITIVES[k] for k in np.argmax(alpha[0], axis=1)]


def test_run_search_darts2_end_to_end(tmp_path):
    x, y = _learnable_images(256)
    images = np.clip(x * 60 + 100, 0, 255).astype(np.uint8)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=images, y_train=y, x_test=images[:8], y_test=y[:8])
    model_dir = str(tmp_path / "run")
    config = cli.parse_gin(["search/base.gin", "search/darts.gin"], [
        "load_arrays.dataset = 'npz'",
        f"load_arrays.path = '{path}'",
        "build_supernet.num_cells = 1",
        "build_supernet.channels = 4",
        "build_supernet.alpha_sharing = 'per_cell'",
        "architecture_optimizer.learning_rate = 3e-3",
        "search_optimizer.learning_rate = 0.05",
        "run_search.batch_size = 16",
        "run_search.epochs = 4",
        "run_search.verbose = 0",
        "make_dataset.crop_padding = 0",  # the quadrant classes of 8x8 images: no shifts, no flips
        "make_dataset.flip = False",
        "make_strategy.kind = 'default'",  # two replicas: see the step-function test
    ])
    try:
        run_dir.prepare(model_dir, config)
        result = search.run_search(model_dir)
    finally:
        gin.clear_config()
    genotype = read_genotype(f"{model_dir}/genotype.json", num_cells=1)
    assert genotype.source == {"method": "darts2", "dataset": "tiny", "seed": 0, "rule": "argmax"}
    assert len(genotype.cells[0].edges) == 14
    attention = json.loads((tmp_path / "run" / "attention.json").read_text())
    assert attention["num_samples"] == 128
    coefficients = np.array(attention["cells"][0]["coefficients"])
    np.testing.assert_allclose(coefficients.sum(axis=1), 1.0, atol=1e-6)
    assert np.abs(coefficients - 1 / 8).max() > 1e-3  # alpha trained (init: 1/8 within ~1e-4)
    # genotype.json is the argmax rule applied to attention.json, edge by edge,
    # and the returned coefficients are the ones written.
    chosen = {(e.source, e.target): e.op for e in genotype.cells[0].edges}
    assert [chosen[edge] for edge in EDGES] == [PRIMITIVES[k] for k in coefficients.argmax(axis=1)]
    np.testing.assert_allclose(result.coefficients[0], coefficients, atol=1e-8)
    assert result.genotype == genotype and result.model_dir == model_dir
    with open(tmp_path / "run" / "history.csv") as f:
        history = list(csv.DictReader(f))
    print("\ndarts2 run_search loss per epoch:", [round(float(row["loss"]), 3) for row in history])
    assert len(history) == 4 and float(history[-1]["loss"]) < 0.8 * float(history[0]["loss"])
    assert float(history[-1]["arch_loss"]) < float(history[0]["arch_loss"])
    assert result.timing["steps_timed"] == 31  # 8 steps of 16 an epoch (halves of 256), the first apart
