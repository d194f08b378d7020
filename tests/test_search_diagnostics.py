"""Does the attention learn? Diagnostics, confidence, telemetry and the attention options."""

import csv
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from asmnas_tf.layers import op_math
from asmnas_tf.layers.mixed_edge import MixedEdge
from asmnas_tf.training.optim import CoupledSGD
from asmnas_tf.space.genotype import to_dict
from asmnas_tf.space.primitives import PRIMITIVES
from asmnas_tf.supernet import diagnostics
from asmnas_tf.supernet.builder import build_supernet
from asmnas_tf.supernet.confidence import selection_confidence, summary_line
from asmnas_tf.supernet.model import compile_supernet
from asmnas_tf.supernet.runner import search, search_datasets
from asmnas_tf.supernet.selection import mean_coefficients, select_genotype
from asmnas_tf.data import as_image_arrays

K = len(PRIMITIVES)


def _samples(n, mean, noise, seed=0):
    """Per-sample coefficients [n, 1, 14, K] around `mean` [K] (same for every edge)."""
    rng = np.random.default_rng(seed)
    return np.asarray(mean)[None, None, None, :] + noise * rng.standard_normal((n, 1, 14, K))


def test_bootstrap_confidence_is_one_for_separated_ops_and_half_for_equal_ones():
    separated = np.full(K, 0.1)
    separated[4] = 0.3
    record = selection_confidence(_samples(400, separated, 0.01), resamples=500)
    assert record["argmax_confidence"].shape == (1, 14)
    assert np.all(record["argmax_confidence"] == 1.0)
    np.testing.assert_allclose(record["margin"], 0.2, atol=0.01)
    # Two ops with equal coefficients in every sample, the rest below: the
    # choice between them is a coin toss, so half credit in every resample.
    tied = _samples(400, np.full(K, 0.05), 0.01, seed=1)
    tied[..., 4] = tied[..., 5] = 0.3 + 0.05 * np.random.default_rng(2).standard_normal((400, 1, 14))
    record = selection_confidence(tied, resamples=300)
    np.testing.assert_allclose(record["argmax_confidence"], 0.5)
    assert "of 14 edges chosen" in summary_line(record)


def test_standard_error_is_numpys():
    samples = _samples(50, np.full(K, 0.125), 0.02, seed=3)
    record = selection_confidence(samples, resamples=10)
    np.testing.assert_allclose(record["stderr"], samples.std(axis=0, ddof=1) / np.sqrt(50), rtol=1e-12)
    np.testing.assert_allclose(record["mean"], samples.mean(axis=0), rtol=1e-12)


def test_confidence_without_per_sample_spread_is_not_invented():
    alpha = np.tile(np.linspace(0.05, 0.2, K) / np.linspace(0.05, 0.2, K).sum(), (30, 1, 14, 1))
    record = selection_confidence(alpha)
    assert record["per_sample"] is False and record["argmax_confidence"] is None
    assert "not defined" in summary_line(record)


def test_top2_confidence_per_node():
    mean = np.full(K, 0.1)
    mean[4] = 0.3
    cell = np.tile(mean, (14, 1))
    cell[:, 4] += np.linspace(0.1, 0.0, 14)  # the lower sources clearly first at every node
    rng = np.random.default_rng(0)
    samples = cell[None, None] + 0.005 * rng.standard_normal((200, 1, 14, K))
    record = selection_confidence(samples, resamples=200, rule="top2")
    assert record["top2_confidence"].shape == (1, 4)
    assert np.all(record["top2_confidence"] == 1.0)


def test_entropy_and_parameter_free_share_equal_hand_computation():
    coeffs = np.full((1, 14, K), 1.0 / K)
    coeffs[0, 0] = [0.5, 0.5, 0, 0, 0, 0, 0, 0]  # entropy log 2 / log 8 = 1/3
    coeffs[0, 1] = np.eye(K)[3]  # skip: entropy 0
    coeffs[0, 2] = np.eye(K)[5]  # sep_conv_5x5
    expected_entropy = (1.0 / 3.0 + 0.0 + 0.0 + 11 * 1.0) / 14
    assert diagnostics.normalized_entropy(coeffs) == pytest.approx(expected_entropy, abs=1e-12)
    # argmax: edge 0 -> zero (first of a tie), edge 1 -> skip, edge 2 -> sep5, the
    # 11 uniform edges -> zero (argmax of a tie is the first): 13 of 14 parameter-free.
    assert diagnostics.parameter_free_share(coeffs) == pytest.approx(13 / 14)
    other = coeffs.copy()
    other[0, 2] = np.eye(K)[1]
    assert diagnostics.changed_edges(coeffs, other) == 1
    assert diagnostics.argmax_agreement(coeffs, other) == pytest.approx(13 / 14)
    assert diagnostics.mean_abs_drift(coeffs, other) == pytest.approx(2.0 / (14 * K))


def test_zero_output_init_starts_uniform_and_torch_init_does_not():
    x = tf.random.stateless_normal((4, 6, 6, 4), seed=(1, 2))
    _, coeffs = MixedEdge(4, 1, 8, attention_init="zero_output")(x, training=False)
    np.testing.assert_array_equal(np.asarray(coeffs), np.full((4, K), 1.0 / K, "float32"))
    _, coeffs = MixedEdge(4, 1, 8)(x, training=False)
    assert np.ptp(np.asarray(coeffs)) > 1e-4


def test_pre_bn_embedding_is_the_mean_before_the_last_batch_norm():
    # Seeded weights: a random convolution's pre-BN batch mean can lie
    # arbitrarily close to 0 (an unseeded draw gave 7e-4 once in CI-like runs).
    keras.utils.set_random_seed(5)
    x = tf.random.stateless_normal((3, 6, 6, 4), seed=(3, 4)) + 0.7
    edge = MixedEdge(4, 1, 8, embedding="pre_bn")
    edge(x, training=False)
    e = edge.embeddings(x)
    pre, post = np.asarray(e["pre_bn"]), np.asarray(e["post_bn"])
    index = PRIMITIVES.index
    np.testing.assert_allclose(pre[:, index("skip_connect")], np.mean(np.asarray(x), axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(pre[:, index("max_pool_3x3")],
                               np.mean(np.asarray(op_math.max_pool_3x3(x, 1)), axis=(1, 2, 3)), rtol=1e-5)
    assert np.all(pre[:, index("zero")] == 0) and np.all(post[:, index("zero")] == 0)
    # Training-mode BatchNorm: every BN'd op's post-BN embedding has batch mean 0.
    post_train = np.asarray(edge.embeddings(x, training=True)["post_bn"])
    bn_ops = [index(n) for n in PRIMITIVES if n not in ("zero", "skip_connect")]
    np.testing.assert_allclose(post_train[:, bn_ops].mean(axis=0), 0.0, atol=1e-5)
    assert np.all(np.abs(pre[:, bn_ops].mean(axis=0)) > 1e-3)


def test_attention_lr_multiplier_scales_only_the_attention_update():
    x = np.random.default_rng(0).random((8, 8, 8, 1)).astype("float32")
    y = np.arange(8) % 4
    steps = {}
    for m in (1.0, 10.0):
        tf.keras.utils.set_random_seed(7)
        model = build_supernet((8, 8, 1), 4, num_cells=1, channels=4, attention_hidden_units=4,
                               attention_lr_multiplier=m)
        compile_supernet(model, CoupledSGD(learning_rate=10.0, momentum=0.0, l2=0.0))
        edge = next(layer for layer in model.layers if isinstance(layer, MixedEdge))
        before = np.asarray(edge.kernel).copy()
        model.train_step((tf.constant(x), tf.constant(y)))
        steps[m] = (np.asarray(edge.kernel) - before, edge.attention_start())
    (d1, start), (d10, _) = steps[1.0], steps[10.0]
    # Differences of float32 weights: exact to their rounding (~1e-7 here).
    np.testing.assert_allclose(d10[:start], d1[:start], rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(d10[start:], 10.0 * d1[start:], rtol=1e-3, atol=1e-5)
    assert np.abs(d1[start:]).max() > 0


@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (128, 8, 8, 1)).astype("uint8")
    y = rng.integers(0, 4, 128)
    model_dir = tmp_path_factory.mktemp("search")
    result = search(x, y, epochs=2, batch_size=16, num_cells=2, channels=4, telemetry_samples=32,
                    supernet_options={"attention_hidden_units": 8}, model_dir=str(model_dir), verbose=0)
    return x, y, model_dir, result


def test_per_epoch_genotype_is_the_selection_on_the_subset(tiny_search):
    x, y, model_dir, result = tiny_search
    lines = [json.loads(line) for line in (model_dir / "genotypes.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    # By hand: the final weights on the first 32 selection images.
    _, _, _, _, subset = search_datasets(as_image_arrays(x, y), 16, 256, 0, telemetry_samples=32)
    mean, count, _ = mean_coefficients(result.model, subset)
    assert count == 32
    np.testing.assert_allclose(lines[-1]["coefficients"], mean, atol=1e-6)
    assert lines[-1]["genotype"] == to_dict(select_genotype(mean, "argmax", lines[-1]["genotype"]["source"]))
    assert lines[-1]["coefficient_entropy"] == pytest.approx(diagnostics.normalized_entropy(mean), abs=1e-6)


def test_history_has_the_telemetry_columns_and_no_empty_ones(tiny_search):
    _, _, model_dir, result = tiny_search
    with open(model_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    columns = set(rows[0])
    assert {"coefficient_entropy", "parameter_free_share", "argmax_changes", "attention_grad_norm",
            "ops_grad_norm", "embedding_std"} <= columns
    assert not [c for c in columns if c.startswith("val_")]
    assert all(value not in ("", "NA") for row in rows for value in row.values())


def test_report_compares_with_the_initial_selection(tiny_search):
    _, _, model_dir, result = tiny_search
    report = json.loads((model_dir / "diagnostics.json").read_text())
    from asmnas_tf.rundir.run_dir import RunDir

    initial = RunDir(model_dir).read_attention(initial=True).coefficients
    final = RunDir(model_dir).read_attention().coefficients
    assert report["initial_final_agreement"] == pytest.approx(diagnostics.argmax_agreement(initial, final))
    assert report["mean_abs_drift"] == pytest.approx(diagnostics.mean_abs_drift(initial, final), abs=1e-7)
    attention = json.loads((model_dir / "attention.json").read_text())
    assert len(attention["cells"][0]["argmax_confidence"]) == 14
    assert report["choices"] == 28 and 0 <= report["confident_choices"] <= 28


def _learn_edge_towards(op, seed, multiplier, steps=60):
    """Train one edge's T1..T4 (the ops frozen) so that its mix matches op `op`'s own output.

    The task where one op is clearly best: the target is o_k(x) itself,
    computed by the edge with its coefficients replaced by one-hot k. SGD at
    the paper's 0.025, momentum 0.9; the gradient goes through the edge's
    own `scale_gradient` (the attention learning-rate multiplier).
    """
    tf.keras.utils.set_random_seed(seed)
    edge = MixedEdge(4, 1, 8, attention_lr_multiplier=multiplier)
    x = tf.random.stateless_normal((16, 8, 8, 4), seed=(seed, 1))
    edge(x, training=False)
    start = edge.attention_start()
    optimizer = CoupledSGD(learning_rate=0.025, momentum=0.9, l2=0.0)
    optimizer.build([edge.kernel])
    k = PRIMITIVES.index(op)
    initial = np.asarray(edge(x, training=False)[1]).mean(axis=0)
    for _ in range(steps):
        edge.replacement = tf.constant(k)
        target = tf.stop_gradient(edge(x, training=False)[0])
        edge.replacement = None
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((edge(x, training=False)[0] - target) ** 2)
        gradient = edge.scale_gradient(tape.gradient(loss, edge.kernel))
        optimizer.apply_gradients([(tf.concat([tf.zeros([start]), gradient[start:]], 0), edge.kernel)])
    return initial, np.asarray(edge(x, training=False)[1]).mean(axis=0)


def test_forced_attention_learns_the_best_op_from_any_initialisation():
    k = PRIMITIVES.index("max_pool_3x3")
    for seed in (0, 1, 2):
        initial, final = _learn_edge_towards("max_pool_3x3", seed, multiplier=10.0)
        assert int(np.argmax(initial)) != k  # initialisation chose another op ...
        assert int(np.argmax(final)) == k  # ... training moves every seed to the same, right one
        # and as far as eq. 4.4-4.5 allow: z_k = 1, the others 0: e / (e + 7).
        assert final[k] == pytest.approx(np.e / (np.e + 7), abs=2e-3)
    # The paper's learning rate, same steps: the same direction, a third of the way.
    initial, final = _learn_edge_towards("max_pool_3x3", 0, multiplier=1.0)
    assert int(np.argmax(final)) == k and final[k] - initial[k] < (np.e / (np.e + 7) - initial[k]) / 2
