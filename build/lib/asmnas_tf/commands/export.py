"""`asmnas-export`: export a trained run directory for serving, <model_dir>/saved_model/.

  asmnas-export --model_dir=runs/train
  saved_model_cli show --dir runs/train/saved_model --all
"""

from asmnas_tf.runtime import cli


def _export():
    from asmnas_tf.evaluation import export  # before gin parsing: its configurables

    model_dir = cli.require_model_dir()
    cli.parse_gin(cli.FLAGS.gin_file, cli.FLAGS.gin_param)
    path = export.export_saved_model(model_dir)
    print(f"Written: {path} (signature '{export.SIGNATURE}': uint8 images -> probabilities, class_ids)")


def main():
    cli.start(_export, __doc__)  # flag errors: one line, status 2


if __name__ == "__main__":
    main()
