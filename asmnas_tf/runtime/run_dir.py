"""The run directory (SPEC §8): created, or resumed, never silently overwritten.

A run directory records the gin bindings it was started with in
`config.gin`. Running again with the same bindings resumes it; with other
bindings it is refused, so that no result is mixed with another config's.
The process that prepares a run directory holds its lock (`run_lock.py`)
until it ends: a second process on it is refused.
"""

import os
from asmnas_tf.errors import UserError
from asmnas_tf.runtime import run_lock
from asmnas_tf.runtime.atomic_write import write_file_atomic, write_text_atomic  # noqa: F401  (callers' name)

CONFIG_FILE = "config.gin"
OPERATIVE_CONFIG_FILE = "operative_config.gin"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
HISTORY_FILE = "history.csv"
GENOTYPE_FILE = "genotype.json"
ATTENTION_FILE = "attention.json"
TIMING_FILE = "timing.json"
PLOTS_DIR = "plots"
# The trained supernet (weights and, for DARTS, alphas), for the stability
# experiment (paper Fig. 3); written before genotype.json.
SUPERNET_WEIGHTS_FILE = "supernet.weights.h5"


class RunDirError(UserError):
    """A run directory that cannot be used; the message is one line."""


# The run directories `prepare` created in this process, each with the
# folders it had to make (outermost first): see `discard_unused_run_dirs`.
_CREATED = []


def prepare(model_dir, config_text):
    """Create `model_dir` or check that it is this config's; returns True if resuming."""
    config_path = os.path.join(model_dir, CONFIG_FILE)
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise RunDirError(f"--model_dir={model_dir} exists and is not a directory")
    if os.path.isdir(model_dir) and _contents(model_dir):
        if not os.path.isfile(config_path):
            raise RunDirError(
                f"--model_dir={model_dir} is not empty and holds no {CONFIG_FILE}: "
                f"not a run directory of this tool; choose a new --model_dir"
            )
        _check_writable(model_dir)
        run_lock.acquire(model_dir)  # before reading config.gin: its writer may still be at work
        try:
            _check_config(model_dir, config_path, config_text)
        except RunDirError:
            run_lock.release(model_dir)
            raise
        return True
    new_dirs = _missing_dirs(model_dir)
    try:
        os.makedirs(model_dir, exist_ok=True)
    except OSError as error:
        raise RunDirError(f"--model_dir={model_dir} cannot be created: {error.strerror}") from None
    _CREATED.append((model_dir, new_dirs))
    _check_writable(model_dir)
    run_lock.acquire(model_dir)
    write_text_atomic(config_path, config_text)
    return False


def _contents(model_dir):
    """The directory's entries but the lock (a killed run's stale lock alone is an empty run)."""
    return [name for name in os.listdir(model_dir) if name != run_lock.LOCK_FILE]


def _check_config(model_dir, config_path, config_text):
    with open(config_path, encoding="utf-8") as f:
        previous = f.read()
    if previous != config_text:
        raise RunDirError(
            f"--model_dir={model_dir} was started with another configuration "
            f"(see {config_path}); rerun with the same --gin_file/--gin_param to "
            f"resume it, or choose a new --model_dir"
        )


def discard_unused_run_dirs():
    """Undo `prepare` for new runs that stopped before any work.

    Called when a run is refused for a user error (bad genotype, missing
    data...): a run directory holding nothing but the `config.gin` written
    here is put back as it was (the file removed, the folders made for it
    removed), so that the corrected command is not refused as "started with
    another configuration". A directory holding anything else (checkpoints,
    history...) is kept: the run can be resumed.
    """
    while _CREATED:
        model_dir, new_dirs = _CREATED.pop()
        run_lock.release(model_dir)
        try:
            if os.listdir(model_dir) == [CONFIG_FILE]:
                os.remove(os.path.join(model_dir, CONFIG_FILE))
            for directory in reversed(new_dirs):
                os.rmdir(directory)  # refuses a folder that is not empty
        except OSError:
            pass


def _missing_dirs(path):
    """The folders `os.makedirs(path)` would create, outermost first."""
    missing = []
    path = os.path.abspath(path)
    while not os.path.exists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing[::-1]


def _check_writable(model_dir):
    if not os.access(model_dir, os.W_OK | os.X_OK):
        raise RunDirError(f"--model_dir={model_dir} is not writable")


def save_weights_atomic(model, path):
    """`model.save_weights(path)`, whole or not at all (Keras wants the .weights.h5 suffix)."""
    write_file_atomic(path, model.save_weights, suffix=".weights.h5")
