"""`asmnas-demo`: search on real Fashion-MNIST, train the result, export it.

Three steps, each the project's own command, in a new run directory
runs/demo-<time>/ under the current directory (nothing existing is touched):

  1. asmnas-search --gin_file=search/demo.gin          -> search/genotype.json
  2. asmnas-train  --gin_file=train/demo.gin            -> train/results.json
  3. asmnas-export                                      -> train/saved_model/

Sized for a 2-core laptop CPU: minutes, not the paper's GPU-days.
"""

import json
import os
import subprocess
import sys
import time


def _step(title, command, *args):
    print(f"\n=== {title}\n$ asmnas-{command} {' '.join(args)}", flush=True)
    started = time.perf_counter()
    # Each step in its own process, as a user would run it: TensorFlow's
    # device set-up and gin's configuration are per process.
    result = subprocess.run([sys.executable, "-m", f"asmnas_tf.commands.{command}", *args])
    if result.returncode != 0:
        sys.exit(result.returncode)
    return time.perf_counter() - started


def main():
    run = os.path.join("runs", time.strftime("demo-%Y%m%d-%H%M%S"))
    search_dir, train_dir = os.path.join(run, "search"), os.path.join(run, "train")
    genotype = os.path.join(search_dir, "genotype.json")
    started = time.perf_counter()
    search_s = _step("1/3 Search (ASM-NAS supernet, real Fashion-MNIST)", "search",
                     "--gin_file=search/demo.gin", f"--model_dir={search_dir}")
    train_s = _step("2/3 Train the searched cells (evaluation network)", "train",
                    "--gin_file=train/demo.gin", f"--gin_param=run_train.genotype = '{genotype}'",
                    "--gin_param=run_train.num_cells = None", f"--model_dir={train_dir}")
    export_s = _step("3/3 Export for serving", "export", f"--model_dir={train_dir}")

    with open(os.path.join(train_dir, "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    print(
        f"\nDemo done in {time.perf_counter() - started:.0f} s "
        f"(search {search_s:.0f} s, train {train_s:.0f} s, export {export_s:.0f} s)\n"
        f"  genotype:      {genotype}\n"
        f"  attention:     {os.path.join(search_dir, 'attention.json')} "
        f"(heatmaps: {os.path.join(search_dir, 'plots', 'attention.png')})\n"
        f"  cell diagrams: {os.path.join(search_dir, 'plots', 'cells')}/\n"
        f"  test accuracy: {results['test_accuracy']:.4f}\n"
        f"  SavedModel:    {os.path.join(train_dir, 'saved_model')}\n"
        f"  TensorBoard:   tensorboard --logdir {run}"
    )


if __name__ == "__main__":
    main()
