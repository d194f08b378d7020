"""`asmnas-search`: search an architecture with ASM-NAS, a dataset in, genotype.json out.

  asmnas-search --gin_file=search/fashion_mnist.gin --model_dir=runs/fmnist
"""


from asmnas_tf.commands import cli


def _search():
    from asmnas_tf.rundir import run_dir
    from asmnas_tf.supernet import runner

    model_dir = cli.require_model_dir()
    config = cli.parse_gin(cli.FLAGS.gin_file, cli.FLAGS.gin_param)
    cli.prepare_run_dir(model_dir, config)
    result = runner.run_search(model_dir)
    if result.genotype is None:
        print("Worker done; the chief writes the genotype.")
        return
    print(f"Genotype ({len(result.genotype.cells)} cells):")
    print(runner.describe(result.genotype))
    print(f"Written: {run_dir.RunDir(model_dir).genotype_path}")
    for path in result.plots:
        print(f"Plot: {path}")


def main():
    cli.start(_search, __doc__)  # flag errors: one line, status 2


if __name__ == "__main__":
    main()
