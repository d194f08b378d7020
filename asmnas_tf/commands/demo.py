"""`asmnas-demo`: search on real Fashion-MNIST, train the result, export it.

Three steps, each the project's own command, in a new run directory
runs/demo-<time>/ under the current directory (nothing existing is touched):

  1. asmnas-search --gin_file=search/demo.gin          -> search/genotype.json
  2. asmnas-train  --gin_file=train/demo.gin            -> train/results.json
  3. asmnas-export                                      -> train/saved_model/

Sized for a 2-core laptop CPU: minutes, not the paper's GPU-days. The same
steps as `asmnas-experiment pipeline` (`experiments/pipeline.py`), with the
demo's files.
"""

import os
import time

from asmnas_tf.commands import cli

SEARCH_GIN = ["search/demo.gin"]
TRAIN_GIN = ["train/demo.gin"]
EXPORT_PARAMS = ["export_saved_model.test_time_augmentation = 'flip'"]  # as train/demo.gin tests
# What the benchmark has shown of the shipped search so far (docs/search-remedies.md).
SEARCH_CAVEAT = ("note: the search runs the paper's form, which is not yet shown to pick better cells than "
                 "random ones (docs/search-remedies.md)")
TITLES = {"search": "1/3 Search (ASM-NAS supernet, real Fashion-MNIST)",
          "train": "2/3 Train the searched cells (evaluation network)",
          "export": "3/3 Export for serving"}


def _demo():
    from asmnas_tf.experiments.pipeline import pipeline
    from asmnas_tf.rundir.run_dir import RunDir

    run = os.path.join("runs", time.strftime("demo-%Y%m%d-%H%M%S"))
    summary = pipeline(run, SEARCH_GIN, [], TRAIN_GIN, [], EXPORT_PARAMS, titles=TITLES)
    search = RunDir(run).search
    print(
        f"\nDemo done in {summary['total_s']:.0f} s "
        f"(search {summary['search_s']:.0f} s, train {summary['train_s']:.0f} s, "
        f"export {summary['export_s']:.0f} s)\n"
        f"  genotype:      {summary['genotype']}\n"
        f"  attention:     {search.attention_path} "
        f"(heatmaps: {os.path.join(search.plots, 'attention.png')})\n"
        f"  cell diagrams: {os.path.join(search.plots, 'cells')}/\n"
        f"  test accuracy: {summary['test_accuracy']:.4f} ({summary['num_test']} test images)\n"
        f"  SavedModel:    {summary['saved_model']}\n"
        f"  TensorBoard:   tensorboard --logdir {run}\n"
        f"  {SEARCH_CAVEAT}"
    )


def main():
    cli.run(_demo)  # a failed step: one line, its exit status 2


if __name__ == "__main__":
    main()
