"""The supernet (paper §5.1): structure at the paper's size, names, coefficients."""

import time

import numpy as np

from asmnas_tf.layers.mixed_edge import MixedEdge
from asmnas_tf.space.primitives import reduction_indices
from asmnas_tf.supernet.builder import build_supernet, count_attention_modules


def test_paper_size_supernet_builds():
    started = time.perf_counter()
    model = build_supernet((32, 32, 3), 10, num_cells=15, channels=16)
    build_s = time.perf_counter() - started
    edges = [layer for layer in model.layers if isinstance(layer, MixedEdge)]
    cells = sorted({layer.name[:6] for layer in edges})
    assert len(cells) == 15
    assert count_attention_modules(model) == 210
    assert reduction_indices(15) == (4, 9)
    strided = sorted({layer.name[:6] for layer in edges if layer.stride == 2})
    assert strided == ["cell04", "cell09"]
    # Channels double at each reduction: 16, 32, 64.
    assert model.get_layer("cell03_edge0to2").channels == 16
    assert model.get_layer("cell04_edge0to2").channels == 32
    assert model.get_layer("cell14_edge4to5").channels == 64
    out = model(np.zeros((2, 32, 32, 3), "float32"), training=False)
    assert out["logits"].shape == (2, 10)
    assert out["coefficients"].shape == (2, 15, 14, 8)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    print(f"\npaper-size supernet: {trainable:,} trainable weights in "
          f"{len(model.trainable_weights)} tensors, built in {build_s:.1f} s")
    # One flat tensor per edge; a 1x1 conv per pre-processing (two for the
    # FactorizedReduce after each reduction); stem conv + BN; classifier.
    assert len(model.trainable_weights) == 210 + (15 * 2 + 2) + (1 + 2) + 2
    assert trainable == _count_by_hand(15, 16, 3, 10)


def _count_by_hand(num_cells, channels, in_channels, classes, hidden=16):
    """The DARTS search network's weights, op by op, plus one module per edge."""
    attention = (8 * hidden + hidden) + 2 * (hidden * hidden + hidden) + (hidden * 8 + 8)
    stem_c = 3 * channels
    total = 9 * in_channels * stem_c + 2 * stem_c  # stem conv + affine BN
    c_pp, c_p, c = stem_c, stem_c, channels
    for index in range(num_cells):
        reduction = index in reduction_indices(num_cells)
        c = 2 * c if reduction else c
        total += (c_pp + c_p) * c  # 1x1 pre-processing (FactorizedReduce: 2 x C/2)
        for source in (0, 1, 0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 4):
            ops = sum(2 * (k * k * c + c * c) + (k * k * c + c * c) for k in (3, 5))
            if reduction and source < 2:
                ops += c * c  # skip_connect at stride 2 is a FactorizedReduce
            total += ops + attention
        c_pp, c_p = c_p, 4 * c
    return total + c_p * classes + classes


def test_tiny_supernet_outputs_and_coefficients():
    model = build_supernet((12, 12, 1), 7, num_cells=3, channels=4, attention_hidden_units=4)
    x = np.random.default_rng(0).normal(size=(5, 12, 12, 1)).astype("float32")
    out = model(x, training=False)
    assert out["logits"].shape == (5, 7)
    coeffs = np.asarray(out["coefficients"])
    assert coeffs.shape == (5, 3, 14, 8)
    np.testing.assert_allclose(coeffs.sum(axis=-1), np.ones((5, 3, 14)), atol=1e-5)
    # Every cell's coefficients come from its own modules (15 distinct cells).
    assert not np.allclose(coeffs[:, 0], coeffs[:, 2])


def test_supernet_config_takes_gin_bindings_then_fields_and_checks_once():
    import gin
    import pytest

    from asmnas_tf.errors import UserError
    from asmnas_tf.supernet.builder import SupernetConfig, supernet_config

    gin.clear_config()
    try:
        gin.parse_config("build_supernet.channels = 6\nbuild_supernet.attention_hidden_units = 4")
        config = supernet_config(num_cells=2)
        assert (config.num_cells, config.channels, config.attention_hidden_units, config.mixing) == (2, 6, 4, "attention")
        built = build_supernet((8, 8, 1), 3, config)
        same = build_supernet((8, 8, 1), 3, num_cells=2)  # the bindings again, the field as a keyword
        assert built.count_params() == same.count_params()
        assert built.get_layer("stem_conv").kernel.shape == (3, 3, 1, 18)  # 3C stem: the bound C = 6
        with pytest.raises(UserError, match=r"Received: num_cells=15, channels=5"):
            supernet_config(channels=5)
        with pytest.raises(UserError, match=r"build_supernet.mixing='soft' is not one of attention, uniform"):
            supernet_config(mixing="soft")
        with pytest.raises(UserError, match=r"build_supernet: unexpected argument\(s\) no_such"):
            build_supernet((8, 8, 1), 3, no_such=1)
    finally:
        gin.clear_config()
    assert SupernetConfig().channels == 16  # the paper's C without bindings
