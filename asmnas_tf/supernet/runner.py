"""An ASM-NAS search run, from a dataset to `genotype.json` (Algorithm 1).

1. Split the training set in two halves (SPEC §4): weights train on the first.
2. Train the supernet's weights (w, Theta) with `train_loop.fit` (the same
   `train_step` as `model.fit`), single level, under a `tf.distribute` strategy (Algorithm 1, steps 1-5).
3. Selection on the second half (steps 6-13): mean coefficients, one rule.
4. Write `attention.json` and `genotype.json` (atomically) in the run dir.

`method`: 'asm' (the paper), or the DARTS baseline on the same supernet
(`supernet/darts.py`): 'darts1' (first order) or 'darts2' (second order). DARTS
trains alpha on the second half (augmented and shuffled like the first, as
DARTS's search code does), one batch of each half per step; selection is
the same as ASM's, on softmax(alpha). See configs/search/darts.gin.

`search` takes the data as values (the Python API); `run_search` is the
gin-configured wrapper the command runs. An interrupted run resumes from its last saved state, inside an epoch
(`train_loop.py`); a finished one is not run again.
"""

import dataclasses
import os
import time

import tensorflow as tf

from asmnas_tf.data import as_image_arrays, channel_stats, load_arrays, make_dataset, split_halves
from asmnas_tf.errors import UserError
from asmnas_tf.host.distribute import make_strategy
from asmnas_tf.rundir import run_dir as rd
from asmnas_tf.rundir.checkpoints import check_resumable
from asmnas_tf.space.search_space import search_space
from asmnas_tf.supernet.budget import prepare_budget
from asmnas_tf.supernet.builder import supernet_config
from asmnas_tf.supernet.model import COEFFICIENTS
from asmnas_tf.supernet.remedies import SearchRemedies, search_remedies
from asmnas_tf.supernet.search_config import SearchConfig, SearchResult, search_config
from asmnas_tf.supernet.search_end import (TrainedSupernet, initial_coefficients, rsps_select_and_write,
                                           select_and_write)
from asmnas_tf.supernet.search_model import build_search_model
from asmnas_tf.supernet.telemetry import SearchTelemetry
from asmnas_tf.training import train_loop
from asmnas_tf.training.callbacks import StepTimer
from asmnas_tf.training.run_skeleton import run_callbacks, start_run, working_dir, write_operative_config


def search_datasets(arrays, batch_size, selection_batch_size, seed, architecture=False, telemetry_samples=0):
    """(train, select, n_train, n_select, telemetry) pipelines on the two halves of the training set.

    `telemetry`: the first `telemetry_samples` images of the selection half
    (the per-epoch selection of `telemetry.py`), None for 0.

    With `architecture` (DARTS) the train pipeline yields (weight batch, alpha
    batch) pairs: the second half also goes through the training pipeline
    (augmented, shuffled with seed + 1), as DARTS's validation queue.
    """
    (x_weights, y_weights), (x_select, y_select) = split_halves(arrays.x_train, arrays.y_train)
    mean, std = channel_stats(x_weights)
    train = make_dataset(x_weights, y_weights, batch_size, training=True, mean=mean, std=std, seed=seed,
                         dataset=arrays.name)
    select = make_dataset(x_select, y_select, selection_batch_size, training=False, mean=mean, std=std)
    telemetry = None
    if telemetry_samples:
        telemetry = make_dataset(x_select[:telemetry_samples], y_select[:telemetry_samples], selection_batch_size,
                                 training=False, mean=mean, std=std)
    if architecture:
        alpha = make_dataset(x_select, y_select, batch_size, training=True, mean=mean, std=std, seed=seed + 1,
                             dataset=arrays.name)
        train = tf.data.Dataset.zip((train, alpha))
    return train, select, len(x_weights), len(x_select), telemetry


def _completed(model_dir):
    """The result of a finished search in `model_dir`, or None."""
    run = rd.RunDir(model_dir)
    if not os.path.exists(run.genotype_path):
        return None
    print(f"Search already complete: {run.genotype_path}")
    return SearchResult(genotype=run.read_genotype(), model_dir=model_dir, resumed_complete=True)


def search(
    x,
    y=None,
    *,
    config=None,
    num_cells=None,
    channels=None,
    supernet_options=None,
    callbacks=(),
    model_dir=None,
    remedies=None,
    **fields,
):
    """Search cells on the images `x` with labels `y`; returns a `SearchResult`.

    `x`, `y`: numpy images [N, H, W(, C)] and integer labels, or a
    `tf.data.Dataset` of (image, label) as `x`, or an `ImageArrays`. The
    training images are split in two halves (SPEC §4): the first trains the
    supernet, the second selects. `config`: a `SearchConfig`; `fields`
    (method, epochs, batch_size, selection_batch_size, rule, seed,
    deterministic, save_every_steps, telemetry_samples, rsps_candidates,
    rsps_images, verbose, max_params, max_multiply_adds) replace its fields. `num_cells`, `channels` and
    `supernet_options` (more `build_supernet` arguments) size the supernet;
    None keeps gin's binding or the paper's default (L = 15, C = 16).
    `callbacks`: Keras callbacks added to the run's. `model_dir`: the run
    directory (checkpoints, history, TensorBoard, attention.json,
    genotype.json, plots), resumed if it holds an interrupted run of this
    search; None writes nothing that outlives the call (the checkpoints go
    to a temporary folder, removed at the end). `remedies`: a
    `SearchRemedies`; None: the bound `search_remedies()`. The search space
    is the bound `search_space()`.
    """
    config = search_config(config, **fields)
    supernet_kwargs = dict(supernet_options or {}, **_given(num_cells=num_cells, channels=channels))
    return _run(lambda: as_image_arrays(x, y), config, model_dir, supernet_kwargs, callbacks, remedies)


def _run(load_data, config, model_dir, supernet_kwargs=None, callbacks=(), remedies=None):
    """The skeleton every search runs: checks, resume, data, the search, its files."""
    config.check()
    remedies = (search_remedies() if remedies is None else remedies).check(search_space(), config.method)
    supernet_config(**(supernet_kwargs or {}))  # the bound supernet options, before any data
    completed = _completed(model_dir) if model_dir is not None else None
    if completed:
        return completed
    if model_dir is not None:  # a spoilt saved state is found now, not after the data is read
        check_resumable(rd.RunDir(model_dir).checkpoints)
    train_loop.check_jit_compile(make_strategy())  # first: it may split the CPU into logical devices
    arrays = load_data()
    with working_dir(model_dir, "asmnas-search-") as (directory, keep_files):
        result = _search(arrays, directory, config, supernet_kwargs or {}, callbacks, keep_files, remedies)
    return result if keep_files else dataclasses.replace(result, model_dir=None)


def _given(**values):
    return {k: v for k, v in values.items() if v is not None}


def _search(arrays, model_dir, config, supernet_kwargs, extra_callbacks, keep_files, remedies):
    """The search itself, in `model_dir` (a temporary one when not `keep_files`)."""
    method, epochs, batch_size, seed = config.method, config.epochs, config.batch_size, config.seed
    strategy, chief = start_run(seed, config.deterministic)
    rsps = method == "rsps"
    train, select, n_train, n_select, subset = search_datasets(
        arrays, batch_size, config.selection_batch_size, seed, architecture=method in ("darts1", "darts2"),
        telemetry_samples=config.rsps_images if rsps else config.telemetry_samples,
    )
    steps_per_epoch = n_train // batch_size
    if steps_per_epoch < 1:
        raise UserError(f"run_search.batch_size={batch_size} is larger than the {n_train} training images")

    started = time.perf_counter()
    with strategy.scope():
        model = build_search_model(method, arrays, supernet_kwargs, remedies, seed, epochs * steps_per_epoch)
    build_s = time.perf_counter() - started
    print(
        f"Supernet: {len(model.layers)} layers, {model.count_params():,} parameters, "
        f"{strategy.num_replicas_in_sync} replica(s), built in {build_s:.1f} s; "
        f"{n_train} images train the weights, {n_select} select"
    )
    costs = None
    if config.budget.active:  # one line now if no genotype fits, not after the training
        costs = prepare_budget(config.budget, arrays.image_shape, arrays.num_classes,
                               model.output[COEFFICIENTS].shape[1], search_space(), config.rule, remedies)
    writes = chief and keep_files
    if writes:
        write_operative_config(model_dir)

    source = {"method": method, "dataset": arrays.name, "seed": seed}
    if remedies != SearchRemedies():
        source["remedies"] = dataclasses.asdict(remedies)
    # RSPS has no coefficients to watch: its selection ranks sampled paths.
    run = rd.RunDir(model_dir)
    initial_coeffs = None if rsps else initial_coefficients(model, select, run, writes)
    telemetry = [] if subset is None or rsps else [SearchTelemetry(
        subset, initial_coeffs, config.rule, source, path=run.genotypes_path if writes else None,
        tensorboard_dir=run.tensorboard if writes else None)]
    timer = StepTimer(run.file(rd.TIMING_FILE) if chief else None)
    callbacks = run_callbacks(model_dir, timer, writes, schedules=telemetry) + list(extra_callbacks)
    history = train_loop.fit(model, train, epochs=epochs, strategy=strategy,
                             checkpoint_dir=run.checkpoints, callbacks=callbacks,
                             save_every_steps=config.save_every_steps, steps_per_epoch=steps_per_epoch,
                             verbose=config.verbose)
    if not chief:
        return SearchResult(model=model, history=history.history, model_dir=model_dir, chief=False)
    done = TrainedSupernet(model, run, config, remedies, supernet_kwargs, source, history, timer, build_s, started,
                           keep_files)
    if rsps:
        return rsps_select_and_write(done, subset)
    return select_and_write(done, select, initial_coeffs, costs)


def run_search(model_dir, config=None, extra_callbacks=()):
    """The search of the bound `SearchConfig` (`run_search.*`) on the dataset of `load_arrays`, in `model_dir`.

    The command's runner. Under a multi-worker strategy only the chief
    writes; the other workers get a result with `chief=False`, no genotype.
    """
    return _run(load_arrays, config or SearchConfig(), model_dir, callbacks=extra_callbacks)


def describe(genotype):
    """A few readable lines: each cell's kept edges."""
    lines = []
    for index, cell in enumerate(genotype.cells):
        kept = [f"{e.op}({e.source}->{e.target})" for e in cell.edges if e.op != "zero"]
        kind = "reduce" if cell.reduction else "normal"
        lines.append(f"  cell {index:2d} [{kind}] " + ", ".join(kept))
    return "\n".join(lines)

