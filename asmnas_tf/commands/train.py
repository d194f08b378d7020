"""`asmnas-train`: train and test the evaluation network of a genotype (paper §5.2).

  asmnas-train --gin_file=train/cifar10.gin
      --gin_param="run_train.genotype = 'runs/search/genotype.json'" --model_dir=runs/train
"""

from asmnas_tf.commands import cli


def _train():
    from asmnas_tf.data import imagenet  # noqa: F401  (registers its gin configurable)
    from asmnas_tf.evaluation import runner

    model_dir = cli.require_model_dir()
    config = cli.parse_gin(cli.FLAGS.gin_file, cli.FLAGS.gin_param)
    cli.prepare_run_dir(model_dir, config)
    result = runner.run_train(model_dir)
    if not result.chief:
        print("Worker done; the chief tests and saves the model.")
        return
    results = result.results
    print(f"test_accuracy={results['test_accuracy']:.4f} params={results['params']} macs={results['macs']}")


def main():
    cli.start(_train, __doc__)  # flag errors: one line, status 2


if __name__ == "__main__":
    main()
