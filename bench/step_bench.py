#!/usr/bin/env python3
"""Start-up and speed of a training step: build, first step, steady step, memory.

One configuration per run (a fresh process, so that the first step really
includes tracing and graph optimisation). Prints a Markdown table row and
appends a JSON line to --results. `--network=supernet` (the search network,
`--method` asm or uniform mixing) or `--network=eval` (the evaluation
network of `--genotype`, auxiliary head on).

  .venv/bin/python bench/step_bench.py --num_cells=15 --channels=16 --batch=16
  .venv/bin/python bench/step_bench.py --network=eval --num_cells=15 --channels=36 --batch=64
"""

import json
import os
import platform
import resource
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from asmnas_tf.host.malloc_arenas import disable_fastbins, limit_malloc_arenas  # noqa: E402

# As the commands do (cli.py), unless --nolimit_malloc_arenas / --nodisable_fastbins: set before
# TensorFlow starts its threads.
ARENAS_LIMITED = "--nolimit_malloc_arenas" not in sys.argv and limit_malloc_arenas()
FASTBINS_OFF = "--nodisable_fastbins" not in sys.argv and disable_fastbins()

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("num_cells", 15, "L")
flags.DEFINE_integer("channels", 16, "C")
flags.DEFINE_integer("batch", 16, "global batch")
flags.DEFINE_integer("image_size", 32, "H = W")
flags.DEFINE_integer("image_channels", 3, "input channels")
flags.DEFINE_integer("classes", 10, "classes")
flags.DEFINE_enum("network", "supernet", ["supernet", "eval"], "which network trains")
flags.DEFINE_string("genotype", "DARTS_V2", "eval network: genotype.json path or named genotype")
flags.DEFINE_bool("auxiliary", True, "eval network: with the auxiliary head")
flags.DEFINE_bool("drop_path_layers", True,
                  "eval network: with its DropPath layers (a training at run_train.drop_path = 0 has none)")
flags.DEFINE_enum(
    "method", "asm", ["asm", "uniform", "darts1", "darts2"],
    "supernet: ASM attention mixing, fixed uniform mixing, or DARTS first / second order "
    "(a DARTS step = architecture step + weight step, timed through architect.step_functions)",
)
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"], "Keras dtype policy")
flags.DEFINE_bool("xla", False, "XLA-compile the step (train_loop's jit_compile, as jit_compile_step.enabled); "
                  "one replica only; on a CPU it was measured slower (bench/README.md)")
flags.DEFINE_list(
    "grappler_off", [],
    "Grappler passes to turn off for this run (tf.config.optimizer.set_experimental_options), e.g. "
    "constant_folding,arithmetic_optimization; 'all' disables the meta optimizer (every pass). "
    "See 'Start-up levers' in bench/README.md.",
)
flags.DEFINE_list(
    "rewriter", [],
    "RewriterConfig fields for the functions this thread calls, as field=VALUE, e.g. "
    "memory_optimization=NO_MEM_OPT,meta_optimizer_iterations=ONE (fields that "
    "set_experimental_options does not reach; set through the private function_call_options).",
)
flags.DEFINE_bool(
    "lean_grappler", True,
    "graph_options.lean_grappler_on_cpu, as bin/search and bin/train: no memory optimizer, one "
    "meta-optimizer iteration (CPU only; --nolean_grappler for Grappler's defaults)",
)
flags.DEFINE_enum(
    "edge_graph", "function", ["inline", "function", "noinline"],
    "how the edges enter the step's graph (mixed_edge.set_edge_graph_mode)",
)
flags.DEFINE_bool(
    "static_batch", True,
    "batch with drop_remainder=True, as bin/search and bin/train batch their training data, so the "
    "step is traced with a known batch size; --nostatic_batch: unknown, as Keras's fit traced it",
)
flags.DEFINE_bool("reference_update", False,
                  "the per-variable update and per-tensor clip of before (reference_update.py)")
flags.DEFINE_bool("fused_attention", True,
                  "ASM's edges on the fused CPU kernels where built (kernels/fused_attention.py), as the commands; "
                  "--nofused_attention for the TensorFlow-op path")
flags.DEFINE_bool("one_thread_per_op", True,
                  "cpu_threads.one_thread_per_op_on_cpu, as the commands: an intra-op pool of 1 and an "
                  "inter-op pool of one thread per core (CPU only; --noone_thread_per_op for TensorFlow's defaults)")
flags.DEFINE_bool("limit_malloc_arenas", True, "two glibc malloc arenas, as the commands (malloc_arenas.py)")
flags.DEFINE_bool("disable_fastbins", True, "glibc's fastbins off, as the commands (malloc_arenas.py)")
flags.DEFINE_integer("steps", 6, "steps timed after the first (median reported)")
flags.DEFINE_string("results", "bench/results.jsonl", "JSON lines file to append to")
FLAGS = flags.FLAGS


def _peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # Linux: KiB


def grappler_options(names):
    """`--grappler_off` as options for tf.config.optimizer.set_experimental_options."""
    if "all" in names:
        return {"disable_meta_optimizer": True}
    return {name: False for name in names}


def _time_darts(model, x, y, strategy):
    """First and median DARTS iteration (architecture step, then weight step), and the halves.

    The step functions are `architect.step_functions` (the same ones as the
    timing experiment); the batches are the first two of the random data.
    """
    import numpy as np
    import tensorflow as tf

    from asmnas_tf.supernet.darts import step_functions

    b = FLAGS.batch
    batch = ((tf.constant(x[:b]), tf.constant(y[:b])), (tf.constant(x[b:2 * b]), tf.constant(y[b:2 * b])))
    functions = step_functions(model, strategy, jit_compile=FLAGS.xla)
    halves = {"architecture": [], "weight": []}
    for _ in range(FLAGS.steps + 1):
        for name in ("architecture", "weight"):
            started = time.perf_counter()
            tf.nest.map_structure(np.asarray, functions[name](batch))
            halves[name].append(time.perf_counter() - started)
    first = halves["architecture"][0] + halves["weight"][0]
    medians = {name: float(np.median(values[1:])) for name, values in halves.items()}
    parts = {"architecture_step_s": round(medians["architecture"], 4), "weight_step_s": round(medians["weight"], 4)}
    return first, medians["architecture"] + medians["weight"], parts


def main(argv):
    del argv
    import gin
    import keras
    import numpy as np
    import tensorflow as tf

    from asmnas_tf.supernet.darts import architecture_optimizer, compile_darts
    from asmnas_tf.training import train_loop
    from asmnas_tf.host.distribute import make_strategy
    from asmnas_tf.evaluation.model import compile_eval_model
    from asmnas_tf.kernels import fused_attention
    from asmnas_tf.host.cpu_threads import one_thread_per_op_on_cpu
    from asmnas_tf.host.graph_options import lean_grappler_on_cpu, set_rewriter_fields
    from asmnas_tf.layers.mixed_edge import set_edge_graph_mode
    from asmnas_tf.evaluation.builder import build_eval_net, resolve_genotype
    from asmnas_tf.training.optim import search_optimizer
    from asmnas_tf.supernet.model import compile_supernet
    from asmnas_tf.supernet.builder import build_supernet

    if FLAGS.reference_update:
        import reference_update

        reference_update.use()
    # Before anything runs: the pools are made when TensorFlow's runtime starts. Bound, not passed:
    # make_strategy sets them too.
    gin.bind_parameter("one_thread_per_op_on_cpu.enabled", FLAGS.one_thread_per_op)
    gin.bind_parameter("use_fused_attention.enabled", FLAGS.fused_attention)
    threads_set = one_thread_per_op_on_cpu()
    keras.mixed_precision.set_global_policy(FLAGS.precision)
    set_edge_graph_mode(FLAGS.edge_graph)
    if FLAGS.grappler_off:
        tf.config.optimizer.set_experimental_options(grappler_options(FLAGS.grappler_off))
    # After set_experimental_options, which resets the function-call options.
    if FLAGS.lean_grappler:
        lean_grappler_on_cpu()  # what bin/search and bin/train do on a CPU host
    if FLAGS.rewriter:
        set_rewriter_fields(dict(field.split("=") for field in FLAGS.rewriter))
    keras.utils.set_random_seed(0)
    shape = (FLAGS.image_size, FLAGS.image_size, FLAGS.image_channels)
    strategy = make_strategy()  # as bin/search: MirroredStrategy over the local devices
    started = time.perf_counter()
    with strategy.scope():
        darts = FLAGS.network == "supernet" and FLAGS.method.startswith("darts")
        if darts:
            model = build_supernet(shape, FLAGS.classes, num_cells=FLAGS.num_cells, channels=FLAGS.channels,
                                   mixing="alpha")
            compile_darts(model, search_optimizer(total_steps=1000), architecture_optimizer(),
                          second_order=FLAGS.method == "darts2")
        elif FLAGS.network == "supernet":
            model = build_supernet(shape, FLAGS.classes, num_cells=FLAGS.num_cells, channels=FLAGS.channels,
                                   mixing="attention" if FLAGS.method == "asm" else "uniform")
            compile_supernet(model, search_optimizer(total_steps=1000))
        else:
            genotype = resolve_genotype(FLAGS.genotype, FLAGS.num_cells)
            model = build_eval_net(genotype, shape, FLAGS.classes, channels=FLAGS.channels,
                                   auxiliary=FLAGS.auxiliary, drop_path=FLAGS.drop_path_layers)
            compile_eval_model(model, search_optimizer(total_steps=1000))
    build_s = time.perf_counter() - started

    rng = np.random.default_rng(0)
    n = FLAGS.batch * (FLAGS.steps + 1)
    x = rng.normal(size=(n, *shape)).astype("float32")
    y = rng.integers(0, FLAGS.classes, n).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(FLAGS.batch, drop_remainder=FLAGS.static_batch)
    data = data.cache().prefetch(2)
    ends = []
    first_rss = []  # peak RSS at the end of the first step: graph building and optimisation included

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            ends.append((self.t, time.perf_counter()))
            if len(ends) == 1:
                first_rss.append(_peak_rss_gb())

    parts = {}
    if darts:
        first_step_s, steady, parts = _time_darts(model, x, y, strategy)
    else:
        # bin/search's and bin/train's loop (train_loop.fit, under their strategy), one epoch.
        with tempfile.TemporaryDirectory() as checkpoints:
            fit_started = time.perf_counter()
            train_loop.fit(model, data, epochs=1, strategy=strategy, checkpoint_dir=checkpoints,
                           callbacks=[Timer()], verbose=0, jit_compile=FLAGS.xla)
        first_step_s = ends[0][1] - fit_started
        steady = float(np.median([end - begin for begin, end in ends[1:]]))
    row = {
        "network": FLAGS.network if FLAGS.network == "supernet" else f"eval:{FLAGS.genotype}",
        "num_cells": FLAGS.num_cells, "channels": FLAGS.channels, "batch": FLAGS.batch,
        "image": f"{FLAGS.image_size}x{FLAGS.image_size}x{FLAGS.image_channels}",
        "method": FLAGS.method, "precision": FLAGS.precision, "xla": FLAGS.xla,
        "grappler_off": ",".join(FLAGS.grappler_off), "rewriter": ",".join(FLAGS.rewriter),
        "static_batch": FLAGS.static_batch, "lean_grappler": FLAGS.lean_grappler,
        "edge_graph": FLAGS.edge_graph,
        "auxiliary": FLAGS.auxiliary, "drop_path_layers": FLAGS.drop_path_layers,
        "reference_update": FLAGS.reference_update, "malloc_arenas_limited": ARENAS_LIMITED,
        "fastbins_off": FASTBINS_OFF,
        "one_thread_per_op": threads_set,
        "fused_attention": fused_attention.load() is not None,
        "trainable_tensors": len(model.trainable_weights), "params": int(model.count_params()),
        "build_s": round(build_s, 2), "first_step_s": round(first_step_s, 2),
        "steady_step_s": round(steady, 4), **parts, "images_per_s": round(FLAGS.batch / steady, 2),
        "peak_rss_gb": round(_peak_rss_gb(), 2),
        "peak_rss_first_step_gb": round(first_rss[0], 2) if first_rss else None,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "tensorflow": tf.__version__, "keras": keras.__version__,
    }
    keys = ["network", "num_cells", "channels", "batch", "image", "method", "precision", "xla", "grappler_off",
            "lean_grappler", "edge_graph", "auxiliary", "drop_path_layers", "rewriter", "reference_update",
            "one_thread_per_op", "fused_attention", "build_s",
            "first_step_s", "steady_step_s", "images_per_s", "peak_rss_gb"]
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    print("| " + " | ".join(str(row[k]) for k in keys) + " |")
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.results)), exist_ok=True)
    with open(FLAGS.results, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    app.run(main)
