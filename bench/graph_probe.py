#!/usr/bin/env python3
"""Where the first training step goes: graph size, tracing, first execution.

Two measurements, each in this fresh process:

- `--what=edge`: one `MixedEdge` (C channels, stride 1 and 2, training mode),
  forward + backward (gradients of a scalar loss w.r.t. the input and the
  edge's flat kernel) as one `tf.function`. Reports the number of graph ops
  and the most common op types.
- `--what=step`: the supernet's `train_step` as a `tf.function`, split into
  tracing (Python -> graph: `get_concrete_function`) and the first call
  (Grappler, placement, kernel creation, one execution), then the median of
  the next calls. Reports the ops of the traced graph.
- `--what=eval_step`: the same split for the evaluation network's
  `train_step` (`--genotype`, auxiliary head and drop-path as training
  uses them), with the Keras build's time before it.

  .venv/bin/python bench/graph_probe.py --what=edge
  .venv/bin/python bench/graph_probe.py --what=step --num_cells=2
  .venv/bin/python bench/graph_probe.py --what=eval_step --num_cells=20 --channels=36 --batch=64 \
      --image_size=32 --image_channels=3
"""

import collections
import json
import os
import re
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

flags.DEFINE_enum("what", "edge", ["edge", "step", "eval_step"], "what to probe")
flags.DEFINE_string("genotype", "DARTS_V2", "the evaluation network's genotype (eval_step)")
flags.DEFINE_integer("num_cells", 2, "L (step)")
flags.DEFINE_integer("channels", 8, "C")
flags.DEFINE_integer("batch", 32, "batch")
flags.DEFINE_integer("image_size", 28, "H = W")
flags.DEFINE_integer("image_channels", 1, "input channels (step)")
flags.DEFINE_string("grappler", "", "comma-separated Grappler passes to turn off, or all (as step_bench.py)")
flags.DEFINE_bool("reference_update", False,
                  "the per-variable update and per-tensor clip of before (reference_update.py)")
flags.DEFINE_bool("autograph", False, "trace the step through AutoGraph (as before issue 14's part 4)")
flags.DEFINE_integer("top", 12, "op types listed")
flags.DEFINE_enum("edge_graph", "function", ["inline", "function", "noinline"],
                  "how the edges enter the graph (mixed_edge.set_edge_graph_mode); 'inline' for the "
                  "per-edge op counts of bench/README.md")
flags.DEFINE_bool("lean_grappler", True, "graph_options.lean_grappler_on_cpu, as bin/search (step)")
flags.DEFINE_bool("one_thread_per_op", True, "cpu_threads.one_thread_per_op_on_cpu, as the commands")
flags.DEFINE_list("rewriter", [], "more RewriterConfig fields, field=VALUE (as step_bench.py)")
flags.DEFINE_enum("mixing", "attention", ["attention", "uniform"], "the supernet's mixing (step)")
flags.DEFINE_integer("profile_steps", 0,
                     "after the steady steps, profile this many more (tf.profiler) and report the "
                     "executed ops' time summed by op type: thread-time, steadier than a step's wall time")
flags.DEFINE_string("results", "", "JSON lines file to append to (empty: none)")
FLAGS = flags.FLAGS


def _count(graph):
    """Ops of a graph and of every function in its library (nested bodies)."""
    types = collections.Counter(op.type for op in graph.get_operations())
    for fdef in graph.as_graph_def().library.function:
        types.update(node.op for node in fdef.node_def)
    return types


def _edge(tf, stride):
    from edge_step import edge_and_step

    c = FLAGS.channels
    x, fwd_bwd = edge_and_step(c, stride, FLAGS.batch, FLAGS.image_size)

    started = time.perf_counter()
    # Batch dimension unknown, as in `fit`'s trace (the dataset's last batch may be short).
    graph = fwd_bwd.get_concrete_function(tf.TensorSpec([None, *x.shape[1:]], x.dtype)).graph
    trace_s = time.perf_counter() - started
    types = _count(graph)
    return {"what": "edge", "stride": stride, "channels": c, "edge_graph": FLAGS.edge_graph, "ops": sum(types.values()),
            "trace_s": round(trace_s, 3), "top": types.most_common(FLAGS.top)}


def _build(keras):
    """The model of --what, compiled with its optimizer; the build's seconds."""
    from asmnas_tf.evaluation.builder import build_eval_net, resolve_genotype
    from asmnas_tf.evaluation.model import compile_eval_model
    from asmnas_tf.training.optim import search_optimizer
    from asmnas_tf.supernet.model import compile_supernet
    from asmnas_tf.supernet.builder import build_supernet

    keras.utils.set_random_seed(0)
    shape = (FLAGS.image_size, FLAGS.image_size, FLAGS.image_channels)
    started = time.perf_counter()
    if FLAGS.what == "eval_step":
        model = build_eval_net(resolve_genotype(FLAGS.genotype, FLAGS.num_cells), shape, 10,
                               channels=FLAGS.channels)
        compile_eval_model(model, search_optimizer(total_steps=1000))
    else:
        model = build_supernet(shape, 10, num_cells=FLAGS.num_cells, channels=FLAGS.channels, mixing=FLAGS.mixing)
        compile_supernet(model, search_optimizer(total_steps=1000))
    return model, shape, time.perf_counter() - started


def _step(tf, keras):
    import numpy as np

    model, shape, build_s = _build(keras)
    x = tf.constant(np.random.default_rng(0).normal(size=(FLAGS.batch, *shape)).astype("float32"))
    y = tf.constant(np.arange(FLAGS.batch) % 10, dtype=tf.int32)
    from asmnas_tf.training.train_loop import replica_step

    # As bin/search and bin/train trace it (plain Python, no AutoGraph), unless --autograph.
    step = tf.function(model.train_step if FLAGS.autograph else replica_step(model.train_step))
    started = time.perf_counter()
    concrete = step.get_concrete_function((x, y))
    trace_s = time.perf_counter() - started
    types = _count(concrete.graph)
    started = time.perf_counter()
    step((x, y))
    first_call_s = time.perf_counter() - started
    times = []
    for _ in range(4):
        started = time.perf_counter()
        step((x, y))
        times.append(time.perf_counter() - started)
    profile = _profile(tf, step, (x, y)) if FLAGS.profile_steps else None
    return {"what": FLAGS.what, "genotype": FLAGS.genotype if FLAGS.what == "eval_step" else None,
            "mixing": FLAGS.mixing if FLAGS.what == "step" else None, "profile": profile,
            "build_s": round(build_s, 2), "num_cells": FLAGS.num_cells, "channels": FLAGS.channels, "batch": FLAGS.batch,
            "grappler_off": FLAGS.grappler, "reference_update": FLAGS.reference_update,
            "edge_graph": FLAGS.edge_graph, "lean_grappler": FLAGS.lean_grappler,
            "one_thread_per_op": FLAGS.one_thread_per_op,
            "rewriter": ",".join(FLAGS.rewriter), "autograph": FLAGS.autograph,
            "ops": sum(types.values()), "trace_s": round(trace_s, 2),
            "first_call_s": round(first_call_s, 2), "steady_s": round(float(np.median(times)), 4),
            "top": types.most_common(FLAGS.top)}


_OP_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _profile(tf, step, batch):
    """Milliseconds per step of the executed ops, summed by op type over --profile_steps steps.

    TensorFlow's host tracer records each executed op as an event named
    "name:OpType" on the thread that ran it; summing them gives the CPU time
    the step's kernels took, whatever ran in parallel (a 2-core machine's
    wall time moves by up to 40% between runs; this sum much less).
    """
    import tempfile

    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(FLAGS.profile_steps):
            step(batch)
        tf.profiler.experimental.stop()
        paths = [os.path.join(root, name) for root, _, names in os.walk(logdir)
                 for name in names if name.endswith(".xplane.pb")]
        space = xplane_pb2.XSpace()
        with open(paths[0], "rb") as f:
            space.ParseFromString(f.read())
    by_type = collections.Counter()
    events = 0
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                op_type = name.rsplit(":", 1)[-1]
                # An op's event, not the executor's ("ExecutorState::Process") or the function's.
                if ":" in name and "::" not in name and _OP_TYPE.fullmatch(op_type) \
                        and not op_type.startswith("__inference"):
                    by_type[op_type] += event.duration_ps / 1e9  # ms
                    events += 1
    per_step = {op: round(ms / FLAGS.profile_steps, 1) for op, ms in by_type.most_common()}
    # Every step runs the same graph: its op count is the same whatever --profile_steps.
    return {"total_ms": round(sum(per_step.values()), 1), "ops_per_step": events / FLAGS.profile_steps,
            "top": list(per_step.items())[:FLAGS.top]}


def main(argv):
    del argv
    import gin
    import keras
    import tensorflow as tf

    from asmnas_tf.host.cpu_threads import one_thread_per_op_on_cpu

    # Before anything runs: the pools are made when the runtime starts (bound: make_strategy reads it too).
    gin.bind_parameter("one_thread_per_op_on_cpu.enabled", FLAGS.one_thread_per_op)
    one_thread_per_op_on_cpu()
    if FLAGS.reference_update:
        import reference_update

        reference_update.use()
    if FLAGS.grappler:
        names = FLAGS.grappler.split(",")
        options = {"disable_meta_optimizer": True} if "all" in names else {name: False for name in names}
        tf.config.optimizer.set_experimental_options(options)
    # After set_experimental_options, which resets the function-call options.
    from asmnas_tf.host.graph_options import lean_grappler_on_cpu, set_rewriter_fields
    from asmnas_tf.layers.mixed_edge import set_edge_graph_mode

    set_edge_graph_mode(FLAGS.edge_graph)
    if FLAGS.lean_grappler:
        lean_grappler_on_cpu()
    if FLAGS.rewriter:
        set_rewriter_fields(dict(field.split("=") for field in FLAGS.rewriter))
    rows = [_edge(tf, 1), _edge(tf, 2)] if FLAGS.what == "edge" else [_step(tf, keras)]
    for row in rows:
        print(json.dumps(row))
        if FLAGS.results:
            with open(FLAGS.results, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    app.run(main)
