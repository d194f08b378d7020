"""The bad-input corpus: a user's mistake never costs a run or a file.

Every case runs a real entry point (bin/search, bin/train, bin/export) in a
subprocess and checks the contract of `asmnas_tf.commands.cli`:

* exit status 2;
* the last line of stderr is `error: ...` and names the problem (the flag,
  the gin binding, the file, the field), and it is the only `error:` line;
* no Python traceback;
* nothing written: the case's folder (its input files and `<case>/run`, the
  run directory) is byte for byte as it was before the command, so no
  genotype.json, results.json, saved_model/ or new run directory is left.

Each case fails before any training, so the corpus is fast; the commands run
a few at a time. The served SavedModel cases (wrong shape, channels, dtype)
call a tiny exported model in-process.
"""

import concurrent.futures
import dataclasses
import fcntl
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT
from test_data import _write_idx

from asmnas_tf.evaluation.export import MODEL_FILE, export_saved_model, write_normalization
from asmnas_tf.space.genotype import to_dict
from asmnas_tf.space.named_genotypes import named_genotype

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
WORKERS = max(2, min(4, os.cpu_count() or 1))  # each command is mostly TensorFlow's import
SEARCH = ["--gin_file=search/demo.gin"]
TRAIN = ["--gin_file=train/demo.gin"]  # run_train.num_cells = 3
COMPARE = ["--gin_file=experiment/compare_fashion_mnist.gin"]
ROOT_SKIP = "running as root: root can write anywhere, so a read-only --model_dir cannot be refused"


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad command. `setup(d)` writes the case's inputs under the folder d
    and returns bin/<script>'s arguments; every needle ("{d}" is d) must be in
    the error line, no `absent` string may be."""

    id: str
    script: str
    setup: Callable
    needles: tuple
    absent: tuple = ()
    skip: str | None = None


def _param(binding):
    return f"--gin_param={binding}"


def _run(d):
    return f"--model_dir={d / 'run'}"


# ---------------------------------------------------------------- inputs


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _genotype_file(d, edit=None, text=None):
    """A 3-cell DARTS_V2 genotype.json under d, changed by `edit(dict)`, or `text`."""
    data = to_dict(named_genotype("DARTS_V2", 3))
    if edit:
        edit(data)
    return _write(d / "genotype.json", text if text is not None else json.dumps(data))


def _train_genotype(d, edit=None, text=None):
    return [*TRAIN, _param(f"run_train.genotype = '{_genotype_file(d, edit, text)}'"), _run(d)]


def _gin_file(d, name, text):
    return f"--gin_file={_write(d / name, text + chr(10))}"


def _set_edge(cell, edge, **fields):
    def edit(data):
        data["cells"][cell]["edges"][edge].update(fields)
    return edit


def _idx_dir(d, x_train=None, y_train=None):
    """Four tiny Fashion-MNIST IDX files; `x_train`/`y_train` replace the train ones (raw bytes)."""
    folder = d / "idx"
    folder.mkdir()
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), np.arange(4, dtype=np.uint8)
    for name, array, raw in (("train-images-idx3-ubyte", images, x_train),
                             ("train-labels-idx1-ubyte", labels, y_train),
                             ("t10k-images-idx3-ubyte", images, None),
                             ("t10k-labels-idx1-ubyte", labels, None)):
        full = _write_idx(folder / name, array)
        if raw is not None:
            (folder / name).write_bytes(raw(full))
    return folder


def _idx_search(d, **idx):
    return [*SEARCH, _param(f"load_arrays.idx_dir = '{_idx_dir(d, **idx)}'"), _run(d)]


def _npz_search(d, **arrays):
    path = d / "data.npz"
    np.savez(path, **arrays)
    return [*SEARCH, _param("load_arrays.dataset = 'npz'"), _param(f"load_arrays.path = '{path}'"), _run(d)]


def _npz_arrays(n=8, **changes):
    x = np.zeros((n, 8, 8, 1), np.uint8)
    y = np.arange(n) % 2
    return {"x_train": x, "y_train": y, "x_test": x, "y_test": y, **changes}


def _lambda_model(d):
    """A run directory whose model.keras holds a Lambda layer (a pickled function)."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    logits = keras.layers.Dense(3)(keras.layers.Flatten()(x))
    keras.Model(inputs, {"logits": logits}).save(d / MODEL_FILE)
    write_normalization(str(d), [0.5], [0.25], (8, 8, 1), 3, "tiny")
    return [f"--model_dir={d}"]


def _corrupt_model(d):
    (d / MODEL_FILE).write_bytes(b"not a zip archive" * 10)
    write_normalization(str(d), [0.5], [0.25], (8, 8, 1), 3, "tiny")
    return [f"--model_dir={d}"]


def _read_only_run_dir(d):
    (d / "run").mkdir()
    (d / "run").chmod(0o555)
    return [*SEARCH, _run(d)]


def _foreign_results(d):
    (d / "results.jsonl").write_text(json.dumps({"config": "0123456789abcdef", "method": "asm", "seed": 0}) + "\n")
    return d / "results.jsonl"


def _other_config(d):
    _write(d / "run" / "config.gin", "build_supernet.channels = 99\n")
    _write(d / "run" / "genotype.json", "precious")
    return [*SEARCH, _run(d)]


# The locks the test process holds for the "in use" case, open until the module ends.
_HELD_LOCKS = []


def _run_dir_in_use(d):
    """A run directory whose lock a live process (this test process) holds."""
    _write(d / "run" / "config.gin", "anything\n")
    lock = _write(d / "run" / ".asmnas.lock", json.dumps({"pid": os.getpid(), "host": "testhost",
                                                           "started": "2026-01-01T00:00:00"}) + "\n")
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _HELD_LOCKS.append(fd)
    return [*SEARCH, _run(d)]


def _config_text(args):
    """The config.gin a command with `args` (--gin_file/--gin_param only) writes: parsed in a subprocess."""
    code = ("import sys; from asmnas_tf.commands import cli; from asmnas_tf.supernet import runner; "
            "files = [a.split('=', 1)[1] for a in sys.argv[1:] if a.startswith('--gin_file=')]; "
            "params = [a.split('=', 1)[1] for a in sys.argv[1:] if a.startswith('--gin_param=')]; "
            "sys.stdout.write(cli.parse_gin(files, params))")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO_ROOT, env=ENV, capture_output=True,
                          text=True, check=True, timeout=300).stdout


def _spoilt_checkpoints(d):
    """An interrupted search whose only saved state is truncated and whose pointer is corrupt."""
    args = [*SEARCH, _param("run_search.epochs = 1")]
    _write(d / "run" / "config.gin", _config_text(args))
    state = d / "run" / "checkpoints" / "state-e0000-s000002.weights.h5"
    _write(state, "HDF" * 50)
    _write(state.with_name("state-e0000-s000002.json"),
           json.dumps({"epoch": 0, "step": 2, "weights": state.name, "size": 4096, "sha256": "0" * 64}))
    _write(d / "run" / "checkpoints" / "latest.json", '{"epoch": 0, "st')
    return [*args, _run(d)]


# ---------------------------------------------------------------- the corpus

CASES = [
    # Command-line flags.
    Case("flag_missing_model_dir", "search", lambda d: [*SEARCH], ("--model_dir is required",)),
    Case("flag_unknown", "search", lambda d: [*SEARCH, "--epochs=3", _run(d)], ("Unknown command line flag 'epochs'",)),
    Case("flag_unexpected_positional", "train", lambda d: [*TRAIN, _run(d), "genotype.json"],
         ("unexpected argument", "genotype.json")),
    Case("flag_bad_value", "export", lambda d: ["--verbosity=loud", _run(d)], ("--verbosity=loud",)),
    # Gin files and bindings: refused while parsing, before anything is created.
    Case("gin_unknown_parameter", "search", lambda d: [*SEARCH, _param("run_search.no_such = 3"), _run(d)],
         ("gin:", "no_such")),
    Case("gin_string_for_int", "search", lambda d: [*SEARCH, _param("run_search.epochs = 'three'"), _run(d)],
         ("run_search.epochs = 'three'", "expected an integer")),
    Case("gin_string_for_bool", "train", lambda d: [*TRAIN, _param("run_train.deterministic = 'yes'"), _run(d)],
         ("run_train.deterministic = 'yes'", "true or false")),
    Case("gin_missing_file", "search", lambda d: ["--gin_file=search/nope.gin", _run(d)], ("nope.gin", "no such file")),
    Case("gin_missing_include", "search", lambda d: [_gin_file(d, "exp.gin", "include 'search/nope.gin'"), _run(d)],
         ("search/nope.gin", "exp.gin")),
    Case("gin_syntax_error_in_file", "search",
         lambda d: [*SEARCH, _gin_file(d, "bad.gin", "run_search.epochs = = 3"), _run(d)],
         ("gin:", "bad.gin, line 1")),
    # Range and meaning of every binding, before any data is read.
    Case("search_zero_epochs", "search", lambda d: [*SEARCH, _param("run_search.epochs = 0"), _run(d)],
         ("run_search.epochs=0: expected an integer >= 1",)),
    Case("search_negative_epochs", "search", lambda d: [*SEARCH, _param("run_search.epochs = -1"), _run(d)],
         ("run_search.epochs=-1: expected an integer >= 1",)),
    Case("search_unknown_rule", "search", lambda d: [*SEARCH, _param("run_search.rule = 'top3'"), _run(d)],
         ("run_search.rule='top3' is not one of argmax",)),
    Case("search_zero_batch", "search", lambda d: [*SEARCH, _param("run_search.batch_size = 0"), _run(d)],
         ("run_search.batch_size=0: expected an integer >= 1",)),
    Case("search_negative_budget", "search", lambda d: [*SEARCH, _param("run_search.max_params = -5"), _run(d)],
         ("run_search.max_params=-5 is not an int >= 1 or None",)),
    Case("search_budget_unreachable", "search", lambda d: [*SEARCH, _param("run_search.max_params = 100"), _run(d)],
         ("run_search.max_params=100", "no genotype of this space fits; the smallest reachable evaluation network has")),
    Case("search_budget_rsps", "search", lambda d: [*SEARCH, _param("run_search.max_multiply_adds = 1000000"),
                                                   _param("run_search.method = 'rsps'"), _run(d)],
         ("RSPS ranks sampled architectures and has no values to budget",)),
    Case("search_negative_seed", "search", lambda d: [*SEARCH, _param("run_search.seed = -3"), _run(d)],
         ("run_search.seed=-3: expected an integer >= 0",)),
    Case("search_negative_save_interval", "search",
         lambda d: [*SEARCH, _param("run_search.save_every_steps = -5"), _run(d)],
         ("run_search.save_every_steps=-5: expected an integer >= 0",)),
    Case("train_bad_verbose", "train", lambda d: [*TRAIN, _param("run_train.verbose = 5"), _run(d)],
         ("run_train.verbose=5: expected one of 'auto', 0, 1, 2",)),
    Case("train_drop_path_one", "train", lambda d: [*TRAIN, _param("run_train.drop_path = 1.0"), _run(d)],
         ("run_train.drop_path=1.0: expected a number in [0, 1)",)),
    # The training recipe: each binding and its accepted range, before any data is read.
    Case("recipe_negative_smoothing", "train",
         lambda d: [*TRAIN, _param("build_eval_net.label_smoothing = -0.1"), _run(d)],
         ("build_eval_net.label_smoothing=-0.1: expected a number in [0, 1)",)),
    Case("recipe_ema_decay_above_one", "train",
         lambda d: [*TRAIN, _param("train_optimizer.ema_decay = 1.5"), _run(d)],
         ("train_optimizer.ema_decay=1.5: expected a number in (0, 1), or None",)),
    Case("recipe_warmup_longer_than_training", "train",
         lambda d: [*TRAIN, _param("run_train.epochs = 2"), _param("train_optimizer.warmup_epochs = 3"), _run(d)],
         ("train_optimizer.warmup_epochs=3: expected a number in [0, 2)",)),
    Case("recipe_tta_without_flips", "train",
         lambda d: [*TRAIN, _param("make_dataset.flip = False"),
                    _param("run_train.test_time_augmentation = 'flip'"), _run(d)],
         ("run_train.test_time_augmentation='flip' is not defined for this data", "make_dataset.flip = False")),
    Case("recipe_unknown_schedule", "train",
         lambda d: [*TRAIN, _param("train_optimizer.schedule = 'step'"), _run(d)],
         ("train_optimizer.schedule='step': expected one of 'cosine', 'linear', 'constant'",)),
    Case("recipe_bn_momentum_one", "train",
         lambda d: [*TRAIN, _param("build_eval_net.bn_momentum = 1.0"), _run(d)],
         ("build_eval_net.bn_momentum=1.0: expected a number in (0, 1)",)),
    Case("recipe_negative_cutout", "train",
         lambda d: [*TRAIN, _param("make_dataset.cutout = -4"), _run(d)],
         ("make_dataset.cutout=-4: expected an integer >= 0",)),
    Case("recipe_unknown_lr_scaling", "train",
         lambda d: [*TRAIN, _param("train_optimizer.lr_scaling = 'square'"), _run(d)],
         ("train_optimizer.lr_scaling='square': expected one of 'none', 'linear', 'sqrt'",)),
    Case("pipeline_bad_training_binding_before_search", "experiment",
         lambda d: ["pipeline", _param("run_pipeline.train_params = ['train_optimizer.ema_decay = 2.0']"), _run(d)],
         ("train_optimizer.ema_decay=2.0: expected a number in (0, 1), or None",)),
    Case("export_unknown_tta", "export",
         lambda d: [_param("export_saved_model.test_time_augmentation = 'rotate'"), f"--model_dir={d}"],
         ("export_saved_model.test_time_augmentation='rotate': expected None or one of 'flip'",)),
    Case("checkpoints_keep_zero", "search", lambda d: [*SEARCH, _param("checkpoints.keep = 0"), _run(d)],
         ("checkpoints.keep=0: expected an integer >= 1",)),
    Case("train_genotype_name_typo", "train",
         lambda d: [*TRAIN, _param("run_train.genotype = 'DARTS_V9'"), _run(d)],
         ("'DARTS_V9' is neither a named genotype (DARTS_V1, DARTS_V2, PC_DARTS, PDARTS) nor a genotype.json",
          "did you mean 'DARTS_V2'?")),
    Case("experiment_unknown_flag", "experiment", lambda d: ["timing", "--bogus_flag=1", _run(d)],
         ("Unknown command line flag 'bogus_flag'",)),
    Case("experiment_unknown_subcommand", "experiment", lambda d: ["timingx", _run(d)],
         ("expected one sub-command, one of timing, stability, compare, pipeline; got 'timingx'",)),
    # Faults found before any work: a run directory in use, saved states that are all spoilt.
    Case("run_dir_in_use", "search", _run_dir_in_use,
         ("{d}/run is in use by pid", "on host testhost", "{d}/run/.asmnas.lock")),
    Case("checkpoints_all_spoilt", "search", _spoilt_checkpoints,
         ("no usable saved state in {d}/run/checkpoints", "latest.json is corrupt",
          "state-e0000-s000002.weights.h5 is truncated or changed", "to start over, delete")),
    # Genotype files handed to bin/train: refused before the data is loaded.
    Case("genotype_invalid_json", "train",
         lambda d: _train_genotype(d, text='{"cells": [,]}'),
         ("{d}/genotype.json", "invalid JSON at line 1")),
    Case("genotype_unknown_op", "train",
         lambda d: _train_genotype(d, _set_edge(1, 0, op="conv_9x9")),
         ("{d}/genotype.json", "cells[1].edges[0].op: unknown op 'conv_9x9'")),
    Case("genotype_backward_edge", "train",
         lambda d: _train_genotype(d, _set_edge(0, 0, **{"from": 4})),
         ("cells[0].edges[0].from", "edge does not go forward: 4 -> 2")),
    Case("genotype_wrong_cell_count", "train",
         lambda d: _train_genotype(d) + [_param("run_train.num_cells = 5")],
         ("{d}/genotype.json", "3 cells, the network asks for 5")),
    Case("genotype_huge_file", "train",  # 11 MB of "[": parsing it would hit the recursion limit
         lambda d: _train_genotype(d, text="[" * 11_000_000),
         ("{d}/genotype.json", "file is 11000000 bytes, too big"), absent=("JSON", "recursion")),
    Case("genotype_missing_file", "train",
         lambda d: [*TRAIN, _param(f"run_train.genotype = '{d}/nowhere/genotype.json'"), _run(d)],
         ("{d}/nowhere/genotype.json", "cannot read the file")),
    # The attention options and the telemetry.
    Case("attention_embedding_unknown", "search",
         lambda d: [*SEARCH, _param("build_supernet.attention_embedding = 'mean'"), _run(d)],
         ("build_supernet.attention_embedding='mean'", "post_bn, pre_bn")),
    Case("attention_lr_multiplier_negative", "search",
         lambda d: [*SEARCH, _param("build_supernet.attention_lr_multiplier = -1.0"), _run(d)],
         ("build_supernet.attention_lr_multiplier=-1.0", "a number > 0")),
    Case("telemetry_samples_negative", "search",
         lambda d: [*SEARCH, _param("run_search.telemetry_samples = -1"), _run(d)],
         ("run_search.telemetry_samples=-1", ">= 0")),
    # The comparison: refused before any search.
    Case("compare_one_seed", "experiment",
         lambda d: ["compare", *COMPARE, _param("run_compare.seeds = [0]"), _run(d)],
         ("run_compare.seeds=[0]", "at least 2 distinct")),
    Case("compare_unknown_method", "experiment",
         lambda d: ["compare", *COMPARE, _param("run_compare.methods = ['asm', 'enas']"), _run(d)],
         ("run_compare.methods=['asm', 'enas']", "expected some of")),
    Case("compare_variant_of_random", "experiment",
         lambda d: ["compare", *COMPARE, _param("run_compare.variants = {'random_b': 'random'}"), _run(d)],
         ("run_compare.variants['random_b']='random'", "expected one of asm, darts1")),
    Case("compare_zero_epochs", "experiment",
         lambda d: ["compare", *COMPARE, _param("run_compare.search_epochs = 0"), _run(d)],
         ("run_compare.search_epochs=0", "expected an integer >= 1")),
    Case("compare_results_of_another_configuration", "experiment",
         lambda d: ["compare", *COMPARE, _param(f"run_compare.results_file = '{_foreign_results(d)}'"), _run(d)],
         ("{d}/results.jsonl", "another configuration")),
    # Data: refused when loaded, before the model is built; the new run dir is removed again.
    Case("data_missing_idx_dir", "search", lambda d: [*SEARCH, _param(f"load_arrays.idx_dir = '{d}/nowhere'"), _run(d)],
         ("{d}/nowhere does not exist",)),
    Case("data_idx_bad_magic", "search", lambda d: _idx_search(d, x_train=lambda raw: b"\x1f\x00" + raw[2:]),
         ("train-images-idx3-ubyte", "bad magic number")),
    Case("data_idx_truncated", "search", lambda d: _idx_search(d, x_train=lambda raw: raw[:-100]),
         ("train-images-idx3-ubyte is truncated",)),
    Case("data_idx_labels_out_of_range", "search",
         lambda d: _idx_search(d, y_train=lambda raw: raw[:-1] + bytes([10])),
         ("train-labels-idx1-ubyte: labels should lie in 0..9", "got a label 10")),
    Case("data_npz_missing_file", "search",
         lambda d: [*SEARCH, _param("load_arrays.dataset = 'npz'"), _param(f"load_arrays.path = '{d}/no.npz'"), _run(d)],
         ("{d}/no.npz does not exist",)),
    Case("data_npz_wrong_keys", "search",
         lambda d: _npz_search(d, images=np.zeros((8, 8, 8), np.uint8), labels=np.zeros(8, np.int64)),
         ("data.npz lacks key 'x_train'",)),
    Case("data_npz_wrong_image_shape", "search",
         lambda d: _npz_search(d, **_npz_arrays(x_train=np.zeros((8, 64), np.uint8))),
         ("x_train should be images [N, H, W] or [N, H, W, C]; got shape (8, 64)",)),
    Case("data_npz_labels_out_of_range", "search",
         lambda d: _npz_search(d, **_npz_arrays(y_train=np.arange(8) % 8, num_classes=np.int64(3))),
         ("y_train labels should lie in [0, 3); got [0, 7]",)),
    # Run directories.
    Case("run_dir_other_config", "search", _other_config, ("{d}/run was started with another configuration",)),
    Case("run_dir_not_writable", "search", _read_only_run_dir, ("{d}/run is not writable",),
         skip=ROOT_SKIP if os.geteuid() == 0 else None),
    Case("run_dir_is_a_file", "search", lambda d: [*SEARCH, f"--model_dir={_write(d / 'run', 'x')}"],
         ("{d}/run exists and is not a directory",)),
    Case("run_dir_not_ours", "train", lambda d: [*TRAIN, f"--model_dir={_write(d / 'run' / 'notes.txt', 'x').parent}"],
         ("{d}/run is not empty and holds no config.gin",)),
    # The search space and the search's remedies: refused before any data is read.
    Case("space_unknown_op", "search", lambda d: [*SEARCH, _param("search_space.primitives = ['zero', 'conv_9x9']"),
                                                  _run(d)], ("search_space.primitives: op='conv_9x9'", "op table")),
    Case("space_no_nodes", "train", lambda d: [*TRAIN, _param("search_space.nodes = 0"), _run(d)],
         ("search_space.nodes=0 is not an int >= 1",)),
    Case("space_genotype_of_another", "train", lambda d: [*TRAIN, _param(
        "search_space.primitives = ['zero', 'skip_connect', 'sep_conv_3x3']"), _run(d)],
         ("a genotype of the space 8 ops", "expected the network's space, 3 ops")),
    Case("remedy_warmup_too_long", "search", lambda d: [*SEARCH, _param("search_remedies.attention_warmup = 1.0"),
                                                        _run(d)], ("search_remedies.attention_warmup=1.0",)),
    Case("remedy_cap_without_parametric_op", "search", lambda d: [*SEARCH, _param(
        "search_space.primitives = ['zero', 'skip_connect']"), _param("search_remedies.max_parameter_free = 1"),
        _run(d)], ("max_parameter_free=1 needs an op with parameters",)),
    Case("benchmark_bad_shard", "benchmark", lambda d: ["build", "--shard=3/2", f"--out={d}/table"],
         ("--shard='3/2'",)),
    Case("benchmark_one_seed", "benchmark", lambda d: ["score", _param("run_score.seeds = 1"), _run(d)],
         ("run_score.seeds=1 is not an int >= 2",)),
    # Export.
    Case("export_no_trained_model", "export", lambda d: [f"--model_dir={d}"], ("model.keras is missing", "bin/train")),
    Case("export_corrupt_model", "export", _corrupt_model, ("{d}/model.keras is not a .keras file",)),
    Case("export_lambda_layer_refused", "export", _lambda_model,
         ("{d}/model.keras cannot be loaded", "`Lambda` layer", "safe_mode")),
]


# ---------------------------------------------------------------- running them


def _tree(root):
    """Every path under `root`: folders with their mode, files with a hash of their bytes."""
    tree = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            path = os.path.join(folder, name)
            tree[os.path.relpath(path, root)] = ("dir", os.stat(path).st_mode)
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                tree[os.path.relpath(path, root)] = ("file", hashlib.sha256(f.read()).hexdigest())
    return tree


def _execute(case, d):
    args = case.setup(d)
    before = _tree(d)
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bin", case.script), *map(str, args)],
                            cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    after = _tree(d)
    if (d / "run").is_dir():
        (d / "run").chmod(0o755)  # the read-only case: let pytest remove it
    return result, before, after


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory):
    """Runs every selected case, a few at a time: {case id: (result, tree before, tree after, d)}."""
    selected = {item.callspec.params["case"].id for item in request.session.items
                if hasattr(item, "callspec") and isinstance(item.callspec.params.get("case"), Case)}
    todo = [case for case in CASES if case.id in selected and not case.skip]
    folders = {case.id: tmp_path_factory.mktemp(case.id) for case in todo}
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        futures = {case.id: pool.submit(_execute, case, folders[case.id]) for case in todo}
        return {key: (*future.result(), folders[key]) for key, future in futures.items()}


def test_corpus_size_and_unique_ids():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) + len(SERVED) >= 50


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_user_error_is_one_line_exit_2_and_writes_nothing(case, outcomes):
    if case.skip:
        pytest.skip(case.skip)
    result, before, after, d = outcomes[case.id]
    stderr = result.stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert result.returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert lines and lines[-1].startswith("error: "), stderr[-3000:]
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], stderr[-3000:]
    line = lines[-1]
    for needle in case.needles:
        assert needle.replace("{d}", str(d)) in line
    for word in case.absent:
        assert word not in line
    changed = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
    assert not changed, f"the command changed its folder: {changed[:5]}"


# ---------------------------------------------------------------- the served model

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    """A tiny model exported by our export path, loaded back as a SavedModel signature."""
    model_dir = str(tmp_path_factory.mktemp("served"))
    inputs = keras.Input(SHAPE)
    logits = keras.layers.Dense(3, name="classifier")(keras.layers.Flatten()(inputs))
    write_normalization(model_dir, [0.5], [0.25], SHAPE, 3, "tiny")
    path = export_saved_model(model_dir, model=keras.Model(inputs, {"logits": logits}))
    return tf.saved_model.load(path).signatures["serving_default"]


EXPECTS = "serving_default expects uint8 images of shape [batch, 8, 8, 1]; received shape] "
SERVED = {
    "served_wrong_size": (tf.zeros([2, 6, 8, 1], tf.uint8), EXPECTS + "[2 6 8 1]"),
    "served_wrong_channels": (tf.zeros([2, 8, 8, 3], tf.uint8), EXPECTS + "[2 8 8 3]"),
    "served_wrong_rank": (tf.zeros([8, 8, 1], tf.uint8), EXPECTS + "[8 8 1]"),
    "served_wrong_dtype": (tf.zeros([2, 8, 8, 1], tf.float32), "expected to be a uint8 tensor but is a float tensor"),
}


@pytest.mark.parametrize("name", sorted(SERVED))
def test_served_model_refuses_wrong_input_with_one_clear_line(serve, name):
    bad, needle = SERVED[name]
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        serve(images=bad)
    # TensorFlow wraps an in-graph assertion in a few lines of its own; the
    # line that says what was expected and what came is one of them.
    assert any(needle in line for line in str(info.value).splitlines()), str(info.value)
    # Nothing is broken: a right input still works.
    assert serve(images=tf.zeros([3, *SHAPE], tf.uint8))["class_ids"].shape == (3,)
