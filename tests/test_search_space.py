"""The search space as data: the op table and the SearchSpace drive every part.

A toy op registered here (a 3x3 depthwise convolution with dilation 4, a row
of kind `dil_conv`) reaches the fused edge, the supernet, selection,
telemetry's parameter-free set and the evaluation network with no other
change; the DARTS space's layout is the one the edge always had.
"""

import collections

import gin
import numpy as np
import pytest
import tensorflow as tf

from asmnas_tf.errors import UserError
from asmnas_tf.layers import ops
from asmnas_tf.layers.attention import ArchitectureAttention
from asmnas_tf.layers.mixed_edge import MixedEdge, edge_layout
from asmnas_tf.space import op_table
from asmnas_tf.space.genotype import from_dict, to_dict
from asmnas_tf.space.op_table import OpSpec
from asmnas_tf.space.search_space import DARTS_SPACE, make_space
from asmnas_tf.supernet import diagnostics
from asmnas_tf.supernet.selection import select_genotype
from fused_kernels import count_kernel_calls

C = 8
TOY = OpSpec("dil_conv_3x3_d4", "dil_conv", "dil3d4", 3, 4)
TOY_PRIMITIVES = ("zero", "skip_connect", "dil_conv_3x3_d4", "sep_conv_3x3")


@pytest.fixture
def toy_space():
    op_table.register_op(TOY)
    yield make_space(TOY_PRIMITIVES, 3)
    op_table.unregister_op(TOY.name)
    gin.clear_config()


def test_darts_layout_is_the_edges_own():
    """The DARTS rows give the slot order, stages, output blocks and pieces the fused edge was written with."""
    for stride in (1, 2):
        layout = edge_layout(DARTS_SPACE.primitives, stride)
        skip = ("skip",) if stride == 2 else ()
        assert layout.bn_slots == ("max_pool", "avg_pool", "sep3_a", "sep3_b", "sep5_a", "sep5_b", "dil3", "dil5") + skip
        assert layout.stage1 == ("sep3_a", "sep5_a", "max_pool", "avg_pool", "dil3", "dil5") + skip
        assert layout.stage2 == ("sep3_b", "sep5_b")
        rest = ("max_pool_3x3", "avg_pool_3x3", "dil_conv_3x3", "dil_conv_5x5")
        seps = ("sep_conv_3x3", "sep_conv_5x5")
        assert layout.order == (rest + ("skip_connect",) + seps if stride == 2 else rest + seps + ("skip_connect",))
        names = [name for name, _, _ in layout.conv_piece_shapes(C)]
        assert names == ["sep3_dw1", "sep3_pw1", "sep3_dw2", "sep3_pw2", "sep5_dw1", "sep5_pw1", "sep5_dw2",
                         "sep5_pw2", "dil3_dw", "dil3_pw", "dil5_dw", "dil5_pw"] + (
                            ["skip_even", "skip_odd"] if stride == 2 else [])
    assert diagnostics.PARAMETER_FREE == ("zero", "max_pool_3x3", "avg_pool_3x3", "skip_connect")


def test_space_edges_and_nodes():
    space = make_space(("zero", "skip_connect"), 3)
    assert space.intermediate_nodes == (2, 3, 4)
    assert space.edges == ((0, 2), (1, 2), (0, 3), (1, 3), (2, 3), (0, 4), (1, 4), (2, 4), (3, 4))
    assert len(DARTS_SPACE.edges) == 14


@pytest.mark.parametrize("primitives, nodes, message", [
    (("zero", "conv_9x9"), 2, "search_space.primitives: op='conv_9x9' is not an op of the op table (accepted: zero,"),
    ((), 2, "search_space.primitives=[] is empty"),
    (("zero",), 2, "search_space.primitives=['zero'] has no op that passes anything"),
    (("skip_connect", "skip_connect"), 2, "search_space.primitives lists 'skip_connect' twice"),
    (("skip_connect",), 0, "search_space.nodes=0 is not an int >= 1"),
    ("skip_connect", 2, "search_space.primitives='skip_connect' is not a list of op names"),
])
def test_bad_space_is_one_line(primitives, nodes, message):
    with pytest.raises(UserError) as info:
        make_space(primitives, nodes)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_register_op_refuses_bad_rows():
    with pytest.raises(UserError, match="kind='conv' is not one of"):
        op_table.register_op(OpSpec("my_conv", "conv", "myc", 3))
    with pytest.raises(UserError, match="short='sep3' is already the short of 'sep_conv_3x3'"):
        op_table.register_op(OpSpec("my_sep", "sep_conv", "sep3", 3))
    with pytest.raises(UserError, match="expected an odd kernel_size"):
        op_table.register_op(OpSpec("my_sep", "sep_conv", "mysep", 4))
    with pytest.raises(UserError, match="already in the table"):
        op_table.register_op(OpSpec("sep_conv_3x3", "sep_conv", "sep3", 5))
    assert "my_sep" not in op_table.OP_TABLE


def _reference_weights(primitives, candidates, attention, stride):
    """The reference layers' weights under the fused edge's piece names, from the op table's rows."""
    w = {}
    for name in primitives:
        spec, layer = op_table.op_spec(name), candidates[name]
        if spec.kind == "sep_conv":
            w[f"{spec.short}_dw1"], w[f"{spec.short}_pw1"] = layer.first.depthwise, layer.first.pointwise
            w[f"{spec.short}_dw2"], w[f"{spec.short}_pw2"] = layer.second.depthwise, layer.second.pointwise
        elif spec.kind == "dil_conv":
            w[f"{spec.short}_dw"], w[f"{spec.short}_pw"] = layer.depthwise, layer.pointwise
        elif spec.kind == "skip" and stride == 2:
            w[f"{spec.short}_even"], w[f"{spec.short}_odd"] = layer.kernel_even, layer.kernel_odd
    w.update(attention.params)
    return w


@pytest.mark.parametrize("fused", [True, False], ids=["fused_kernels", "tensorflow_ops"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("stride", [1, 2])
def test_toy_op_reaches_the_fused_edge(toy_space, stride, training, fused, monkeypatch):
    """The fused edge of the toy space equals its reference layers (make_op from the table) to 1e-5."""
    calls = count_kernel_calls(monkeypatch) if fused else None
    gin.bind_parameter("use_fused_attention.enabled", fused)
    x = tf.constant(np.random.default_rng(0).normal(size=(3, 9, 9, C)).astype("float32"))
    candidates = {name: ops.make_op(name, C, stride, affine=False, pool_batch_norm=True)
                  for name in toy_space.primitives}
    attention = ArchitectureAttention(len(toy_space.primitives), 8)
    attention([op(x, training=False) for op in candidates.values()])
    edge = MixedEdge(C, stride, 8, primitives=toy_space.primitives)
    edge(x)
    assert [name for name, _, _ in edge.pieces][:2] == ["sep3_dw1", "sep3_pw1"]
    assert "dil3d4_dw" in [name for name, _, _ in edge.pieces]
    ref_w = _reference_weights(toy_space.primitives, candidates, attention, stride)
    edge.kernel.assign(np.concatenate([np.asarray(ref_w[name]).ravel() for name, _, _ in edge.pieces]))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ref_mixed, ref_coeffs = attention([op(x, training=training) for op in candidates.values()])
        mixed, coeffs = edge(x, training=training)
        ref_loss = tf.reduce_sum(ref_mixed * ref_mixed)
        loss = tf.reduce_sum(mixed * mixed)
    np.testing.assert_allclose(np.asarray(coeffs), np.asarray(ref_coeffs), atol=1e-5)
    np.testing.assert_allclose(np.asarray(mixed), np.asarray(ref_mixed), atol=1e-5)
    if training:
        np.testing.assert_allclose(np.asarray(tape.gradient(loss, x)), np.asarray(tape.gradient(ref_loss, x)),
                                   atol=1e-4)
        toy = candidates["dil_conv_3x3_d4"].depthwise
        grad_flat = edge.unpack(tape.gradient(loss, edge.kernel))["dil3d4_dw"]
        np.testing.assert_allclose(np.asarray(grad_flat), np.asarray(tape.gradient(ref_loss, toy)), atol=1e-4)
        # The moving statistics of the toy op's BatchNorm slot: its reference BN's.
        slot = edge.bn_slots.index("dil3d4")
        np.testing.assert_allclose(np.asarray(edge.moving_mean)[slot],
                                   np.asarray(candidates["dil_conv_3x3_d4"].bn.moving_mean), atol=1e-5)
    if fused:  # training: one forward, a backward per tape.gradient of `loss`; inference keeps TensorFlow ops
        assert calls == collections.Counter(asm_attend_forward=int(training), asm_attend_backward=2 * int(training))


def test_toy_space_supernet_selection_and_eval_net(toy_space):
    """4 ops, 3 nodes: the supernet's coefficients, selection, telemetry's set and the evaluation network."""
    from asmnas_tf.evaluation.builder import build_eval_net
    from asmnas_tf.space.genotype import GenotypeError
    from asmnas_tf.space.named_genotypes import named_genotype
    from asmnas_tf.supernet.builder import build_supernet

    model = build_supernet((12, 12, 1), 3, num_cells=3, channels=4, space=toy_space)
    out = model(np.zeros((2, 12, 12, 1), np.float32), training=False)
    assert tuple(out["coefficients"].shape) == (2, 3, 9, 4)
    mean = np.zeros((3, 9, 4))
    mean[:, :, 2] = 0.4  # the toy op everywhere...
    mean[2, :, 0] = 0.5  # ...but zero in the last cell
    genotype = select_genotype(mean, "argmax", {"method": "test"}, space=toy_space)
    assert genotype.space == toy_space
    assert [e.op for e in genotype.cells[0].edges] == ["dil_conv_3x3_d4"] * 9
    assert genotype.cells[0].concat == (2, 3, 4)
    assert diagnostics.parameter_free_share(mean, toy_space) == pytest.approx(1 / 3)
    top2 = select_genotype(mean, "top2", space=toy_space)
    assert all(e.op == "dil_conv_3x3_d4" for e in top2.cells[2].edges) and len(top2.cells[2].edges) == 6
    assert from_dict(to_dict(genotype)) == genotype  # the file records the space (nodes: 3)
    assert to_dict(genotype)["nodes"] == 3
    net = build_eval_net(genotype, (12, 12, 1), 3, channels=4, auxiliary=False, space=toy_space)
    assert any(layer.name.endswith("_dil_conv_3x3_d4") for layer in net.layers)
    assert tuple(net(np.zeros((1, 12, 12, 1), np.float32))["logits"].shape) == (1, 3)
    with pytest.raises(GenotypeError) as info:
        build_eval_net(named_genotype("DARTS_V2", 3), (12, 12, 1), 3, channels=4, space=toy_space)
    assert str(info.value).startswith("genotype: primitives: a genotype of the space 8 ops [zero, max_pool_3x3,")
    assert "expected the network's space, 4 ops [zero, skip_connect, dil_conv_3x3_d4, sep_conv_3x3], 3 nodes" \
        in str(info.value)
