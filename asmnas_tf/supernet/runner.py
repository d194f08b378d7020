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
import json
import os
import time

import gin
import keras
import numpy as np
import tensorflow as tf

from asmnas_tf.runtime import run_dir as rd
from asmnas_tf.runtime import train_loop
from asmnas_tf.supernet.darts import DartsModel, architecture_optimizer, compile_darts
from asmnas_tf.runtime.callbacks import StepTimer
from asmnas_tf.runtime.checkpoints import check_resumable, keep_states
from asmnas_tf.runtime.run_skeleton import (check_counts, check_verbose, run_callbacks, start_run, working_dir,
                                             write_operative_config)
from asmnas_tf.data import as_image_arrays, channel_stats, load_arrays, make_dataset, split_halves
from asmnas_tf.runtime.distribute import make_strategy
from asmnas_tf.space.genotype import read_genotype, write_genotype
from asmnas_tf.runtime.optim import search_optimizer
from asmnas_tf.runtime.precision import precision_policy
from asmnas_tf.plots import write_run_plots
from asmnas_tf.supernet.model import compile_supernet
from asmnas_tf.supernet.confidence import selection_confidence
from asmnas_tf.supernet.report import DIAGNOSTICS_FILE, INITIAL_ATTENTION_FILE, search_report
from asmnas_tf.supernet.selection import (RULES, coefficient_samples, mean_coefficients, read_attention,
                                          select_genotype, write_attention)
from asmnas_tf.supernet.telemetry import GENOTYPES_FILE, SearchTelemetry
from asmnas_tf.supernet.builder import PATH_SAMPLER, build_supernet
from asmnas_tf.supernet.rsps import RSPS_FILE, rsps_select
from asmnas_tf.supernet.perturbation import perturbation_scores
from asmnas_tf.supernet.remedies import SearchRemedies, search_remedies
from asmnas_tf.space.search_space import search_space
from asmnas_tf.errors import UserError

METHODS = ("asm", "darts1", "darts2", "rsps")


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
    train = make_dataset(x_weights, y_weights, batch_size, training=True, mean=mean, std=std, seed=seed)
    select = make_dataset(x_select, y_select, selection_batch_size, training=False, mean=mean, std=std)
    telemetry = None
    if telemetry_samples:
        telemetry = make_dataset(x_select[:telemetry_samples], y_select[:telemetry_samples], selection_batch_size,
                                 training=False, mean=mean, std=std)
    if architecture:
        alpha = make_dataset(x_select, y_select, batch_size, training=True, mean=mean, std=std, seed=seed + 1)
        train = tf.data.Dataset.zip((train, alpha))
    return train, select, len(x_weights), len(x_select), telemetry


@dataclasses.dataclass
class SearchResult:
    """What a search returns (one type for every case).

    `genotype`: the selected cells (None on a multi-worker worker that is
    not the chief). `coefficients`: mean coefficient per (cell, edge, op)
    [L, 14, 8] on the selection split (None when the run was already
    complete). `history`: per-epoch metrics of this call's training.
    `model`: the trained supernet (a keras.Model), None when the run was
    already complete. `model_dir`: the run directory, None without one.
    `diagnostics`: the end-of-search report (`report.py`: init-vs-final
    agreement, drift, confidence; for RSPS its ranked candidates).
    """

    genotype: object = None
    coefficients: object = None
    selection_accuracy: float = None
    history: dict = dataclasses.field(default_factory=dict)
    model: object = None
    model_dir: str = None
    plots: list = dataclasses.field(default_factory=list)
    timing: dict = dataclasses.field(default_factory=dict)
    diagnostics: dict = dataclasses.field(default_factory=dict)
    chief: bool = True
    resumed_complete: bool = False


def _check_search_arguments(method, rule, epochs, batch_size, selection_batch_size, save_every_steps,
                            telemetry_samples, rsps_candidates, rsps_images, seed, verbose):
    """Every argument checked before any data is read or file written."""
    if method not in METHODS:
        raise UserError(f"run_search.method={method!r} is not one of {', '.join(METHODS)}")
    if rule not in RULES:
        raise UserError(f"run_search.rule={rule!r} is not one of {', '.join(RULES)}")
    check_counts("run_search", epochs=(epochs, 1), batch_size=(batch_size, 1),
                 selection_batch_size=(selection_batch_size, 1), save_every_steps=(save_every_steps, 0),
                 telemetry_samples=(telemetry_samples, 0), rsps_candidates=(rsps_candidates, 1),
                 rsps_images=(rsps_images, 1), seed=(seed, 0))
    check_verbose("run_search", verbose)
    keep_states()  # checkpoints.keep, read when the first state is saved
    precision_policy()  # its binding checked now, set by start_run
    train_loop.jit_compile_step()  # checked now, read by train_loop.fit
    if method == "rsps" and rule != "argmax":
        raise UserError(f"run_search.rule={rule!r}: RSPS samples argmax architectures (one op per edge); "
                        f"use rule 'argmax' with method 'rsps'")


def _completed(model_dir):
    """The result of a finished search in `model_dir`, or None."""
    genotype_path = os.path.join(model_dir, rd.GENOTYPE_FILE)
    if not os.path.exists(genotype_path):
        return None
    print(f"Search already complete: {genotype_path}")
    return SearchResult(genotype=read_genotype(genotype_path), model_dir=model_dir, resumed_complete=True)


def search(
    x,
    y=None,
    *,
    method="asm",
    epochs=30,
    batch_size=64,
    selection_batch_size=256,
    rule="argmax",
    num_cells=None,
    channels=None,
    supernet_options=None,
    seed=0,
    deterministic=False,
    save_every_steps=100,
    telemetry_samples=256,
    rsps_candidates=50,
    rsps_images=500,
    verbose="auto",
    callbacks=(),
    model_dir=None,
    remedies=None,
):
    """Search cells on the images `x` with labels `y`; returns a `SearchResult`.

    `x`, `y`: numpy images [N, H, W(, C)] and integer labels, or a
    `tf.data.Dataset` of (image, label) as `x`, or an `ImageArrays`. The
    training images are split in two halves (SPEC §4): the first trains the
    supernet, the second selects. `num_cells`, `channels` and
    `supernet_options` (more `build_supernet` arguments) size the supernet;
    None keeps gin's binding or the paper's default (L = 15, C = 16).
    `callbacks`: Keras callbacks added to the run's. `telemetry_samples`:
    images of the selection half selected on at every epoch end (the
    telemetry of `telemetry.py`; 0 turns it off). `method="rsps"`: random
    search with weight sharing (`rsps.py`): one sampled path per step, then
    the best of `rsps_candidates` sampled architectures on the first
    `rsps_images` images of the selection half.
    `model_dir`: the run directory (checkpoints, history, TensorBoard,
    attention.json, genotype.json, plots), resumed if it holds an
    interrupted run of this search; None writes nothing that outlives the
    call (the checkpoints go to a temporary folder, removed at the end).
    `remedies`: a `SearchRemedies` (warm-up, selection by perturbation, no
    zero, a cap on parameter-free ops); None: the bound `search_remedies()`.
    The search space is the bound `search_space()`.
    """
    _check_search_arguments(method, rule, epochs, batch_size, selection_batch_size, save_every_steps,
                            telemetry_samples, rsps_candidates, rsps_images, seed, verbose)
    remedies = (search_remedies() if remedies is None else remedies).check(search_space(), method)
    completed = _completed(model_dir) if model_dir is not None else None
    if completed:
        return completed
    if model_dir is not None:  # a spoilt saved state is found now, not after the data is read
        check_resumable(os.path.join(model_dir, rd.CHECKPOINT_DIR))
    train_loop.check_jit_compile(make_strategy())  # first: it may split the CPU into logical devices
    arrays = as_image_arrays(x, y)
    supernet_kwargs = dict(supernet_options or {}, **_given(num_cells=num_cells, channels=channels))
    with working_dir(model_dir, "asmnas-search-") as (directory, keep_files):
        result = _search(arrays, directory, method, epochs, batch_size, selection_batch_size, rule, supernet_kwargs,
                         seed, deterministic, save_every_steps, telemetry_samples, rsps_candidates, rsps_images,
                         verbose, callbacks, keep_files, remedies)
    return result if keep_files else dataclasses.replace(result, model_dir=None)


def _given(**values):
    return {k: v for k, v in values.items() if v is not None}


def _search(arrays, model_dir, method, epochs, batch_size, selection_batch_size, rule, supernet_kwargs,
            seed, deterministic, save_every_steps, telemetry_samples, rsps_candidates, rsps_images, verbose,
            extra_callbacks, keep_files, remedies):
    """The search itself, in `model_dir` (a temporary one when not `keep_files`)."""
    strategy, chief = start_run(seed, deterministic)
    rsps = method == "rsps"
    train, select, n_train, n_select, subset = search_datasets(
        arrays, batch_size, selection_batch_size, seed, architecture=method in ("darts1", "darts2"),
        telemetry_samples=rsps_images if rsps else telemetry_samples,
    )
    steps_per_epoch = n_train // batch_size
    if steps_per_epoch < 1:
        raise UserError(f"run_search.batch_size={batch_size} is larger than the {n_train} training images")

    started = time.perf_counter()
    with strategy.scope():
        weight_optimizer = search_optimizer(total_steps=epochs * steps_per_epoch)
        if method == "asm":
            model = build_supernet(arrays.image_shape, arrays.num_classes,
                                   **{**supernet_kwargs, "skip_dropout": remedies.skip_dropout})
            if isinstance(model, DartsModel):
                raise UserError("build_supernet.mixing='alpha' is DARTS: set run_search.method to darts1 or darts2")
            model.attention_warmup_steps = remedies.warmup_steps(epochs * steps_per_epoch)  # before the trace
            compile_supernet(model, weight_optimizer)
        elif rsps:
            model = build_supernet(arrays.image_shape, arrays.num_classes,
                                   **{**supernet_kwargs, "mixing": "path", "path_seed": seed})
            compile_supernet(model, weight_optimizer)
        else:
            model = build_supernet(arrays.image_shape, arrays.num_classes,
                                   **{**supernet_kwargs, "mixing": "alpha", "skip_dropout": remedies.skip_dropout})
            compile_darts(model, weight_optimizer, architecture_optimizer(), second_order=method == "darts2")
    build_s = time.perf_counter() - started
    print(
        f"Supernet: {len(model.layers)} layers, {model.count_params():,} parameters, "
        f"{strategy.num_replicas_in_sync} replica(s), built in {build_s:.1f} s; "
        f"{n_train} images train the weights, {n_select} select"
    )
    if chief and keep_files:
        write_operative_config(model_dir)

    source = {"method": method, "dataset": arrays.name, "seed": seed}
    if remedies != SearchRemedies():
        source["remedies"] = dataclasses.asdict(remedies)
    # RSPS has no coefficients to watch: its selection ranks sampled paths.
    initial_coeffs = None if rsps else _initial_coefficients(model, select, model_dir, chief and keep_files)
    telemetry = [] if subset is None or rsps else [SearchTelemetry(
        subset, initial_coeffs, rule, source,
        path=os.path.join(model_dir, GENOTYPES_FILE) if chief and keep_files else None,
        tensorboard_dir=os.path.join(model_dir, rd.TENSORBOARD_DIR) if chief and keep_files else None)]
    timer = StepTimer(os.path.join(model_dir, rd.TIMING_FILE) if chief else None)
    callbacks = run_callbacks(model_dir, timer, chief and keep_files, schedules=telemetry) + list(extra_callbacks)
    history = train_loop.fit(model, train, epochs=epochs, strategy=strategy,
                             checkpoint_dir=os.path.join(model_dir, rd.CHECKPOINT_DIR), callbacks=callbacks,
                             save_every_steps=save_every_steps, steps_per_epoch=steps_per_epoch, verbose=verbose)
    if not chief:
        return SearchResult(model=model, history=history.history, model_dir=model_dir, chief=False)

    if rsps:
        return _rsps_selection(model, subset, arrays, source, rsps_candidates, model_dir, keep_files, history,
                               timer, build_s, started)
    # Selection (Algorithm 1, steps 6-13): frozen weights, inference mode.
    samples, selection_accuracy = coefficient_samples(model, select)
    mean_coeffs, num_samples = samples.mean(axis=0, dtype=np.float64), samples.shape[0]
    genotype = _select(model, select, mean_coeffs, rule, source, remedies)
    confidence = selection_confidence(samples, seed=seed, rule=rule)
    report = search_report(initial_coeffs, mean_coeffs, confidence, rule)
    for line in report["lines"]:
        print(line)
    plots = []
    timing = {"build_s": build_s, **timer.summary(), "selection_accuracy": selection_accuracy,
              "wall_s": time.perf_counter() - started}
    if keep_files:
        rd.save_weights_atomic(model, os.path.join(model_dir, rd.SUPERNET_WEIGHTS_FILE))
        write_attention(os.path.join(model_dir, rd.ATTENTION_FILE), mean_coeffs, num_samples, confidence)
        rd.write_text_atomic(os.path.join(model_dir, DIAGNOSTICS_FILE), json.dumps(report, indent=1) + "\n")
        write_genotype(os.path.join(model_dir, rd.GENOTYPE_FILE), genotype)
        plots = write_run_plots(model_dir)  # Fig. 4 heatmaps, Appendix A cell diagrams
        rd.write_text_atomic(os.path.join(model_dir, rd.TIMING_FILE), json.dumps(timing, indent=1) + "\n")
        write_operative_config(model_dir)
    return SearchResult(genotype=genotype, coefficients=np.asarray(mean_coeffs), selection_accuracy=selection_accuracy,
                        history=history.history, model=model, model_dir=model_dir, plots=plots, timing=timing,
                        diagnostics=report)


def _rsps_selection(model, subset, arrays, source, candidates, model_dir, keep_files, history, timer, build_s,
                    started):
    """RSPS's end: the best of `candidates` sampled architectures on the shared weights (`rsps.py`)."""
    num_cells = model.get_layer(PATH_SAMPLER).num_cells
    genotype, record = rsps_select(model, subset, num_cells, source["seed"], candidates, source)
    print(f"RSPS: best of {candidates} sampled architectures: candidate {record['best']}, shared-weights "
          f"accuracy {record['best_accuracy']:.4f} (median {np.median(record['accuracies']):.4f})")
    timing = {"build_s": build_s, **timer.summary(), "selection_accuracy": record["best_accuracy"],
              "wall_s": time.perf_counter() - started}
    plots = []
    if keep_files:
        rd.save_weights_atomic(model, os.path.join(model_dir, rd.SUPERNET_WEIGHTS_FILE))
        rd.write_text_atomic(os.path.join(model_dir, RSPS_FILE), json.dumps(record) + "\n")
        write_genotype(os.path.join(model_dir, rd.GENOTYPE_FILE), genotype)
        plots = write_run_plots(model_dir)
        rd.write_text_atomic(os.path.join(model_dir, rd.TIMING_FILE), json.dumps(timing, indent=1) + "\n")
        write_operative_config(model_dir)
    return SearchResult(genotype=genotype, selection_accuracy=record["best_accuracy"], history=history.history,
                        model=model, model_dir=model_dir, plots=plots, timing=timing, diagnostics={"rsps": record})


def _initial_coefficients(model, select, model_dir, write):
    """Mean coefficients of the untrained supernet on the selection split (the baseline).

    Computed before the first step and kept in the run directory, so that
    a resumed run compares with the same initialisation.
    """
    path = os.path.join(model_dir, INITIAL_ATTENTION_FILE)
    if os.path.exists(path):
        return read_attention(path)
    initial, num_samples, _ = mean_coefficients(model, select)
    if write:
        write_attention(path, initial, num_samples)
    return initial


@gin.configurable(denylist=["model_dir", "extra_callbacks"])
def run_search(
    model_dir,
    method="asm",
    batch_size=64,
    epochs=30,
    selection_batch_size=256,
    rule="argmax",
    seed=0,
    deterministic=False,
    save_every_steps=100,
    telemetry_samples=256,
    rsps_candidates=50,
    rsps_images=500,
    verbose="auto",
    extra_callbacks=(),
):
    """`search` on the dataset of `load_arrays` (gin), in `model_dir`: the command's runner.

    `save_every_steps`: the training state is saved this often inside an
    epoch (and at every epoch end), so a killed run loses at most that many
    steps (`train_loop.py`). Under a multi-worker strategy only the chief
    writes; the other workers get a result with `chief=False`, no genotype.
    """
    _check_search_arguments(method, rule, epochs, batch_size, selection_batch_size, save_every_steps,
                            telemetry_samples, rsps_candidates, rsps_images, seed, verbose)
    search_remedies().check(search_space(), method)  # the space's and the remedies' bindings, before the data
    completed = _completed(model_dir)
    if completed:
        return completed
    check_resumable(os.path.join(model_dir, rd.CHECKPOINT_DIR))
    train_loop.check_jit_compile(make_strategy())  # before the data: it may split the CPU into logical devices
    return search(load_arrays(), method=method, epochs=epochs, batch_size=batch_size,
                  selection_batch_size=selection_batch_size, rule=rule, seed=seed, deterministic=deterministic,
                  save_every_steps=save_every_steps, telemetry_samples=telemetry_samples,
                  rsps_candidates=rsps_candidates, rsps_images=rsps_images, verbose=verbose,
                  callbacks=extra_callbacks, model_dir=model_dir)


def _select(model, select, mean_coeffs, rule, source, remedies):
    """The genotype: from the mean coefficients, or from perturbation scores (`search_remedies`)."""
    space = search_space()
    values = mean_coeffs
    if remedies.selection == "perturbation":
        images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in select])
        excluded = [space.index("zero")] if remedies.exclude_zero else []
        values, baseline = perturbation_scores(model, np.concatenate(images), np.concatenate(labels), mean_coeffs,
                                               space, remedies.perturbation_top_k, excluded)
        print(f"Perturbation selection: supernet accuracy {baseline:.4f} on {sum(len(y) for y in labels)} "
              f"selection images; each edge's top {remedies.perturbation_top_k} ops removed in turn")
    return select_genotype(values, rule, source, space, exclude_zero=remedies.exclude_zero,
                           max_parameter_free=remedies.max_parameter_free)


def describe(genotype):
    """A few readable lines: each cell's kept edges."""
    lines = []
    for index, cell in enumerate(genotype.cells):
        kept = [f"{e.op}({e.source}->{e.target})" for e in cell.edges if e.op != "zero"]
        kind = "reduce" if cell.reduction else "normal"
        lines.append(f"  cell {index:2d} [{kind}] " + ", ".join(kept))
    return "\n".join(lines)

