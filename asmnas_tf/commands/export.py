"""`asmnas-export`: export a trained run directory for serving.

  asmnas-export --model_dir=runs/train                      # <model_dir>/saved_model/
  asmnas-export --model_dir=runs/train --formats=saved_model,litert,litert_float16,litert_int8,onnx --verify
  saved_model_cli show --dir runs/train/saved_model --all

Formats other than saved_model need the export extra: pip install 'asmnas-tf[export]'.
litert_int8 calibrates on the run's training images and --verify tests on
its test images, both read as the run's config.gin binds `load_arrays`.
"""

import sys

from absl import flags

from asmnas_tf.commands import cli

flags.DEFINE_string("formats", "saved_model",
                    "Comma list of: saved_model, litert, litert_float16, litert_int8, onnx.")
flags.DEFINE_bool("verify", False,
                  "Run each written file in its own runtime on the run's test images and compare its accuracy "
                  "with the SavedModel's (which is then written too: it is the reference).")


def _export():
    from asmnas_tf.evaluation import export  # before gin parsing: its configurables
    from asmnas_tf.evaluation.export_formats import check_packages, parse_formats, write_formats

    model_dir = cli.require_model_dir()
    names = parse_formats(cli.FLAGS.formats, flag="--formats")
    check_packages(names, flag="--formats")
    cli.parse_gin(cli.FLAGS.gin_file, cli.FLAGS.gin_param)
    test = None
    if cli.FLAGS.verify:
        from asmnas_tf.evaluation.run_data import run_arrays

        names = tuple(dict.fromkeys(["saved_model", *names]))
        test = run_arrays(model_dir, "the test images for --verify")  # before anything is written
        if not len(test.x_test):
            raise export.ExportError(f"--verify: the data of --model_dir={model_dir} has no test images")
    paths = write_formats(model_dir, names, flag="--formats")
    for name, path in paths.items():
        print(f"Written: {path} ({name}: uint8 images -> probabilities, class_ids)")
    if test is not None:
        from asmnas_tf.evaluation.verify_export import verify_export

        print(f"Verifying on {len(test.x_test)} test images:")
        verify_export(model_dir, test.x_test, test.y_test, formats=names)


def main():
    for name in ("formats", "verify"):  # listed by --help with the common flags
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])
    cli.start(_export, __doc__)  # flag errors: one line, status 2


if __name__ == "__main__":
    main()
