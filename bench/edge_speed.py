#!/usr/bin/env python3
"""Steady-state time of one MixedEdge forward + backward (training mode).

A micro-benchmark for changes inside the edge: one edge at the paper's
first-cell size (C = 16, 32x32, batch 16) as one `tf.function`, median of
--repeats calls after a warm-up. Compare two versions of the code by running
this file from each checkout, alternately (the machine may be shared).

  .venv/bin/python bench/edge_speed.py --channels=16 --image_size=32 --batch=16
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("channels", 16, "C")
flags.DEFINE_integer("batch", 16, "batch")
flags.DEFINE_integer("image_size", 32, "H = W")
flags.DEFINE_integer("stride", 1, "edge stride")
flags.DEFINE_integer("repeats", 30, "timed calls")
flags.DEFINE_enum("mixing", "attention", ["attention", "uniform"], "the edge's mixing")
flags.DEFINE_string("label", "", "label of this run in the output")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import numpy as np

    from edge_step import edge_and_step

    x, fwd_bwd = edge_and_step(FLAGS.channels, FLAGS.stride, FLAGS.batch, FLAGS.image_size, FLAGS.mixing)

    for _ in range(3):
        fwd_bwd(x)
    times = []
    for _ in range(FLAGS.repeats):
        started = time.perf_counter()
        fwd_bwd(x)[1].numpy()
        times.append(time.perf_counter() - started)
    print(json.dumps({"what": "edge_speed", "label": FLAGS.label, "channels": FLAGS.channels,
                      "batch": FLAGS.batch, "image_size": FLAGS.image_size, "stride": FLAGS.stride,
                      "mixing": FLAGS.mixing,
                      "median_ms": round(1000 * float(np.median(times)), 2),
                      "min_ms": round(1000 * float(np.min(times)), 2)}))


if __name__ == "__main__":
    app.run(main)
