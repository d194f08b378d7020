"""The images a run directory was trained and tested on, found from its own config.gin.

A training run records its gin bindings in `config.gin`, `load_arrays.*`
among them (the dataset, its folder, the subsets). The export reads them
from there, not from the global gin config: the int8 conversion calibrates
on the run's training images and `--verify` tests on its test images, with
no flag repeating where the data lives.
"""

import os

from gin import config_parser

from asmnas_tf.data.sources import load_arrays
from asmnas_tf.errors import UserError
from asmnas_tf.rundir.run_dir import CONFIG_FILE


class RunDataError(UserError):
    """A run directory whose data cannot be found; the message is one line."""


class _LiteralsOnly(config_parser.ParserDelegate):
    """`load_arrays` takes literals; a reference or macro elsewhere in the file is read as None."""

    def configurable_reference(self, scoped_configurable_name, evaluate):
        return None

    def macro(self, macro_name):
        return None


def load_arrays_bindings(model_dir):
    """The run's unscoped `load_arrays.*` bindings, as keyword arguments."""
    path = os.path.join(model_dir, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as error:
        raise RunDataError(f"--model_dir={model_dir}: cannot read {CONFIG_FILE} to find the run's data "
                           f"({error.strerror})") from None
    bindings = {}
    for statement in config_parser.ConfigParser(text, _LiteralsOnly()):
        if isinstance(statement, config_parser.BindingStatement):
            if statement.selector == "load_arrays" and not statement.scope:
                bindings[statement.arg_name] = statement.value
    return bindings


def run_arrays(model_dir, purpose):
    """The run's `ImageArrays`; `purpose` says in the error what they were for.

    A run trained from arrays in Python (`nas.train(x, y, ...)`) or on
    ImageNet names no `load_arrays.dataset`: its images must be passed.
    """
    bindings = load_arrays_bindings(model_dir)
    if "dataset" not in bindings:
        raise RunDataError(
            f"--model_dir={model_dir}: its {CONFIG_FILE} binds no load_arrays.dataset, so {purpose} cannot be "
            f"read from the run's data; pass them in Python (asmnas_tf.export(..., calibration_images=...), "
            f"verify_export(run_dir, images, labels))"
        )
    return load_arrays(**bindings)
