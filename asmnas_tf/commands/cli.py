"""What every entry point shares (SPEC §9): flags, strict gin, one-line errors.

`--gin_file` (repeatable; a path, or one relative to the shipped
configs: the checkout's gin/, inside the package as asmnas_tf/configs), `--gin_param` (repeatable), `--model_dir`. Gin parsing is strict:
an unknown configurable or parameter is an error before any work starts.
A user error (bad flag value, gin binding, genotype, data, run directory)
prints one line, `error: ...`, and exits with status 2: no traceback.
"""

import importlib.resources
import inspect
import re
import os
import sys

from absl import flags, logging

from asmnas_tf.errors import UserError
from asmnas_tf.host.malloc_arenas import disable_fastbins, limit_malloc_arenas

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
limit_malloc_arenas()  # before TensorFlow's threads: peak RSS (malloc_arenas.py)
disable_fastbins()  # the first step's graph building: start-up time (malloc_arenas.py)


def _start_tensorflow_quietly():
    """Import TensorFlow and probe its devices with stderr closed.

    TensorFlow's C++ start-up lines (oneDNN notice, CUDA probing on a machine
    without a GPU) are written before any log setting applies; they would
    bury the one line a user error prints. Python exceptions still surface.
    """
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()
        tf.get_logger().setLevel("WARNING")  # "Using MirroredStrategy with ..." etc.
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_start_tensorflow_quietly()

import gin  # noqa: E402

# Imported here, before any gin file is parsed: strict parsing needs every
# configurable registered, and these modules hold some (load_arrays,
# make_dataset, make_strategy) that a command's own imports may not reach.
import asmnas_tf.data  # noqa: E402,F401
import asmnas_tf.rundir.checkpoints  # noqa: E402,F401
import asmnas_tf.host.distribute  # noqa: E402,F401
import asmnas_tf.space.genotype  # noqa: E402,F401
from asmnas_tf.rundir.run_dir import discard_unused_run_dirs  # noqa: E402
from asmnas_tf.rundir.stop_signals import RunStopped  # noqa: E402

# The shipped configs are package data: found in the installed package as in
# the checkout, from any working directory.
GIN_DIR = str(importlib.resources.files("asmnas_tf") / "configs")

flags.DEFINE_multi_string("gin_file", [], "Gin config file(s): a path, or one under the shipped gin/ (e.g. search/demo.gin).")
flags.DEFINE_multi_string("gin_param", [], "Gin binding(s), e.g. 'run_search.epochs = 2'.")
flags.DEFINE_string("model_dir", None, "Run directory (SPEC §8).")

FLAGS = flags.FLAGS


class ConfigError(UserError):
    """A gin file or binding that cannot be used."""


def _one_line(error):
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    # gin appends "In call to configurable ..." and file positions on new lines.
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return "; ".join(line for line in lines if not line.startswith("In call to configurable"))


def resolve_gin_file(path):
    """`path` as given if it exists, else inside the package's configs/; ConfigError if neither."""
    if os.path.isfile(path):
        return path
    candidate = os.path.join(GIN_DIR, path)
    if os.path.isfile(candidate):
        return candidate
    raise ConfigError(f"--gin_file={path}: no such file (looked in . and {GIN_DIR})")


def parse_gin(files, params):
    """Strict parsing; every configurable must be imported before this."""
    gin.add_config_file_search_path(GIN_DIR)
    paths = [resolve_gin_file(f) for f in files]
    # gin logs an ERROR for every include it finds only on its search path.
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.FATAL)
    try:
        gin.parse_config_files_and_bindings(paths, params, skip_unknown=False, print_includes_and_imports=False)
    except Exception as error:  # gin raises ValueError, KeyError, IOError, SyntaxError...
        raise ConfigError(f"gin: {_one_line(error)}") from None
    finally:
        logging.set_verbosity(verbosity)
    _check_binding_types()
    return gin.config_str()


def _expected_kind(default, value):
    """What `value` should have been, or None if it fits `default`'s type.

    Only numbers and booleans are checked: a string default may take other
    values (`verbose = 'auto'` or 2), None means "off" or "not set" anywhere,
    and references/macros (not plain values) are gin's to resolve.
    """
    if value is None or default is None or not isinstance(value, (str, int, float, bool, list, tuple, dict)):
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false (True/False)"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if isinstance(default, float):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    return None


def _bound_selectors():
    """The (scoped) selectors with bindings, read from gin's public text of the config."""
    keys = re.findall(r"^([A-Za-z_][\w./]*)\.\w+\s*=", gin.config_str(), flags=re.MULTILINE)
    return list(dict.fromkeys(keys))


def _check_binding_types():
    """Refuse a binding whose type does not fit its parameter's default.

    gin passes any literal through: `run_search.epochs = 'three'` would reach
    the optimizer after the data is loaded, as "invalid literal for int():
    'threethreethree...'". Checked here, it is one line before any work.
    Only gin's public API: the bound selectors from `gin.config_str()`, their
    values from `gin.get_bindings`, the function from `gin.get_configurable`.
    """
    for scoped in _bound_selectors():
        selector = scoped.rsplit("/", 1)[-1]
        try:
            configurable = gin.get_configurable(selector)
            params = gin.get_bindings(scoped, resolve_references=False)
        except ValueError:
            continue
        try:
            signature = inspect.signature(configurable)
        except (TypeError, ValueError):
            continue
        for name, value in params.items():
            parameter = signature.parameters.get(name)
            if parameter is None or parameter.default is inspect.Parameter.empty:
                continue
            expected = _expected_kind(parameter.default, value)
            if expected:
                binding = f"{scoped}.{name} = {value!r}"
                raise ConfigError(f"gin: {binding}: expected {expected} (its default is {parameter.default!r})")


# The errors that are the user's to fix (one line, exit 2): the project's
# own classes only. A ValueError from Keras or TensorFlow is a bug until shown
# otherwise, and keeps its traceback (exit 1).
USER_ERRORS = (UserError,)


def _user_error(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv, command_choices=None):
    """`flags_parser` for `absl.app.run`: a bad command line is one line and status 2.

    absl's own parser prints "FATAL Flags parsing error: ..." and a hint and
    exits 1, and a stray positional argument (`app.UsageError`) prints the
    whole usage text, then exits 1: neither looks like our other user errors.
    `command_choices`: the command takes exactly one sub-command, one of them
    (`asmnas-experiment timing`); otherwise no positional argument at all.
    """
    try:
        rest = FLAGS(argv)
    except flags.Error as error:
        _user_error(_one_line(error))
    if command_choices is not None:
        if len(rest) != 2 or rest[1] not in command_choices:
            given = " ".join(rest[1:]) or "none"
            _user_error(f"expected one sub-command, one of {', '.join(command_choices)}; got {given!r}")
    elif len(rest) > 1:
        _user_error(f"unexpected argument(s) {' '.join(rest[1:])!r}: options are flags, "
                    f"e.g. --gin_param='run_search.epochs = 2'")
    return rest


def run(main_fn):
    """Call `main_fn()` turning user errors into one line and exit status 2."""
    if not FLAGS["verbosity"].present:
        # absl.app starts at INFO; TFDS warns about every folder it probes.
        logging.set_verbosity(logging.ERROR)
    try:
        main_fn()
    except USER_ERRORS as error:
        # A run refused before any work (bad genotype, missing data) must not
        # leave a new run directory behind, which a corrected command would
        # then refuse as "started with another configuration".
        discard_unused_run_dirs()
        _user_error(_one_line(error))
    except RunStopped as stopped:  # SIGTERM / Ctrl-C while training: the state is saved
        print(_one_line(stopped), file=sys.stderr)
        sys.exit(stopped.exit_status)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        sys.exit(130)


def prepare_run_dir(model_dir, config):
    """Create or resume the run directory, on the chief only.

    The strategy comes first: under a multi-worker strategy every worker runs
    the same command with the same --model_dir (a shared folder), and only
    the chief writes there (the others read the saved state to resume).
    """
    from asmnas_tf.rundir import run_dir
    from asmnas_tf.host.distribute import make_strategy
    from asmnas_tf.training.train_loop import is_chief

    if is_chief(make_strategy()):
        run_dir.prepare(model_dir, config)


def require_model_dir():
    if not FLAGS.model_dir:
        raise ConfigError("--model_dir is required")
    return FLAGS.model_dir


def start(main_fn, doc, command_choices=None):
    """Run a command: `doc` and the common flags for `--help`, then `run(main_fn)`.

    A console script's `__main__` is pip's generated wrapper: absl would show
    its (empty) docstring and no flags. `main_fn` takes the sub-command when
    `command_choices` is given, nothing otherwise.
    """
    from absl import app

    sys.modules["__main__"].__doc__ = doc
    for name in ("gin_file", "gin_param", "model_dir"):
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])

    def main(argv):
        run(lambda: main_fn(argv[1]) if command_choices else main_fn())

    app.run(main, flags_parser=lambda argv: parse_flags(argv, command_choices))
