"""`asmnas-benchmark`: the ground-truth benchmark on Fashion-MNIST (docs/benchmark.md).

  asmnas-benchmark build   --out=asmnas_tf/benchmark/data/fmnist-b243-v1 --shard=0/2 &
  asmnas-benchmark build   --out=asmnas_tf/benchmark/data/fmnist-b243-v1 --shard=1/2 &
  asmnas-benchmark summary [--table=DIR]     (spread, seed noise, Kendall tau per budget)
  asmnas-benchmark score   --model_dir=runs/bscore [--gin_param='run_score.seeds = 8']
  asmnas-benchmark report  --model_dir=runs/bscore [--table=DIR]

`build` trains the architectures of its shard not yet in its part file
(part-i-of-n.jsonl in --out), one row a line: stop it at any time and rerun
the same command, here or on another machine with the part file, to go on.
`build --pool` instead takes any job no part holds and no other process has
claimed: start it in as many processes or machines (sharing --out) as you like.
`score` runs each variant of `run_score.variants` (benchmark/scoring.py) for
`run_score.seeds` seeds in the benchmark's space and scores each pick by its
ground-truth accuracy, percentile and regret (scores.jsonl, scores.md,
scores.png in --model_dir; rerun to resume). Several `score` processes may
share --model_dir: each takes the (variant, seed) searches no other holds
(or --task_index=i --num_tasks=n for an array job). `report` writes scores.md and
scores.png again from the picks kept so far, against the table as it is now,
running no search.
"""

from absl import flags

from asmnas_tf.commands import cli, task_flags  # noqa: F401  (--task_index, --num_tasks)

COMMANDS = ("build", "summary", "score", "report")
flags.DEFINE_string("out", None, "build: the table's folder (part files are written there)")
flags.DEFINE_string("shard", "0/1", "build: this process's share of the jobs, i/n")
flags.DEFINE_bool("pool", False, "build: take the jobs no other process holds (any number of processes or "
                  "machines sharing --out; each writes its own part file)")
flags.DEFINE_integer("threads", 1, "build: TensorFlow threads of this process (one per shard and core)")
flags.DEFINE_integer("limit", None, "build: train at most this many rows, then stop")
flags.DEFINE_string("first", None, "build: architectures to train before the rest of the shard, e.g. 12122,22222")
flags.DEFINE_string("table", None, "summary, report: the table's folder (default: the one shipped with the package)")
flags.DEFINE_string("idx_dir", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST's IDX files")


def _build():
    from asmnas_tf.benchmark.build import build, build_pool, parse_first, parse_shard

    if not cli.FLAGS.out:
        raise cli.ConfigError("--out is required: the folder of the table's part files")
    shard = parse_shard(cli.FLAGS.shard)
    if cli.FLAGS.pool and cli.FLAGS.shard != "0/1":
        raise cli.ConfigError("--pool and --shard: choose one (a pool takes any job no other process holds)")
    first = parse_first(cli.FLAGS.first)
    if cli.FLAGS.threads < 1:
        raise cli.ConfigError(f"--threads={cli.FLAGS.threads} is not an int >= 1")
    if cli.FLAGS.limit is not None and cli.FLAGS.limit < 1:
        raise cli.ConfigError(f"--limit={cli.FLAGS.limit} is not an int >= 1")
    from asmnas_tf.data.sources import load_fashion_mnist_idx

    arrays = load_fashion_mnist_idx(cli.FLAGS.idx_dir)  # before TensorFlow starts: a missing folder is one line
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(cli.FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(cli.FLAGS.threads)
    from asmnas_tf.benchmark.recipe import RECIPE
    from asmnas_tf.benchmark.train_one import prepared_arrays, train_architecture

    data = prepared_arrays(arrays, RECIPE)

    def train(code, seed):
        return train_architecture(code, seed, RECIPE, data)

    def log(line):
        print(line, flush=True)

    if cli.FLAGS.pool:
        build_pool(cli.FLAGS.out, train, log=log, limit=cli.FLAGS.limit, first=first)
    else:
        build(cli.FLAGS.out, shard, train, log=log, limit=cli.FLAGS.limit, first=first)


def _summary():
    from asmnas_tf.benchmark import fidelity
    from asmnas_tf.benchmark.table import DEFAULT_TABLE, load_table

    table = load_table(cli.FLAGS.table or DEFAULT_TABLE)
    print(fidelity.summary_text(fidelity.summary(table)))


def _score():
    from asmnas_tf.benchmark import scoring

    from asmnas_tf.experiments import task_pool

    model_dir = cli.require_model_dir()
    task_pool.check_shard(cli.FLAGS.task_index, cli.FLAGS.num_tasks)
    config = cli.parse_gin(cli.FLAGS.gin_file, cli.FLAGS.gin_param)
    scoring.run_score(model_dir, config=config, task_index=cli.FLAGS.task_index, num_tasks=cli.FLAGS.num_tasks)


def _report():
    from asmnas_tf.benchmark import scoring

    scoring.report(cli.require_model_dir(), table=cli.FLAGS.table)


def _benchmark(name):
    {"build": _build, "summary": _summary, "score": _score, "report": _report}[name]()


def main():
    cli.start(_benchmark, __doc__, command_choices=COMMANDS)


if __name__ == "__main__":
    main()
