"""Grappler settings for the training step on a CPU-only host.

The supernet's first step is dominated by tracing and graph optimisation
(docs/bench-log.md, "Start-up levers"). Some of Grappler's passes cost
start-up time and do nothing for a CPU step: the memory optimizer (it
recomputes or swaps tensors to save accelerator memory), a second
meta-optimizer iteration, both TFG passes (shape inference, control-flow
sinking), constant folding, the layout optimizer (the graph is NHWC
already), loop optimisation and the implementation selector. At paper size
they were ~12 s of the ~21 s of Grappler; with them off the steady step is
unchanged (per-pass times and A/B figures in docs/bench-log.md). The remapper
(oneDNN fusions: BatchNorm + ReLU, MatMul + BiasAdd) is off too: ~2.5 s of
the supernet's Grappler time, op thread-time a step unchanged without it,
and the evaluation network's peak RSS 0.47 GB lower (docs/bench-log.md). On a GPU host Grappler keeps its defaults: the memory
optimizer, layout and the cuDNN fusions may matter there.

`tf.config.optimizer.set_experimental_options` reaches only some of these
fields; `tf.function` calls read their ConfigProto from the eager context's
function-call options, so they are set there (a private TensorFlow API: if
it moves, the run goes on with Grappler's defaults and says so).
"""

import gin
import tensorflow as tf

LEAN_CPU_REWRITES = {
    "memory_optimization": "NO_MEM_OPT",
    "meta_optimizer_iterations": "ONE",
    "disable_tfg_optimizer": True,
    "experimental_conditional_code_motion": "OFF",
    "constant_folding": "OFF",
    "layout_optimizer": "OFF",
    "loop_optimization": "OFF",
    "implementation_selector": "OFF",
    "remapping": "OFF",
}


def set_rewriter_fields(fields):
    """Sets RewriterConfig fields ({name: enum value name or int}) for this thread's tf.function calls."""
    from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
    from tensorflow.python.eager import context

    options = context.context().function_call_options
    config = config_pb2.ConfigProto()
    config.ParseFromString(options.config_proto_serialized)
    rewrite = config.graph_options.rewrite_options
    for name, value in fields.items():
        field = rewriter_config_pb2.RewriterConfig.DESCRIPTOR.fields_by_name[name]
        if field.enum_type:
            value = field.enum_type.values_by_name[value].number
        elif field.type == field.TYPE_BOOL:
            value = str(value).lower() in ("true", "1")
        else:
            value = int(value)
        setattr(rewrite, name, value)
    options.config_proto_serialized = config


def rewriter_config():
    """The RewriterConfig this thread's tf.function calls use now."""
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.eager import context

    config = config_pb2.ConfigProto()
    config.ParseFromString(context.context().function_call_options.config_proto_serialized)
    return config.graph_options.rewrite_options


@gin.configurable
def lean_grappler_on_cpu(enabled=True):
    """Sets LEAN_CPU_REWRITES when no GPU is visible; returns whether it did."""
    if not enabled or tf.config.list_physical_devices("GPU"):
        return False
    try:
        set_rewriter_fields(LEAN_CPU_REWRITES)
    except (ImportError, AttributeError, KeyError) as error:
        print(f"Note: Grappler's defaults kept ({type(error).__name__}: {error})")
        return False
    return True
