"""Grappler settings for the training step on a CPU-only host.

The supernet's first step is dominated by tracing and graph optimisation
(bench/README.md, "Start-up levers"). Two of Grappler's defaults cost start-up
time and give nothing on a CPU: the memory optimizer (it recomputes or swaps
tensors to save accelerator memory; 0.8 s of ~4.2 s at L = 2, +270 nodes)
and a second meta-optimizer iteration (~1.3 s, removing 137 of 7,511
nodes). Without them the paper-size first step went 144 -> 120 s, the steady
step unchanged. On a GPU host both stay on: the memory optimizer may matter there.

`tf.config.optimizer.set_experimental_options` reaches neither field;
`tf.function` calls read their ConfigProto from the eager context's
function-call options, so they are set there (a private TensorFlow API:
if it moves, the run goes on with Grappler's defaults and says so).
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
    """Drops the two start-up costs above when no GPU is visible; returns whether it did."""
    if not enabled or tf.config.list_physical_devices("GPU"):
        return False
    try:
        set_rewriter_fields(LEAN_CPU_REWRITES)
    except (ImportError, AttributeError, KeyError) as error:
        print(f"Note: Grappler's defaults kept ({type(error).__name__}: {error})")
        return False
    return True
