"""Search, train, test and export in one command: `asmnas-experiment pipeline`.

Three steps, each the project's own command in a fresh process (each its
own gin configuration and graph), under `<model_dir>`:

  1. asmnas-search  search_gin + search_params            -> search/genotype.json
  2. asmnas-train   train_gin + train_params, the searched -> train/results.json (test accuracy)
                    genotype at its own depth
  3. asmnas-export  export_params                          -> train/saved_model/

Before the search, the training's and the export's bindings are checked in
a child process of their own (`TrainConfig().check()`), so a typo in
the training's recipe is one `error:` line before any search, not after it.
Each step resumes itself (a finished search or training is not run again),
so the same command continues a stopped pipeline. `pipeline.json` holds the
wall time of each step and the test accuracy; `asmnas-demo` is this with
the demo's files.
"""

import json
import subprocess
import sys
import time

import gin

from asmnas_tf.errors import UserError
from asmnas_tf.rundir import run_dir as rd


# The training and export checks, in a child process: their gin config must
# not mix with this process's (nor with the search's).
_CHECK = """
import json, sys
from asmnas_tf.commands import cli
def check():
    from asmnas_tf.data import imagenet  # noqa: F401  (its configurable)
    from asmnas_tf.evaluation import export, runner
    cli.parse_gin(json.loads(sys.argv[1]), json.loads(sys.argv[2]))
    runner.TrainConfig().check()
    export.export_saved_model(None, check_only=True)
cli.run(check)
"""


class PipelineError(UserError):
    """A step of the pipeline failed; its own output (above) says why."""


def command(script, gin_files, params, model_dir):
    """`python -m asmnas_tf.commands.<script>` of this interpreter: the installed package."""
    return [sys.executable, "-m", f"asmnas_tf.commands.{script}", *[f"--gin_file={f}" for f in gin_files],
            *[f"--gin_param={p}" for p in params], f"--model_dir={model_dir}"]


def run_step(title, args, who="pipeline", error=PipelineError):
    """Runs one command, printing it as a user would type it; returns its wall time (s).

    A failure raises `error` naming `who` ran it (the pipeline, a comparison).
    """
    print(f"\n=== {title}\n$ asmnas-{args[2].rpartition('.')[2]} {' '.join(args[3:])}", flush=True)
    started = time.perf_counter()
    result = subprocess.run(args)
    if result.returncode != 0:
        raise error(f"{who}: {title} failed (exit {result.returncode}); its output is above")
    return time.perf_counter() - started


def check_train_and_export(train_gin, train_params, export_params):
    """The training's and the export's bindings, checked before any search (one line on failure)."""
    result = subprocess.run([sys.executable, "-c", _CHECK, json.dumps(list(train_gin)),
                             json.dumps([*train_params, *export_params])], capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        raise UserError(lines[-1][len("error: "):] if lines else
                        f"pipeline: the training's configuration cannot be read: {result.stderr[-500:]}")


def pipeline(model_dir, search_gin, search_params, train_gin, train_params, export_params, titles=None):
    """The three steps in `model_dir`; returns what pipeline.json holds."""
    titles = titles or {"search": "1/3 Search", "train": "2/3 Train the searched cells",
                        "export": "3/3 Export for serving"}
    run = rd.RunDir(model_dir)
    search_dir, train_dir = run.search.path, run.train.path
    genotype = run.search.genotype_path
    train_params = [*train_params, f"run_train.genotype = '{genotype}'", "run_train.num_cells = None"]
    check_train_and_export(train_gin, train_params, export_params)
    started = time.perf_counter()
    seconds = {"search_s": run_step(titles["search"], command("search", search_gin, search_params, search_dir)),
               "train_s": run_step(titles["train"], command("train", train_gin, train_params, train_dir))}
    seconds["export_s"] = run_step(titles["export"], command("export", [], export_params, train_dir))
    results = run.train.read_results()
    summary = {**seconds, "total_s": time.perf_counter() - started,
               "test_accuracy": results.get("test_accuracy"),
               "test_accuracy_single_view": results.get("test_accuracy_single_view"),
               "num_test": results.get("num_test"), "params": results.get("params"),
               "genotype": genotype, "saved_model": run.train.saved_model,
               "search": command("search", search_gin, search_params, search_dir)[3:],
               "train": command("train", train_gin, train_params, train_dir)[3:],
               "export": command("export", [], export_params, train_dir)[3:]}
    run.write_pipeline(summary)
    return summary


@gin.configurable(denylist=["model_dir"])
def run_pipeline(model_dir, search_gin=("search/demo.gin",), search_params=(), train_gin=("train/demo.gin",),
                 train_params=(), export_params=()):
    """`pipeline` with gin's files and bindings: the `asmnas-experiment pipeline` command."""
    summary = pipeline(model_dir, list(search_gin), list(search_params), list(train_gin), list(train_params),
                       list(export_params))
    print(f"\nPipeline done in {summary['total_s']:.0f} s (search {summary['search_s']:.0f} s, "
          f"train {summary['train_s']:.0f} s, export {summary['export_s']:.0f} s): test accuracy "
          f"{summary['test_accuracy']:.4f} on {summary['num_test']} images; "
          f"written: {rd.RunDir(model_dir).file(rd.PIPELINE_FILE)}")
    return summary
