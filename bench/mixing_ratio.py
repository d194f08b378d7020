#!/usr/bin/env python3
"""ASM's step over the uniform-mixing step, both in one process, their steps interleaved.

Issue 14's target "ASM step / uniform step <= 1.10" is a ratio of two steps
of ~1.5 s on a machine whose step moves by 30-40% within an hour (the same
code, fresh processes: bench/README.md, "Issue 14, part 8"); two processes
run one after the other each see another machine. Here both supernets (the
same L, C, batch, as `bin/search` builds and traces them: the thread pools,
the lean Grappler, the malloc settings) are built and warmed in one process,
then stepped alternately, ASM then uniform, --rounds times: each round's
ratio compares two steps taken within ~3 s of each other. Prints the
median step of each, the median and quartiles of the per-round ratios, and
one JSON line.

  .venv/bin/python bench/mixing_ratio.py                       # paper size, 15 rounds
  .venv/bin/python bench/mixing_ratio.py --num_cells=2 --channels=4 --image_size=8 --rounds=3
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from asmnas_tf.host.malloc_arenas import disable_fastbins, limit_malloc_arenas  # noqa: E402

# As the commands (cli.py): before TensorFlow starts its threads.
limit_malloc_arenas()
disable_fastbins()

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("num_cells", 15, "L")
flags.DEFINE_integer("channels", 16, "C")
flags.DEFINE_integer("batch", 16, "batch")
flags.DEFINE_integer("image_size", 32, "H = W")
flags.DEFINE_integer("image_channels", 3, "input channels")
flags.DEFINE_bool("fused_attention", True, "ASM's edges on the fused CPU kernels where built, as the commands")
flags.DEFINE_integer("rounds", 15, "interleaved pairs of steps timed (after 2 warm-up steps each)")
flags.DEFINE_string("results", "", "JSON lines file to append to (empty: none)")
FLAGS = flags.FLAGS

MIXINGS = ("attention", "uniform")


def _step_function(mixing):
    """The train step of the supernet with `mixing` (built and compiled), traced as `bin/search` traces it."""
    import tensorflow as tf

    from asmnas_tf.training.optim import search_optimizer
    from asmnas_tf.training.train_loop import replica_step
    from asmnas_tf.supernet.builder import build_supernet
    from asmnas_tf.supernet.model import compile_supernet

    shape = (FLAGS.image_size, FLAGS.image_size, FLAGS.image_channels)
    model = build_supernet(shape, 10, num_cells=FLAGS.num_cells, channels=FLAGS.channels, mixing=mixing,
                           name=f"supernet_{mixing}")
    compile_supernet(model, search_optimizer(total_steps=1000))
    return tf.function(replica_step(model.train_step))


def ratio_summary(asm_times, uniform_times):
    """Medians of each, and the per-round ratios' median and quartiles (numpy's linear quantiles)."""
    import numpy as np

    ratios = np.asarray(asm_times) / np.asarray(uniform_times)
    return {
        "asm_step_s": round(float(np.median(asm_times)), 4),
        "uniform_step_s": round(float(np.median(uniform_times)), 4),
        "ratio_median": round(float(np.median(ratios)), 4),
        "ratio_q1": round(float(np.quantile(ratios, 0.25)), 4),
        "ratio_q3": round(float(np.quantile(ratios, 0.75)), 4),
        "ratios": [round(float(r), 4) for r in ratios],
    }


def main(argv):
    del argv
    import gin
    import keras
    import numpy as np
    import tensorflow as tf

    from asmnas_tf.kernels import fused_attention
    from asmnas_tf.host.cpu_threads import one_thread_per_op_on_cpu
    from asmnas_tf.host.graph_options import lean_grappler_on_cpu

    one_thread_per_op_on_cpu()
    lean_grappler_on_cpu()
    gin.bind_parameter("use_fused_attention.enabled", FLAGS.fused_attention)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(FLAGS.batch, FLAGS.image_size, FLAGS.image_size, FLAGS.image_channels))
                    .astype("float32"))
    y = tf.constant(np.arange(FLAGS.batch) % 10, dtype=tf.int32)
    steps = {mixing: _step_function(mixing) for mixing in MIXINGS}
    for mixing in MIXINGS:  # trace, first call, one more warm-up step
        for _ in range(2):
            steps[mixing]((x, y))
    times = {mixing: [] for mixing in MIXINGS}
    for _ in range(FLAGS.rounds):
        for mixing in MIXINGS:
            started = time.perf_counter()
            logs = steps[mixing]((x, y))
            float(logs["loss"])  # the step's result read back: it has finished
            times[mixing].append(time.perf_counter() - started)
    row = {"num_cells": FLAGS.num_cells, "channels": FLAGS.channels, "batch": FLAGS.batch,
           "image": f"{FLAGS.image_size}x{FLAGS.image_size}x{FLAGS.image_channels}", "rounds": FLAGS.rounds,
           "fused_attention": fused_attention.load() is not None,
           **ratio_summary(times["attention"], times["uniform"])}
    print(f"ASM step {row['asm_step_s']:.3f} s, uniform step {row['uniform_step_s']:.3f} s; ASM / uniform per "
          f"round: median {row['ratio_median']:.3f} (quartiles {row['ratio_q1']:.3f}-{row['ratio_q3']:.3f}), "
          f"{FLAGS.rounds} rounds")
    print(json.dumps(row))
    if FLAGS.results:
        with open(FLAGS.results, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    app.run(main)
