"""The search's remedies do what they say (supernet/remedies.py, selection.py, perturbation.py, model.py)."""

import numpy as np
import pytest
import tensorflow as tf

from asmnas_tf.errors import UserError
from asmnas_tf.layers.mixed_edge import MixedEdge
from asmnas_tf.training.optim import CoupledSGD
from asmnas_tf.space.search_space import DARTS_SPACE, make_space
from asmnas_tf.supernet.builder import build_supernet
from asmnas_tf.supernet.model import compile_supernet
from asmnas_tf.supernet.perturbation import perturbation_scores
from asmnas_tf.supernet.remedies import SearchRemedies
from asmnas_tf.supernet.selection import select_genotype

SMALL = make_space(("zero", "skip_connect", "sep_conv_3x3"), 2)


def _attention_parts(model):
    return {layer.name: (np.asarray(layer.kernel)[layer.attention_start():].copy(),
                         np.asarray(layer.kernel)[:layer.attention_start()].copy())
            for layer in model.layers if isinstance(layer, MixedEdge)}


def test_warmup_keeps_the_attention_bit_identical_then_trains_it():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 16)
    model = build_supernet((8, 8, 1), 3, num_cells=1, channels=4, space=SMALL)
    model.attention_warmup_steps = 3
    compile_supernet(model, CoupledSGD(learning_rate=0.1, momentum=0.9, l2=3e-4))
    before = _attention_parts(model)
    model.fit(x, y, batch_size=8, epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)
    model.fit(x, y, batch_size=8, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
    after_warmup = _attention_parts(model)
    for name, (attention, weights) in before.items():
        np.testing.assert_array_equal(after_warmup[name][0], attention)  # bit for bit, decay included
        assert np.max(np.abs(after_warmup[name][1] - weights)) > 0  # the ops trained
    model.fit(x, y, batch_size=8, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
    moved = [np.max(np.abs(_attention_parts(model)[name][0] - attention)) for name, (attention, _) in before.items()]
    assert min(moved) > 0  # the 4th step trains T1..T4


def _coefficients():
    mean = np.full((2, 5, 3), 0.1)
    mean[:, :, 0] = 0.5  # zero wins every edge...
    mean[:, :, 1] = [0.45, 0.2, 0.44, 0.2, 0.3]  # ...skip second on edges 0, 2 and 4
    mean[:, :, 2] = [0.3, 0.4, 0.2, 0.3, 0.1]
    return mean


def test_exclude_zero_never_selects_zero():
    mean = _coefficients()
    assert {e.op for e in select_genotype(mean, "argmax", space=SMALL).cells[0].edges} == {"zero"}
    for rule in ("argmax", "top2"):
        genotype = select_genotype(mean, rule, space=SMALL, exclude_zero=True)
        assert all(e.op != "zero" for cell in genotype.cells for e in cell.edges)
    ops = [e.op for e in select_genotype(mean, "argmax", space=SMALL, exclude_zero=True).cells[0].edges]
    assert ops == ["skip_connect", "sep_conv_3x3", "skip_connect", "sep_conv_3x3", "skip_connect"]


def test_the_cap_holds_and_gives_up_the_cheapest_edges():
    ops = select_genotype(_coefficients(), "argmax", space=SMALL, exclude_zero=True, max_parameter_free=1).cells[1]
    # Skip's margins over sep: edge 0 0.15, edge 2 0.24, edge 4 0.2: edges 0 and 4 switch, edge 2 keeps skip.
    assert [e.op for e in ops.edges] == ["sep_conv_3x3", "sep_conv_3x3", "skip_connect", "sep_conv_3x3",
                                         "sep_conv_3x3"]
    assert ops.edges[0].weight == pytest.approx(0.3)
    for cap in (0, 2):
        genotype = select_genotype(_coefficients(), "argmax", space=SMALL, exclude_zero=True, max_parameter_free=cap)
        assert all(sum(e.op == "skip_connect" for e in cell.edges) == cap for cell in genotype.cells)
    # DARTS space, top2: at most 2 parameter-free ops among a cell's 8 kept edges.
    rng = np.random.default_rng(1)
    mean = rng.dirichlet(np.ones(8), size=(3, 14))
    mean[..., 3] += 0.5  # skip everywhere
    genotype = select_genotype(mean, "top2", space=DARTS_SPACE, max_parameter_free=2)
    for cell in genotype.cells:
        assert sum(e.op in ("max_pool_3x3", "avg_pool_3x3", "skip_connect") for e in cell.edges) <= 2
        assert len(cell.edges) == 8


@pytest.mark.parametrize("remedies, message", [
    (SearchRemedies(attention_warmup=1.0), "search_remedies.attention_warmup=1.0 is not a share of the search in [0, 1)"),
    (SearchRemedies(selection="magnitude"), "search_remedies.selection='magnitude' is not one of coefficients, perturbation"),
    (SearchRemedies(perturbation_top_k=0), "search_remedies.perturbation_top_k=0 is not an int >= 1"),
    (SearchRemedies(max_parameter_free=-1), "search_remedies.max_parameter_free=-1 is not an int >= 0 or None"),
    (SearchRemedies(skip_dropout=1.0), "search_remedies.skip_dropout=1.0 is not a dropout rate in [0, 1)"),
])
def test_bad_remedies_are_one_line(remedies, message):
    with pytest.raises(UserError) as info:
        remedies.check(DARTS_SPACE)
    assert message in str(info.value)
    with pytest.raises(UserError, match="exclude_zero=True needs zero in search_space.primitives"):
        SearchRemedies(exclude_zero=True).check(make_space(("skip_connect", "sep_conv_3x3"), 2))
    with pytest.raises(UserError, match="max_parameter_free=1 needs an op with parameters"):
        SearchRemedies(max_parameter_free=1).check(make_space(("zero", "skip_connect"), 2))
    with pytest.raises(UserError, match="skip_dropout=0.2 needs skip_connect in search_space.primitives"):
        SearchRemedies(skip_dropout=0.2).check(make_space(("zero", "sep_conv_3x3"), 2))
    with pytest.raises(UserError, match="RSPS ranks sampled architectures"):
        SearchRemedies(skip_dropout=0.2).check(DARTS_SPACE, "rsps")


def test_skip_dropout_drops_skip_in_training_only_with_a_mask_fixed_by_edge_and_batch():
    x = tf.constant(np.random.default_rng(4).uniform(0.5, 1.5, size=(16, 8, 8, 4)).astype("float32"))
    pair = ("skip_connect", "sep_conv_3x3")  # uniform mixing: 0.5 skip + 0.5 sep

    def edge(name, rate):
        layer = MixedEdge(4, 1, mixing="uniform", primitives=pair, skip_dropout=rate, name=name)
        layer.build(x.shape)
        layer.kernel.assign(tf.linspace(-0.5, 0.5, layer.kernel.shape[0]))  # the same sep weights in each
        return layer

    plain, dropping, other = edge("e0", 0.0), edge("e1", 0.25), edge("e2", 0.25)
    np.testing.assert_array_equal(np.asarray(dropping(x, training=False)[0]),
                                  np.asarray(plain(x, training=False)[0]))  # inference: no dropout
    both = np.asarray(plain(x, training=True)[0])

    def skip_output(layer):  # 2 (mixed - mixed without dropout) + x
        return 2.0 * (np.asarray(layer(x, training=True)[0]) - both) + np.asarray(x)

    dropped = skip_output(dropping)
    kept = np.abs(dropped) > 0.1  # x >= 0.5: a kept element is x / 0.75, a dropped one ~0
    assert abs(kept.mean() - 0.75) < 0.03  # 4,096 draws: 0.03 is 4.4 standard deviations
    np.testing.assert_allclose(dropped[kept], np.asarray(x)[kept] / 0.75, rtol=1e-4)  # inverted dropout
    np.testing.assert_allclose(dropped[~kept], 0.0, atol=1e-4)
    np.testing.assert_array_equal(skip_output(dropping), dropped)  # same edge, same batch: same mask
    assert np.mean((np.abs(skip_output(other)) > 0.1) != kept) > 0.2  # another edge, another mask
    model = build_supernet((8, 8, 1), 3, num_cells=3, channels=4, space=SMALL, skip_dropout=0.25)
    rates = {layer.stride: layer._spec(True).skip_dropout for layer in model.layers if isinstance(layer, MixedEdge)}
    assert rates == {1: 0.25, 2: 0.0}  # a reduction's strided skip has parameters: not dropped


def test_perturbation_scores_what_removal_costs():
    """Removing `zero` (which adds nothing) costs exactly nothing; ops outside the top k are not scored."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 8, 8, 1)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("int64")
    model = build_supernet((8, 8, 1), 2, num_cells=1, channels=4, space=SMALL)
    compile_supernet(model, CoupledSGD(learning_rate=0.05))
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    mean = np.asarray(model(x, training=False)["coefficients"]).mean(axis=0)
    scores, baseline = perturbation_scores(model, x, y, mean, SMALL, top_k=2)
    assert scores.shape == (1, 5, 3)
    top2 = np.argsort(-mean, axis=-1, kind="stable")[..., :2]
    for edge in range(5):
        for k in range(3):
            if k in top2[0, edge]:
                assert np.isfinite(scores[0, edge, k])
            else:
                assert scores[0, edge, k] == -np.inf
        if 0 in top2[0, edge]:
            assert scores[0, edge, 0] == 0.0
    # One score recomputed by hand: the edge with op k removed, through Keras's predict.
    edge = model.get_layer("cell00_edge1to2")
    assert edge.replacement is None  # reset: the model's later traces keep the fused training edge
    k = int(top2[0, 1, 0])
    edge.replacement = tf.Variable(-k - 2, dtype=tf.int32, trainable=False)
    removed = np.mean(np.argmax(model.predict(x, verbose=0)["logits"], axis=-1) == y)
    edge.replacement = None
    assert scores[0, 1, k] == pytest.approx(baseline - removed)
    genotype = select_genotype(scores, "argmax", space=SMALL)
    assert [SMALL.index(e.op) for e in genotype.cells[0].edges] == list(np.argmax(scores[0], axis=-1))
