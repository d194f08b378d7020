"""Tests for the evaluation network: sizes, outputs, drop-path, saving."""

import json

import keras
import numpy as np
import pytest

from asmnas_tf.layers.aux_head import AuxiliaryHead, aux_pool_geometry
from asmnas_tf.layers.drop_path import DropPath, DropPathSchedule, drop_path_layers, set_drop_path_rate
from asmnas_tf.evaluation.model import AUX_LOGITS, LOGITS
from asmnas_tf.evaluation.builder import build_eval_net, resolve_genotype
from asmnas_tf.space.genotype import GenotypeError, from_dict
from asmnas_tf.layers.ops import Zero
from asmnas_tf.space.primitives import PRIMITIVES, reduction_indices
from asmnas_tf.evaluation.size_report import size_report

# A normal cell written by hand: every op kind, one node (4) with no kept edge
# (all `zero`), node 5 fed by node 4, and a concat that leaves node 3 out.
NORMAL_EDGES = [
    (0, 2, "sep_conv_3x3"), (1, 2, "skip_connect"),
    (0, 3, "dil_conv_3x3"), (2, 3, "avg_pool_3x3"),
    (0, 4, "zero"), (1, 4, "zero"),
    (1, 5, "max_pool_3x3"), (4, 5, "sep_conv_5x5"), (2, 5, "dil_conv_5x5"),
]
REDUCE_EDGES = [
    (0, 2, "max_pool_3x3"), (1, 2, "skip_connect"),
    (1, 3, "sep_conv_3x3"), (2, 3, "skip_connect"),
    (0, 4, "avg_pool_3x3"), (3, 4, "dil_conv_3x3"),
    (1, 5, "skip_connect"), (4, 5, "max_pool_3x3"),
]


def hand_genotype_dict(num_cells=15):
    reductions = reduction_indices(num_cells)
    cells = []
    for i in range(num_cells):
        reduction = i in reductions
        edges = REDUCE_EDGES if reduction else NORMAL_EDGES
        cells.append({
            "reduction": reduction,
            "edges": [{"from": s, "to": t, "op": op, "weight": None} for s, t, op in edges],
            "concat": [2, 3, 4, 5] if reduction else [2, 4, 5],
        })
    return {"format": "asmnas-genotype/1", "primitives": list(PRIMITIVES), "cells": cells,
            "source": {"method": "hand"}}


def write_hand_genotype(path, num_cells=15):
    with open(path, "w") as f:
        json.dump(hand_genotype_dict(num_cells), f)
    return str(path)


@pytest.fixture(scope="module")
def small_net():
    """The 15-cell hand-written genotype at C = 4 on 16x16x3 images."""
    genotype = from_dict(hand_genotype_dict(15), num_cells=15)
    return build_eval_net(genotype, (16, 16, 3), 7, channels=4)


def test_darts_v2_cifar_size_matches_pytorch_exactly():
    # DARTS_V2, C = 36, 20 cells, CIFAR-10. quark0/darts `train.py` prints
    # 3.349342 MB from utils.count_parameters_in_MB (auxiliary excluded).
    model = build_eval_net(resolve_genotype("DARTS_V2", 20), (32, 32, 3), 10, channels=36)
    report = size_report(model)
    assert report["params"] == 3_349_342
    # AuxiliaryHeadCIFAR on 576 channels: 576*128 + 2*128 + 128*768*4
    # + 2*768 + 768*10 + 10.
    assert report["aux_params"] == 576 * 128 + 256 + 128 * 768 * 4 + 1536 + 7690 == 476_426
    assert report["total_params"] == 3_825_768
    assert int(sum(np.prod(v.shape) for v in model.trainable_weights)) == 3_825_768


def test_darts_v2_imagenet_size():
    model = build_eval_net(resolve_genotype("DARTS_V2", 14), (224, 224, 3), 1000, channels=48,
                           stem="imagenet")
    report = size_report(model)
    # DARTS (Table 3) publishes 4.7M parameters and 574M multiply-adds.
    assert report["params"] == 4_718_752
    assert abs(report["params"] / 4.7e6 - 1) < 0.01
    # Counting conv + dense multiply-adds (what this counter does) gives
    # 530M; the 574M of the paper cannot be reproduced this way (quark0/darts
    # issue #46: others get 523M-545M with the usual counters), so the bound
    # is 8%, and the exact figure is pinned.
    assert report["macs"] == 529_911_552
    assert abs(report["macs"] / 574e6 - 1) < 0.08
    assert model.output[LOGITS].shape == (None, 1000)
    assert model.get_layer("cell00_pre0").__class__.__name__ == "FactorizedReduce"


def test_macs_by_hand_for_a_one_cell_net():
    # One reduction cell, C = 2, 8x8x1 input: every MAC counted by hand.
    genotype = from_dict({
        "format": "asmnas-genotype/1", "primitives": list(PRIMITIVES),
        "cells": [{"reduction": True, "concat": [2, 3, 4, 5], "edges": [
            {"from": 0, "to": 2, "op": "sep_conv_3x3"},
            {"from": 1, "to": 3, "op": "skip_connect"},
            {"from": 2, "to": 4, "op": "dil_conv_5x5"}]}],
        "source": {}}, num_cells=1)
    model = build_eval_net(genotype, (8, 8, 1), 3, channels=2, auxiliary=False)
    c = 4  # the reduction doubles C
    stem = 3 * 3 * 1 * 6 * 64
    pre = 2 * (6 * c * 64)
    sep = (9 * c + c * c) * 16 * 2            # two halves at 4x4
    skip = 2 * (c * (c // 2) * 16)            # FactorizedReduce
    dil = (25 * c + c * c) * 16
    dense = 4 * c * 3
    assert size_report(model)["macs"] == stem + pre + sep + skip + dil + dense
    assert size_report(model)["aux_params"] == 0


def test_wrong_cell_count_is_refused(tmp_path):
    path = write_hand_genotype(tmp_path / "g.json", 15)
    assert len(resolve_genotype(path).cells) == 15
    with pytest.raises(GenotypeError, match="cells: 15 cells, the network asks for 14"):
        resolve_genotype(path, num_cells=14)
    with pytest.raises(GenotypeError, match="unknown named genotype|expected a genotype.json"):
        resolve_genotype(7)
    assert len(resolve_genotype("PDARTS", 8).cells) == 8


def test_structure_of_the_hand_written_network(small_net):
    names = {layer.name for layer in small_net.layers}
    # `zero` edges are left out; node 4 of a normal cell is a Zero node.
    assert not any("zero" in n and "edge" in n for n in names)
    assert isinstance(small_net.get_layer("cell00_node4_zero"), Zero)
    assert "cell00_edge1to2_skip_connect" in names
    assert "cell00_edge1to2_drop_path" not in names  # identity: never dropped
    assert "cell04_edge1to2_drop_path" in names  # strided skip is FactorizedReduce
    assert isinstance(small_net.get_layer("auxiliary_head"), AuxiliaryHead)
    # Channels: C=4, normal concat of 3 nodes, x2 at each reduction (4 and 9).
    assert small_net.get_layer("cell00_output").output.shape == (None, 16, 16, 12)
    assert small_net.get_layer("cell04_output").output.shape == (None, 8, 8, 32)
    assert small_net.get_layer("cell09_output").output.shape == (None, 4, 4, 64)
    assert small_net.get_layer("cell14_output").output.shape == (None, 4, 4, 48)
    # The auxiliary head reads the second reduction cell's output.
    head = small_net.get_layer("auxiliary_head")
    assert head.input.shape == (None, 4, 4, 64)
    assert head.pool_h == (3, 1)


def test_outputs_in_training_and_inference(small_net):
    x = np.random.default_rng(0).normal(size=(3, 16, 16, 3)).astype("float32")
    train_out = small_net(x, training=True)
    assert set(train_out) == {LOGITS, AUX_LOGITS}
    assert train_out[LOGITS].shape == (3, 7) and train_out[AUX_LOGITS].shape == (3, 7)
    infer_out = small_net(x, training=False)
    assert set(infer_out) == {LOGITS}
    assert infer_out[LOGITS].shape == (3, 7)
    assert small_net.predict(x, verbose=0)[LOGITS].shape == (3, 7)


def test_drop_path_off_at_inference_on_in_training(small_net):
    x = np.random.default_rng(1).normal(size=(4, 16, 16, 3)).astype("float32")
    set_drop_path_rate(small_net, 0.5)
    try:
        a = small_net(x, training=False)[LOGITS].numpy()
        b = small_net(x, training=False)[LOGITS].numpy()
        np.testing.assert_array_equal(a, b)
        c = small_net(x, training=True)[LOGITS].numpy()
        d = small_net(x, training=True)[LOGITS].numpy()
        assert np.abs(c - d).max() > 1e-3
    finally:
        set_drop_path_rate(small_net, 0.0)


def test_drop_path_layer_statistics_and_schedule():
    layer = DropPath(seed=3)
    x = np.ones((4000, 2, 2, 1), "float32")
    layer.build(x.shape)
    layer.rate.assign(0.25)
    y = layer(x, training=True).numpy()
    per_sample = y[:, 0, 0, 0]
    # Each sample is either 0 or 1 / 0.75, the whole sample at once.
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.75], rtol=1e-6)
    assert np.all(y == per_sample[:, None, None, None])
    assert abs((per_sample == 0).mean() - 0.25) < 0.03
    np.testing.assert_array_equal(layer(x, training=False), x)
    schedule = DropPathSchedule(0.2, 600)
    assert schedule.rate_at(0) == 0.0 and schedule.rate_at(300) == pytest.approx(0.1)


def test_schedule_sets_every_layer(small_net):
    schedule = DropPathSchedule(0.2, 10)
    schedule.set_model(small_net)
    schedule.on_epoch_begin(5)
    rates = [float(layer.rate.numpy()) for layer in drop_path_layers(small_net)]
    assert len(rates) > 15 and rates == pytest.approx([0.1] * len(rates))
    set_drop_path_rate(small_net, 0.0)


def test_without_drop_path_layers_same_network_at_rate_zero():
    # A training at drop-path rate 0 builds no DropPath layer: the same
    # weights (by name) and the same outputs, training mode included.
    genotype = from_dict(hand_genotype_dict(3), num_cells=3)
    with_layers = build_eval_net(genotype, (8, 8, 3), 5, channels=4)
    without = build_eval_net(genotype, (8, 8, 3), 5, channels=4, drop_path=False)
    # Kept non-identity edges in the graph: the normal cell (cell 2) 9 - 2
    # zero - 1 skip - node 3's two (node 3 is in no concat and feeds no
    # node); each reduction cell 8 - 1 (its skips from nodes 0 and 1 have
    # stride 2: FactorizedReduce, not the identity).
    assert len(drop_path_layers(with_layers)) == 4 + 2 * 7 and drop_path_layers(without) == []
    trainable = {w.path: w for w in with_layers.trainable_weights}
    assert sorted(trainable) == sorted(w.path for w in without.trainable_weights)
    for w in without.trainable_weights:
        w.assign(trainable[w.path].numpy())
    x = np.random.default_rng(4).normal(size=(3, 8, 8, 3)).astype("float32")
    for training in (False, True):
        np.testing.assert_allclose(without(x, training=training)[LOGITS].numpy(),
                                   with_layers(x, training=training)[LOGITS].numpy(), rtol=1e-6, atol=1e-6)


def test_aux_pool_geometry_matches_darts():
    assert aux_pool_geometry(8) == (5, 3)   # AuxiliaryHeadCIFAR
    assert aux_pool_geometry(7) == (5, 2)   # AuxiliaryHeadImageNet
    assert aux_pool_geometry(4) == (3, 1)
    with pytest.raises(ValueError, match="at least 2x2"):
        aux_pool_geometry(1)


def test_keras_save_and_load_round_trip(small_net, tmp_path):
    x = np.random.default_rng(2).normal(size=(2, 16, 16, 3)).astype("float32")
    path = str(tmp_path / "net.keras")
    small_net.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded).__name__ == "EvalModel"
    np.testing.assert_array_equal(loaded(x, training=False)[LOGITS], small_net(x, training=False)[LOGITS])
    assert set(loaded(x, training=True)) == {LOGITS, AUX_LOGITS}
    assert loaded.auxiliary_weight == 0.4 and loaded.clipnorm == 5.0
    assert len(drop_path_layers(loaded)) == len(drop_path_layers(small_net))


def test_eval_net_config_takes_gin_bindings_then_fields_and_checks_once():
    import gin

    from asmnas_tf.errors import UserError
    from asmnas_tf.evaluation.builder import EvalNetConfig, eval_net_config

    genotype = resolve_genotype("DARTS_V2", 2)
    gin.clear_config()
    try:
        gin.parse_config("build_eval_net.channels = 6\nbuild_eval_net.auxiliary = False")
        config = eval_net_config(stem_multiplier=2)
        assert (config.channels, config.auxiliary, config.stem_multiplier, config.stem) == (6, False, 2, "cifar")
        built = build_eval_net(genotype, (8, 8, 1), 3, config)
        assert built.get_layer("stem_conv").kernel.shape == (3, 3, 1, 12)  # stem_multiplier * the bound C
        assert built.count_params() == build_eval_net(genotype, (8, 8, 1), 3, stem_multiplier=2).count_params()
        with pytest.raises(UserError, match=r"Expected an even build_eval_net.channels >= 2. Received: channels=7"):
            eval_net_config(channels=7)
        with pytest.raises(UserError, match=r"build_eval_net: unexpected argument\(s\) depth"):
            build_eval_net(genotype, (8, 8, 1), 3, depth=4)
    finally:
        gin.clear_config()
    assert EvalNetConfig().channels == 36  # DARTS's C without bindings
