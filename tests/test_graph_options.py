"""The CPU Grappler settings of bin/search and bin/train (graph_options.py)."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
from tensorflow.python.eager import context

from asmnas_tf.host import graph_options

Rewriter = rewriter_config_pb2.RewriterConfig


@pytest.fixture
def restore_call_options():
    options = context.context().function_call_options
    saved = config_pb2.ConfigProto()
    saved.ParseFromString(options.config_proto_serialized)
    fresh = config_pb2.ConfigProto()
    fresh.CopyFrom(saved)
    fresh.graph_options.rewrite_options.Clear()  # Grappler's defaults (a search in this process set them)
    options.config_proto_serialized = fresh
    yield
    options.config_proto_serialized = saved


def test_lean_grappler_sets_its_fields_and_keeps_the_results(restore_call_options):
    x = tf.constant(np.arange(12, dtype="float32").reshape(3, 4))

    @tf.function
    def f(x):
        return tf.reduce_sum(tf.nn.relu(x - 5.0) * 2.0, axis=1)

    before = f(x).numpy()
    assert graph_options.rewriter_config().memory_optimization == Rewriter.DEFAULT_MEM_OPT
    assert graph_options.lean_grappler_on_cpu() is True  # this machine has no GPU
    config = graph_options.rewriter_config()
    assert config.memory_optimization == Rewriter.NO_MEM_OPT
    assert config.meta_optimizer_iterations == Rewriter.ONE
    assert config.disable_tfg_optimizer is True
    for toggle in ("constant_folding", "layout_optimizer", "loop_optimization", "implementation_selector",
                   "experimental_conditional_code_motion", "remapping"):
        assert getattr(config, toggle) == Rewriter.OFF, toggle
    assert config.arithmetic_optimization == Rewriter.DEFAULT  # kept: off, the first step took longer

    @tf.function
    def g(x):
        return tf.reduce_sum(tf.nn.relu(x - 5.0) * 2.0, axis=1)

    np.testing.assert_array_equal(g(x).numpy(), before)
    np.testing.assert_array_equal(before, [0.0, 6.0, 36.0])


def test_disabled_leaves_grappler_alone(restore_call_options):
    assert graph_options.lean_grappler_on_cpu(enabled=False) is False
    config = graph_options.rewriter_config()
    assert config.memory_optimization == Rewriter.DEFAULT_MEM_OPT
    assert config.meta_optimizer_iterations == Rewriter.DEFAULT_NUM_ITERS
