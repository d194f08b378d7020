#!/usr/bin/env python3
"""What the weight update costs in the first step: clip + `CoupledSGD` alone.

Traces `clip_by_global_norm` + `apply_gradients` over the supernet's
trainable variables (gradients are function inputs, so nothing folds) as one
`tf.function`, and reports its ops, tracing time, first call and steady call.
`--reference_update` times the update as it was before the fused one
(`reference_update.py`).

  .venv/bin/python bench/optim_probe.py --num_cells=5 [--reference_update]
"""

import collections
import json
import time


from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_cells", 5, "L")
flags.DEFINE_integer("channels", 8, "C")
flags.DEFINE_integer("image_channels", 1, "input channels")
flags.DEFINE_bool("reference_update", False, "the per-variable update and per-tensor clip of before")


def _count(graph):
    types = collections.Counter(op.type for op in graph.get_operations())
    for fdef in graph.as_graph_def().library.function:
        types.update(node.op for node in fdef.node_def)
    return types


def main(argv):
    del argv
    import keras
    import numpy as np
    import tensorflow as tf

    from asmnas_tf.training import grad_clip

    from asmnas_tf.training import optim
    from asmnas_tf.supernet.builder import build_supernet

    if FLAGS.reference_update:
        import reference_update

        reference_update.use()
    keras.utils.set_random_seed(0)
    model = build_supernet((28, 28, FLAGS.image_channels), 10, num_cells=FLAGS.num_cells, channels=FLAGS.channels)
    variables = model.trainable_variables
    opt = optim.search_optimizer(total_steps=1000)
    opt.build(variables)

    @tf.function
    def update(gradients):
        clipped, norm_sq = grad_clip.clip_by_global_norm(gradients, 5.0)
        opt.apply_gradients(zip(clipped, variables))
        return norm_sq

    specs = [tf.TensorSpec(v.shape, v.dtype) for v in variables]
    started = time.perf_counter()
    concrete = update.get_concrete_function(specs)
    trace_s = time.perf_counter() - started
    types = _count(concrete.graph)
    grads = [tf.random.normal(v.shape) for v in variables]
    started = time.perf_counter()
    update(grads)
    first_call_s = time.perf_counter() - started
    times = []
    for _ in range(10):
        started = time.perf_counter()
        update(grads)
        times.append(time.perf_counter() - started)
    print(json.dumps({"reference_update": FLAGS.reference_update, "num_cells": FLAGS.num_cells,
                      "tensors": len(variables), "ops": sum(types.values()), "trace_s": round(trace_s, 2),
                      "first_call_s": round(first_call_s, 2), "steady_ms": round(1e3 * float(np.median(times)), 2),
                      "top": types.most_common(8)}))


if __name__ == "__main__":
    app.run(main)
