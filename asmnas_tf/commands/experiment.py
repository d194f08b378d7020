"""`asmnas-experiment`: the paper's comparative experiments, timing, stability, compare.

  asmnas-experiment timing    --gin_file=experiment/timing.gin --model_dir=runs/timing
  asmnas-experiment stability --model_dir=runs/search          (a finished search run)
  asmnas-experiment compare   --gin_file=experiment/compare_fashion_mnist.gin --model_dir=runs/compare
  asmnas-experiment pipeline  --gin_file=experiment/fashion_mnist_hour.gin --model_dir=runs/hour

`compare` runs its (method, seed) tasks in any number of processes or
machines sharing --model_dir: start the same command in each (a pool of
workers, each taking the tasks no other holds), or give each
--task_index=i --num_tasks=n (an array job: every n-th task from the i-th).
Each finished task lands in results.jsonl once (docs/many-machines.md).

`stability` reads the search run's own config.gin (same supernet, same data)
and writes into <search run>/stability/; --gin_param may add bindings such
as `run_stability.cells = [0]`.
"""

import os

from asmnas_tf.commands import cli, task_flags  # noqa: F401  (--task_index, --num_tasks)

EXPERIMENTS = ("timing", "stability", "compare", "pipeline")


def _experiment(name):
    from asmnas_tf.experiments import compare, pipeline, stability, timing
    from asmnas_tf.rundir import run_dir, run_lock
    from asmnas_tf.supernet import runner  # noqa: F401  (its configurables, read by stability)

    model_dir = cli.require_model_dir()
    if name == "stability":
        config_path = os.path.join(model_dir, run_dir.CONFIG_FILE)
        if not os.path.isfile(config_path):
            raise run_dir.RunDirError(f"--model_dir={model_dir}: no {run_dir.CONFIG_FILE}; expected a search run")
        cli.parse_gin([config_path, *cli.FLAGS.gin_file], cli.FLAGS.gin_param)
        run_lock.acquire(model_dir)  # the search must have ended; it writes <run>/stability/
        stability.run_stability(model_dir)
        return
    if name == "compare":
        from asmnas_tf.experiments import task_pool

        task_pool.check_shard(cli.FLAGS.task_index, cli.FLAGS.num_tasks)
    config = cli.parse_gin(cli.FLAGS.gin_file, cli.FLAGS.gin_param)
    run_dir.prepare(model_dir, config, lock=name != "compare")  # compare's workers share it, task by task
    if name == "timing":
        timing.run_timing(model_dir)
    elif name == "pipeline":
        pipeline.run_pipeline(model_dir)
    else:
        compare.run_compare(model_dir, task_index=cli.FLAGS.task_index, num_tasks=cli.FLAGS.num_tasks)


def main():
    # The same flag parser as the other commands, with one sub-command.
    cli.start(_experiment, __doc__, command_choices=EXPERIMENTS)


if __name__ == "__main__":
    main()
