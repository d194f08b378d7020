"""`--task_index`, `--num_tasks`: a process's share of a multi-run command's tasks (an array job).

Defined once for every command that spreads its runs (`asmnas-experiment
compare`, `asmnas-benchmark score`); the tasks themselves are taken in
`experiments/task_pool.py`.
"""

from absl import flags

flags.DEFINE_integer("task_index", 0, "this process's share of the tasks, 0 <= task_index < num_tasks")
flags.DEFINE_integer("num_tasks", 1, "how many processes share the tasks by index (an array job)")
