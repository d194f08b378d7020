"""The run directory (SPEC §8): created, or resumed, never silently overwritten.

A run directory records the gin bindings it was started with in
`config.gin`. Running again with the same bindings resumes it; with other
bindings it is refused, so that no result is mixed with another config's.
The process that prepares a run directory holds its lock (`run_lock.py`)
until it ends: a second process on it is refused.
"""

import json
import os

from asmnas_tf.errors import UserError
from asmnas_tf.rundir import run_lock
from asmnas_tf.rundir.atomic_write import write_file_atomic, write_text_atomic  # noqa: F401  (callers' name)

# Every file a run directory holds, named here only.
CONFIG_FILE = "config.gin"
OPERATIVE_CONFIG_FILE = "operative_config.gin"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
HISTORY_FILE = "history.csv"
TIMING_FILE = "timing.json"
PLOTS_DIR = "plots"
# A search's:
GENOTYPE_FILE = "genotype.json"
ATTENTION_FILE = "attention.json"
INITIAL_ATTENTION_FILE = "initial_attention.json"
DIAGNOSTICS_FILE = "diagnostics.json"
GENOTYPES_FILE = "genotypes.jsonl"  # the genotype at every epoch (telemetry)
RSPS_FILE = "rsps.json"
PARETO_FILE = "pareto.json"  # a budgeted search's picks: score against parameters and multiply-adds
PARETO_PLOT_FILE = "pareto.png"  # in plots/
# The trained supernet (weights and, for DARTS, alphas), for the stability
# experiment (paper Fig. 3); written before genotype.json.
SUPERNET_WEIGHTS_FILE = "supernet.weights.h5"
# A training's:
RESULTS_FILE = "results.json"
SIZE_FILE = "size.json"
MODEL_FILE = "model.keras"
NORMALIZATION_FILE = "normalization.json"
SAVED_MODEL_DIR = "saved_model"
# The other serving formats (`asmnas-export --formats=...`), each converted from the SavedModel:
LITERT_FILE = "model.tflite"
LITERT_FLOAT16_FILE = "model_float16.tflite"
LITERT_INT8_FILE = "model_int8.tflite"
ONNX_FILE = "model.onnx"
# A pipeline's (its steps in search/ and train/):
PIPELINE_FILE = "pipeline.json"
SEARCH_DIR = "search"
TRAIN_DIR = "train"
# The experiments' (asmnas-experiment, asmnas-benchmark score):
COMPARE_RESULTS_FILE = "results.jsonl"
COMPARE_TABLE_FILE = "compare.md"
COMPARE_JSON_FILE = "compare.json"
COMPARE_PLOT_FILE = "compare.png"
STABILITY_DIR = "stability"  # inside the search's run directory
STABILITY_CSV_FILE = "stability.csv"
STABILITY_TABLE_FILE = "stability.md"
STABILITY_PLOT_FILE = "stability.png"
STEP_TIMING_CSV_FILE = "timing.csv"
STEP_TIMING_TABLE_FILE = "timing.md"
STEP_TIMING_JSON_FILE = "timing.json"  # the experiment's table, in its own run directory
CLAIMS_DIR = "claims"  # a task pool's claims (experiments/task_pool.py)
SCORES_FILE = "scores.jsonl"
SCORES_TABLE_FILE = "scores.md"
SCORES_PLOT_FILE = "scores.png"


class RunDirError(UserError):
    """A run directory that cannot be used; the message is one line."""


# The run directories `prepare` created in this process, each with the
# folders it had to make (outermost first): see `discard_unused_run_dirs`.
_CREATED = []


def prepare(model_dir, config_text, lock=True):
    """Create `model_dir` or check that it is this config's; returns True if resuming.

    `lock=False`: several processes share the directory (a task pool's
    workers, `experiments/task_pool.py`), each task under its own claim.
    """
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
        if not lock:
            _check_config(model_dir, config_path, config_text)
            return True
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
    if lock:
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


class RunDir:
    """One run's folder: where each of its files is, and the one reader and writer of each.

    A path, nothing more: making, resuming and locking the folder is
    `prepare`'s. JSON records are written whole (`write_text_atomic`); a
    record not written yet reads as None.
    """

    def __init__(self, path):
        self.path = os.fspath(path)

    def __repr__(self):
        return f"RunDir({self.path!r})"

    def file(self, name):
        return os.path.join(self.path, name)

    config = property(lambda self: self.file(CONFIG_FILE))
    operative_config = property(lambda self: self.file(OPERATIVE_CONFIG_FILE))
    checkpoints = property(lambda self: self.file(CHECKPOINT_DIR))
    tensorboard = property(lambda self: self.file(TENSORBOARD_DIR))
    history = property(lambda self: self.file(HISTORY_FILE))
    plots = property(lambda self: self.file(PLOTS_DIR))
    genotype_path = property(lambda self: self.file(GENOTYPE_FILE))
    attention_path = property(lambda self: self.file(ATTENTION_FILE))
    initial_attention_path = property(lambda self: self.file(INITIAL_ATTENTION_FILE))
    genotypes_path = property(lambda self: self.file(GENOTYPES_FILE))
    supernet_weights = property(lambda self: self.file(SUPERNET_WEIGHTS_FILE))
    model_path = property(lambda self: self.file(MODEL_FILE))
    saved_model = property(lambda self: self.file(SAVED_MODEL_DIR))
    search = property(lambda self: RunDir(self.file(SEARCH_DIR)))  # a pipeline's steps
    train = property(lambda self: RunDir(self.file(TRAIN_DIR)))

    # The JSON records: timing, diagnostics, RSPS's ranking, results, size, pipeline.
    def _read(self, name):
        path = self.file(name)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def _write(self, name, record):
        write_text_atomic(self.file(name), json.dumps(record, indent=1) + "\n")

    def read_timing(self):
        return self._read(TIMING_FILE)

    def write_timing(self, record):
        self._write(TIMING_FILE, record)

    def read_diagnostics(self):
        return self._read(DIAGNOSTICS_FILE)

    def write_diagnostics(self, record):
        self._write(DIAGNOSTICS_FILE, record)

    def read_rsps(self):
        return self._read(RSPS_FILE)

    def write_rsps(self, record):
        self._write(RSPS_FILE, record)

    def read_pareto(self):
        return self._read(PARETO_FILE)

    def write_pareto(self, record):
        self._write(PARETO_FILE, record)

    def read_results(self):
        return self._read(RESULTS_FILE)

    def write_results(self, record):
        self._write(RESULTS_FILE, record)

    def read_size(self):
        return self._read(SIZE_FILE)

    def write_size(self, record):
        self._write(SIZE_FILE, record)

    def read_pipeline(self):
        return self._read(PIPELINE_FILE)

    def write_pipeline(self, record):
        self._write(PIPELINE_FILE, record)

    # The genotype and the attention: their formats are their modules'.
    def read_genotype(self, **kwargs):
        from asmnas_tf.space.genotype import read_genotype

        return read_genotype(self.genotype_path, **kwargs)

    def write_genotype(self, genotype):
        from asmnas_tf.space.genotype import write_genotype

        write_genotype(self.genotype_path, genotype)

    def read_attention(self, initial=False):
        """attention.json (or initial_attention.json) as an `AttentionRecord`; None if not written."""
        from asmnas_tf.space.attention_file import read_attention

        path = self.initial_attention_path if initial else self.attention_path
        return read_attention(path) if os.path.isfile(path) else None

    def write_attention(self, mean_coeffs, num_samples, confidence=None, space=None, initial=False):
        from asmnas_tf.space.attention_file import attention_record

        record = attention_record(mean_coeffs, num_samples, confidence, space)
        self._write(INITIAL_ATTENTION_FILE if initial else ATTENTION_FILE, record)
