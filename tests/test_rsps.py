"""RSPS (Li & Talwalkar 2019): one sampled path per step, best sampled architecture kept."""

import numpy as np
import tensorflow as tf

from asmnas_tf.layers.mixed_edge import MixedEdge
from asmnas_tf.space.primitives import PRIMITIVES
from asmnas_tf.supernet import rsps
from asmnas_tf.supernet.builder import PATH_SAMPLER, build_supernet
from asmnas_tf.supernet.model import compile_supernet
from asmnas_tf.training.optim import CoupledSGD

# The kernel pieces of each op of an edge (`mixed_edge._conv_piece_shapes`).
OP_PIECES = {"sep_conv_3x3": "sep3_", "sep_conv_5x5": "sep5_", "dil_conv_3x3": "dil3_",
             "dil_conv_5x5": "dil5_", "skip_connect": "skip_"}


def _model(seed=0):
    model = build_supernet((8, 8, 1), 4, num_cells=2, channels=4, mixing="path", path_seed=seed)
    compile_supernet(model, CoupledSGD(learning_rate=0.1, momentum=0.0, l2=0.0))
    return model


def test_one_path_per_step_gets_the_gradient():
    model = _model(seed=5)
    edges = [layer for layer in model.layers if isinstance(layer, MixedEdge)]
    x = tf.constant(np.random.default_rng(0).random((8, 8, 8, 1)), tf.float32)
    y = tf.constant(np.arange(8) % 4)
    path = tf.random.stateless_uniform((2, 14), seed=[5, 0], minval=0, maxval=8, dtype=tf.int32).numpy().ravel()
    with tf.GradientTape() as tape:
        loss = model.cross_entropy(y, model(x, training=True)["logits"])
    gradients = tape.gradient(loss, [edge.kernel for edge in edges])
    assert int(model.get_layer(PATH_SAMPLER).step.numpy()) == 1
    trained_ops = 0
    for edge, gradient, k in zip(edges, gradients, path):
        pieces = edge.unpack(gradient)
        with_gradient = {name for name, g in pieces.items() if np.any(np.asarray(g) != 0)}
        op = PRIMITIVES[k]
        prefix = OP_PIECES.get(op)
        has_weights = prefix is not None and any(name.startswith(prefix) for name in pieces)
        # Exactly the sampled op's pieces have a gradient; every other op's are exactly 0.
        assert with_gradient == ({n for n in pieces if n.startswith(prefix)} if has_weights else set()), (edge.name, op)
        trained_ops += bool(with_gradient)
    assert trained_ops == sum(1 for edge, k in zip(edges, path) if PRIMITIVES[k] in OP_PIECES and
                              any(n.startswith(OP_PIECES[PRIMITIVES[k]]) for n in edge.unpack(edge.kernel)))
    assert trained_ops > 0


def test_inference_uses_the_fixed_architecture():
    model = _model()
    ops = rsps.sample_candidates(2, seed=1, count=1)[0]
    model.get_layer(PATH_SAMPLER).architecture.assign(ops.astype(np.int32))
    x = np.zeros((3, 8, 8, 1), np.float32)
    coefficients = np.asarray(model(x, training=False)["coefficients"])  # [B, L, 14, |O|]
    np.testing.assert_array_equal(np.argmax(coefficients[0], axis=-1), ops)
    assert np.all(coefficients.sum(axis=-1) == 1.0) and model.get_layer(PATH_SAMPLER).step.numpy() == 0


def test_best_candidate_and_its_genotype():
    assert rsps.best_candidate([0.2, 0.5, 0.5, 0.1]) == 1  # the first of equals
    ops = np.arange(28).reshape(2, 14) % 8
    genotype = rsps.as_genotype(ops, {"method": "rsps", "seed": 0})
    assert [[PRIMITIVES.index(e.op) for e in cell.edges] for cell in genotype.cells] == ops.tolist()
    a, b = rsps.sample_candidates(2, 3, 4), rsps.sample_candidates(2, 3, 4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and not np.array_equal(a[0], a[1])


def test_rank_candidates_is_each_architectures_accuracy():
    model = _model()
    rng = np.random.default_rng(2)
    x, y = rng.random((24, 8, 8, 1)).astype("float32"), rng.integers(0, 4, 24)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    candidates = rsps.sample_candidates(2, 0, 3)
    accuracies = rsps.rank_candidates(model, dataset, candidates)
    for ops, accuracy in zip(candidates, accuracies):
        model.get_layer(PATH_SAMPLER).architecture.assign(ops.astype(np.int32))
        logits = np.asarray(model(x, training=False)["logits"])
        assert accuracy == np.mean(np.argmax(logits, axis=-1) == y)
