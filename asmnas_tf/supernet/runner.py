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

import gin
import numpy as np
import tensorflow as tf

from asmnas_tf.rundir import run_dir as rd
from asmnas_tf.training import train_loop
from asmnas_tf.supernet.darts import DartsModel, architecture_optimizer, compile_darts
from asmnas_tf.training.callbacks import StepTimer
from asmnas_tf.rundir.checkpoints import check_resumable
from asmnas_tf.training.run_skeleton import (check_counts, check_run_bindings, config_with, run_callbacks, start_run,
                                             working_dir, write_operative_config)
from asmnas_tf.data import as_image_arrays, channel_stats, load_arrays, make_dataset, split_halves
from asmnas_tf.host.distribute import make_strategy
from asmnas_tf.training.hparams import write_session
from asmnas_tf.training.optim import search_optimizer
from asmnas_tf.plots import plot_pareto, write_run_plots
from asmnas_tf.supernet.model import COEFFICIENTS, compile_supernet
from asmnas_tf.supernet.confidence import selection_confidence
from asmnas_tf.supernet.report import search_report
from asmnas_tf.evaluation.cost_table import genotype_choices
from asmnas_tf.supernet.budget import (Budget, Problem, front_record, pareto_front, prepare_budget,
                                       score as budget_score, unscored_below)
from asmnas_tf.supernet.selection import RULES, coefficient_samples, mean_coefficients, select_genotype
from asmnas_tf.supernet.telemetry import SearchTelemetry
from asmnas_tf.supernet.builder import PATH_SAMPLER, build_supernet
from asmnas_tf.supernet.rsps import rsps_select
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


@gin.configurable("run_search")
@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """A search's options, checked once (`check`) before any data is read or file written.

    Its gin name is `run_search`: `run_search.epochs = 10` binds a field.
    Fields not given keep gin's binding, else these defaults (the paper's).
    `save_every_steps`: the training state is saved this often inside an
    epoch (and at every epoch end), so a killed run loses at most that many
    steps (`train_loop.py`). `telemetry_samples`: selection images selected
    on at every epoch end (`telemetry.py`; 0 turns it off). RSPS
    (`method="rsps"`, `rsps.py`) ranks `rsps_candidates` sampled
    architectures on the first `rsps_images` images of the selection half.
    `max_params`, `max_multiply_adds`: the largest evaluation network the
    search may pick, the network `build_eval_net`'s bindings build (bind
    them as the train step does); checked before the search trains.
    """

    method: str = "asm"
    epochs: int = 30
    batch_size: int = 64
    selection_batch_size: int = 256
    rule: str = "argmax"
    seed: int = 0
    deterministic: bool = False
    save_every_steps: int = 100
    telemetry_samples: int = 256
    rsps_candidates: int = 50
    rsps_images: int = 500
    verbose: object = "auto"
    max_params: int = None
    max_multiply_adds: int = None

    @property
    def budget(self):
        """The evaluation network's size limit (`budget.py`): selection picks the best genotype within it."""
        return Budget(self.max_params, self.max_multiply_adds)

    def check(self):
        """One line naming the binding, the value and what is accepted; returns self."""
        if self.method not in METHODS:
            raise UserError(f"run_search.method={self.method!r} is not one of {', '.join(METHODS)}")
        if self.rule not in RULES:
            raise UserError(f"run_search.rule={self.rule!r} is not one of {', '.join(RULES)}")
        check_counts("run_search", epochs=(self.epochs, 1), batch_size=(self.batch_size, 1),
                     selection_batch_size=(self.selection_batch_size, 1),
                     save_every_steps=(self.save_every_steps, 0), telemetry_samples=(self.telemetry_samples, 0),
                     rsps_candidates=(self.rsps_candidates, 1), rsps_images=(self.rsps_images, 1),
                     seed=(self.seed, 0))
        check_run_bindings("run_search", self.verbose)
        self.budget.check()
        if self.method == "rsps" and self.budget.active:
            raise UserError("run_search.max_params/max_multiply_adds: RSPS ranks sampled architectures and has no "
                            "values to budget; use method 'asm', 'darts1' or 'darts2'")
        if self.method == "rsps" and self.rule != "argmax":
            raise UserError(f"run_search.rule={self.rule!r}: RSPS samples argmax architectures (one op per edge); "
                            f"use rule 'argmax' with method 'rsps'")
        return self


def search_config(config=None, **fields):
    """`config` (or the bound SearchConfig) with `fields` replaced; an unknown field is one line."""
    return config_with(SearchConfig, config, fields, "search")


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
    method, epochs, batch_size, seed, rule = config.method, config.epochs, config.batch_size, config.seed, config.rule
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
    costs = None
    if config.budget.active:  # one line now if no genotype fits, not after the training
        costs = prepare_budget(config.budget, arrays.image_shape, arrays.num_classes,
                               model.output[COEFFICIENTS].shape[1], search_space(), rule, remedies)
    if chief and keep_files:
        write_operative_config(model_dir)

    source = {"method": method, "dataset": arrays.name, "seed": seed}
    if remedies != SearchRemedies():
        source["remedies"] = dataclasses.asdict(remedies)
    # RSPS has no coefficients to watch: its selection ranks sampled paths.
    run = rd.RunDir(model_dir)
    initial_coeffs = None if rsps else _initial_coefficients(model, select, run, chief and keep_files)
    telemetry = [] if subset is None or rsps else [SearchTelemetry(
        subset, initial_coeffs, rule, source,
        path=run.genotypes_path if chief and keep_files else None,
        tensorboard_dir=run.tensorboard if chief and keep_files else None)]
    timer = StepTimer(run.file(rd.TIMING_FILE) if chief else None)
    callbacks = run_callbacks(model_dir, timer, chief and keep_files, schedules=telemetry) + list(extra_callbacks)
    history = train_loop.fit(model, train, epochs=epochs, strategy=strategy,
                             checkpoint_dir=run.checkpoints, callbacks=callbacks,
                             save_every_steps=config.save_every_steps, steps_per_epoch=steps_per_epoch,
                             verbose=config.verbose)
    if not chief:
        return SearchResult(model=model, history=history.history, model_dir=model_dir, chief=False)

    if rsps:
        result = _rsps_selection(model, subset, arrays, source, config, run, keep_files, history, timer, build_s,
                                 started)
        if keep_files:
            _write_hparams(run, config, remedies, supernet_kwargs, source,
                           {"selection_accuracy": result.selection_accuracy})
        return result
    # Selection (Algorithm 1, steps 6-13): frozen weights, inference mode.
    samples, selection_accuracy = coefficient_samples(model, select)
    mean_coeffs, num_samples = samples.mean(axis=0, dtype=np.float64), samples.shape[0]
    genotype, pareto = _select(model, select, mean_coeffs, rule, source, remedies, config.budget, costs)
    confidence = selection_confidence(samples, seed=seed, rule=rule)
    report = search_report(initial_coeffs, mean_coeffs, confidence, rule)
    for line in report["lines"]:
        print(line)
    plots = []
    timing = {"build_s": build_s, **timer.summary(), "selection_accuracy": selection_accuracy,
              "wall_s": time.perf_counter() - started}
    if keep_files:
        rd.save_weights_atomic(model, run.supernet_weights)
        run.write_attention(mean_coeffs, num_samples, confidence)
        run.write_diagnostics(report)
        run.write_genotype(genotype)
        _write_hparams(run, config, remedies, supernet_kwargs, source,
                       {"selection_accuracy": selection_accuracy, "mean_abs_drift": report.get("mean_abs_drift")})
        plots = write_run_plots(model_dir)  # Fig. 4 heatmaps, Appendix A cell diagrams
        if pareto is not None:
            run.write_pareto(pareto)
            plot_pareto(pareto, os.path.join(run.plots, rd.PARETO_PLOT_FILE))
            plots.append(os.path.join(run.plots, rd.PARETO_PLOT_FILE))
        run.write_timing(timing)
        write_operative_config(model_dir)
    return SearchResult(genotype=genotype, coefficients=np.asarray(mean_coeffs), selection_accuracy=selection_accuracy,
                        history=history.history, model=model, model_dir=model_dir, plots=plots, timing=timing,
                        diagnostics=report)


def _rsps_selection(model, subset, arrays, source, config, run, keep_files, history, timer, build_s, started):
    """RSPS's end: the best of `config.rsps_candidates` sampled architectures on the shared weights (`rsps.py`)."""
    candidates = config.rsps_candidates
    num_cells = model.get_layer(PATH_SAMPLER).num_cells
    genotype, record = rsps_select(model, subset, num_cells, source["seed"], candidates, source)
    print(f"RSPS: best of {candidates} sampled architectures: candidate {record['best']}, shared-weights "
          f"accuracy {record['best_accuracy']:.4f} (median {np.median(record['accuracies']):.4f})")
    timing = {"build_s": build_s, **timer.summary(), "selection_accuracy": record["best_accuracy"],
              "wall_s": time.perf_counter() - started}
    plots = []
    if keep_files:
        rd.save_weights_atomic(model, run.supernet_weights)
        run.write_rsps(record)
        run.write_genotype(genotype)
        plots = write_run_plots(run.path)
        run.write_timing(timing)
        write_operative_config(run.path)
    return SearchResult(genotype=genotype, selection_accuracy=record["best_accuracy"], history=history.history,
                        model=model, model_dir=run.path, plots=plots, timing=timing, diagnostics={"rsps": record})


def _write_hparams(run, config, remedies, supernet_kwargs, source, metrics):
    """The run's TensorBoard HParams session: its options, remedies and supernet size; its final figures."""
    settings = {key: value for key, value in dataclasses.asdict(config).items() if key != "verbose"}
    settings.update({f"remedies.{key}": value for key, value in dataclasses.asdict(remedies).items()})
    for name in ("build_supernet", "search_space"):  # what gin bound, then what the call gave
        settings.update({f"{name}.{key}": value for key, value in gin.get_bindings(name).items()})
    settings.update({f"build_supernet.{key}": value for key, value in supernet_kwargs.items()})
    settings["dataset"] = source["dataset"]
    write_session(run.tensorboard, f"{source['method']}-seed{source['seed']}", settings, metrics)


def _initial_coefficients(model, select, run, write):
    """Mean coefficients of the untrained supernet on the selection split (the baseline).

    Computed before the first step and kept in the run directory, so that
    a resumed run compares with the same initialisation.
    """
    record = run.read_attention(initial=True)
    if record is not None:
        return record.coefficients
    initial, num_samples, _ = mean_coefficients(model, select)
    if write:
        run.write_attention(initial, num_samples, initial=True)
    return initial


def run_search(model_dir, config=None, extra_callbacks=()):
    """The search of the bound `SearchConfig` (`run_search.*`) on the dataset of `load_arrays`, in `model_dir`.

    The command's runner. Under a multi-worker strategy only the chief
    writes; the other workers get a result with `chief=False`, no genotype.
    """
    return _run(load_arrays, config or SearchConfig(), model_dir, callbacks=extra_callbacks)


def _select(model, select, mean_coeffs, rule, source, remedies, budget=Budget(), costs=None):
    """(genotype, pareto record or None): from the mean coefficients or perturbation scores, within `budget`."""
    space = search_space()
    values = mean_coeffs
    if remedies.selection == "perturbation":
        images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in select])
        excluded = [space.index("zero")] if remedies.exclude_zero else []
        values, baseline = perturbation_scores(model, np.concatenate(images), np.concatenate(labels), mean_coeffs,
                                               space, remedies.perturbation_top_k, excluded)
        print(f"Perturbation selection: supernet accuracy {baseline:.4f} on {sum(len(y) for y in labels)} "
              f"selection images; each edge's top {remedies.perturbation_top_k} ops removed in turn")
        if budget.active:
            values = unscored_below(values)
    if not budget.active:
        return select_genotype(values, rule, source, space, exclude_zero=remedies.exclude_zero,
                               max_parameter_free=remedies.max_parameter_free), None
    allowed = tuple(not (remedies.exclude_zero and name == "zero") for name in space.primitives)
    problem = Problem(np.asarray(values, np.float64), costs, rule, allowed, remedies.max_parameter_free)
    genotype = select_genotype(values, rule, source, space, exclude_zero=remedies.exclude_zero,
                               max_parameter_free=remedies.max_parameter_free, budget=(costs, budget))
    choices = genotype_choices(genotype, space)
    params, macs = costs.of_choices(choices)
    chosen = {"score": budget_score(problem, choices), "params": params, "multiply_adds": macs}
    genotype = dataclasses.replace(genotype, source={**genotype.source, "budget": dataclasses.asdict(budget),
                                                     "cost": {"params": params, "multiply_adds": macs}})
    print(f"Budget {budget.describe()}: picked {params:,} parameters, {macs / 1e6:.2f} M multiply-adds "
          f"(selection score {chosen['score']:.4f}); Pareto front in {rd.PARETO_FILE}")
    return genotype, front_record(pareto_front(problem, points=8), chosen, budget, costs, space)


def describe(genotype):
    """A few readable lines: each cell's kept edges."""
    lines = []
    for index, cell in enumerate(genotype.cells):
        kept = [f"{e.op}({e.source}->{e.target})" for e in cell.edges if e.op != "zero"]
        kind = "reduce" if cell.reduction else "normal"
        lines.append(f"  cell {index:2d} [{kind}] " + ", ".join(kept))
    return "\n".join(lines)

