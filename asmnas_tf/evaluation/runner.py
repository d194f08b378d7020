"""A training run of the evaluation network: genotype in, tested model out (paper §5.2).

1. Read the genotype (a genotype.json, or a named one such as 'DARTS_V2').
2. Data: the arrays of `load_arrays` (CIFAR, Fashion-MNIST, user data) with
   crop, flip, cutout and normalisation in tf.data, or the streaming
   ImageNet pipeline (`data.imagenet`). The normalisation is saved in the
   run directory for the export.
3. Build the network (`evaluation/builder.py`), report its size (`size.json`), train it
   with `train_loop.fit` under a `tf.distribute` strategy: the recipe of
   `recipe.py` (SGD with coupled L2, warm-up, cosine/linear decay, optional
   weight average), drop-path scheduled by epoch, auxiliary loss.
4. Test accuracy at the end (optionally with test-time augmentation,
   `tta.py`), in `results.json`; the model in `model.keras` (the weight
   average, when the recipe keeps one: the weights that were tested).

An interrupted run resumes from its last saved state, inside an epoch
(`train_loop.py`); a finished one (`results.json` present) is not run again.
"""

import dataclasses
import os
import time

import gin

from asmnas_tf.rundir import run_dir as rd
from asmnas_tf.rundir.atomic_write import write_file_atomic
from asmnas_tf.training import train_loop
from asmnas_tf.training.callbacks import StepTimer
from asmnas_tf.rundir.checkpoints import check_resumable
from asmnas_tf.training.run_skeleton import (check_counts, check_run_bindings, config_with, run_callbacks, start_run,
                                             working_dir, write_operative_config)
from asmnas_tf.data import as_image_arrays, channel_stats, load_arrays, make_dataset
from asmnas_tf.data.pipeline import MIRROR_INVARIANT, flips
from asmnas_tf.host.distribute import make_strategy
from asmnas_tf.layers.drop_path import DropPathSchedule
from asmnas_tf.evaluation.model import compile_eval_model
from asmnas_tf.training.precision import inner_optimizer
from asmnas_tf.evaluation.recipe import binding as gin_binding, check_recipe, train_optimizer
from asmnas_tf.evaluation.tta import tta_metrics
from asmnas_tf.evaluation.builder import build_eval_net, resolve_genotype
from asmnas_tf.space.search_space import search_space
from asmnas_tf.evaluation.export import normalization_info, write_normalization_info
from asmnas_tf.evaluation.size_report import describe_size, size_report
from asmnas_tf.errors import UserError

DATA_SOURCES = ("arrays", "imagenet")


def _array_data(arrays, batch_size, eval_batch_size, seed):
    mean, std = channel_stats(arrays.x_train)
    train = make_dataset(arrays.x_train, arrays.y_train, batch_size, training=True, mean=mean, std=std, seed=seed,
                         dataset=arrays.name)
    test = make_dataset(arrays.x_test, arrays.y_test, eval_batch_size, training=False, mean=mean, std=std)
    return dict(train=train, test=test, num_train=len(arrays.x_train), num_test=len(arrays.x_test),
                image_shape=arrays.image_shape, num_classes=arrays.num_classes, mean=mean, std=std,
                name=arrays.name)


def _imagenet_data(batch_size, eval_batch_size, seed):
    from asmnas_tf.data.imagenet import imagenet_datasets

    data = imagenet_datasets(batch_size, eval_batch_size, seed=seed)
    return {field: getattr(data, field) for field in
            ("train", "test", "num_train", "num_test", "image_shape", "num_classes", "mean", "std", "name")}


def _save_model_atomic(model, path):
    write_file_atomic(path, model.save, suffix=".keras")  # Keras wants the .keras suffix


@dataclasses.dataclass
class TrainResult:
    """What a training returns (one type for every case).

    `results`: what results.json holds (test_accuracy, test_loss, params,
    macs, epochs, wall_s...; empty on a worker that is not the chief).
    `model`: the trained evaluation network (a keras.Model; None when the
    run was already complete: load `model_dir`/model.keras). `normalization`:
    what the served graph needs (mean, std, image shape), for `export`.
    """

    results: dict = dataclasses.field(default_factory=dict)
    history: dict = dataclasses.field(default_factory=dict)
    model: object = None
    normalization: dict = None
    model_dir: str = None
    chief: bool = True
    resumed_complete: bool = False

    @property
    def test_accuracy(self):
        return self.results.get("test_accuracy")


@gin.configurable("run_train")
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A training's options, checked once (`check`) before any data is read or file written.

    Its gin name is `run_train`: `run_train.epochs = 12` binds a field.
    Fields not given keep gin's binding, else these defaults (the paper's).
    `genotype`: a `Genotype`, a genotype.json path or a named genotype
    ('DARTS_V2', ...); `num_cells`: the depth (None: the genotype's).
    `data`: 'arrays' (whatever `load_arrays` is bound to) or 'imagenet'
    (the streaming pipeline of `data.imagenet`). `test_time_augmentation`:
    None or 'flip' (`tta.py`). `save_every_steps`: how often the training
    state is saved inside an epoch (`train_loop.py`).
    """

    genotype: object = None
    num_cells: object = None
    data: str = "arrays"
    batch_size: int = 64
    eval_batch_size: int = 256
    epochs: int = 600
    drop_path: float = 0.2
    test_time_augmentation: object = None
    seed: int = 0
    deterministic: bool = False
    save_every_steps: int = 100
    verbose: object = "auto"

    def check(self, network_options=None):
        """One line naming the binding, the value and what is accepted; returns self."""
        check_counts("run_train", epochs=(self.epochs, 1), batch_size=(self.batch_size, 1),
                     eval_batch_size=(self.eval_batch_size, 1), save_every_steps=(self.save_every_steps, 0),
                     seed=(self.seed, 0))
        check_run_bindings("run_train", self.verbose)
        drop_path = self.drop_path
        if not isinstance(drop_path, (int, float)) or isinstance(drop_path, bool) or not 0 <= drop_path < 1:
            raise UserError(f"run_train.drop_path={drop_path!r}: expected a number in [0, 1)")
        check_recipe(self.epochs, self.batch_size, network_options, self.test_time_augmentation)
        if self.data not in DATA_SOURCES:
            raise UserError(f"run_train.data={self.data!r} is not one of {', '.join(DATA_SOURCES)}")
        return self


def train_config(config=None, **fields):
    """`config` (or the bound TrainConfig) with `fields` replaced; an unknown field is one line."""
    return config_with(TrainConfig, config, fields, "train")


def _completed(model_dir):
    """The result of a finished training in `model_dir`, or None."""
    run = rd.RunDir(model_dir)
    results = run.read_results()
    if results is None:
        return None
    print(f"Training already complete: {run.file(rd.RESULTS_FILE)}")
    return TrainResult(results=results, model_dir=model_dir, resumed_complete=True)


def train(
    genotype,
    x,
    y=None,
    x_test=None,
    y_test=None,
    *,
    config=None,
    channels=None,
    network_options=None,
    callbacks=(),
    model_dir=None,
    **fields,
):
    """Train the evaluation network of `genotype` on `x`, `y`; test on `x_test`, `y_test`.

    `genotype`: a `Genotype`, a genotype.json path or a named genotype
    ('DARTS_V2', ...). `config`: a `TrainConfig`; `fields` (num_cells,
    batch_size, eval_batch_size, epochs, drop_path, test_time_augmentation,
    seed, deterministic, save_every_steps, verbose) replace its fields.
    `channels` and `network_options` (more `build_eval_net` arguments) size
    the network; None keeps gin's binding or the paper's default (C = 36).
    Data as in `search`; without a test split the result has no test
    accuracy. `model_dir`: the run directory (checkpoints, history,
    model.keras, results.json, normalization.json), resumed if interrupted;
    None writes nothing that outlives the call. Returns a `TrainResult`.
    """
    config = train_config(config, genotype=genotype, data="arrays", **fields)
    network_kwargs = dict(network_options or {}, **({} if channels is None else {"channels": channels}))
    return _run(lambda: as_image_arrays(x, y, x_test, y_test), config, model_dir, network_kwargs, callbacks)


def _run(load_data, config, model_dir, network_kwargs=None, callbacks=()):
    """The skeleton every training runs: checks, resume, data, the training, its files."""
    network_kwargs = network_kwargs or {}
    config.check(network_kwargs)
    if config.genotype is None:
        raise UserError("run_train.genotype is not set: bind it to a genotype.json path or a named "
                        "genotype (DARTS_V1, DARTS_V2, PC_DARTS, PDARTS)")
    completed = _completed(model_dir) if model_dir is not None else None
    if completed:
        return completed
    if model_dir is not None:  # a spoilt saved state is found now, not after the data is read
        check_resumable(rd.RunDir(model_dir).checkpoints)
    cells = resolve_genotype(config.genotype, config.num_cells, search_space())
    train_loop.check_jit_compile(make_strategy())  # before the data: it may split the CPU into logical devices
    if config.data == "imagenet":
        data = _imagenet_data(config.batch_size, config.eval_batch_size, config.seed)
    else:
        arrays = load_data()
        if config.test_time_augmentation == "flip" and not flips(gin_binding(make_dataset, "flip"), arrays.name):
            # `make_dataset.flip = 'auto'` does not mirror a user's dataset: neither does the test.
            print(f"note: {arrays.name!r} is not flipped in training (make_dataset.flip = 'auto' flips "
                  f"{', '.join(MIRROR_INVARIANT)}; True flips any): tested without the flip "
                  f"(run_train.test_time_augmentation = 'flip' ignored)")
            config = dataclasses.replace(config, test_time_augmentation=None)
        data = _array_data(arrays, config.batch_size, config.eval_batch_size, config.seed)
    with working_dir(model_dir, "asmnas-train-") as (directory, keep_files):
        result = _train(cells, data, directory, network_kwargs, config, callbacks, keep_files)
    return result if keep_files else dataclasses.replace(result, model_dir=None)


def _train(cells, d, model_dir, network_kwargs, config, extra_callbacks, keep_files):
    """The training itself, in `model_dir` (a temporary one when not `keep_files`)."""
    batch_size, epochs, drop_path, seed = config.batch_size, config.epochs, config.drop_path, config.seed
    test_time_augmentation = config.test_time_augmentation
    os.makedirs(model_dir, exist_ok=True)  # the command has prepared it; API callers may not
    strategy, chief = start_run(seed, config.deterministic)
    steps_per_epoch = d["num_train"] // batch_size
    if steps_per_epoch < 1:
        raise UserError(f"run_train.batch_size={batch_size} is larger than the {d['num_train']} training images")
    normalization = normalization_info(d["mean"], d["std"], d["image_shape"], d["num_classes"], d["name"])
    if chief and keep_files:
        write_normalization_info(model_dir, normalization)

    started = time.perf_counter()
    with strategy.scope():
        # No drop-path layers when none is dropped (`build_eval_net`).
        model = build_eval_net(cells, d["image_shape"], d["num_classes"], drop_path=drop_path > 0,
                               **network_kwargs)
        compile_eval_model(model, train_optimizer(steps_per_epoch=steps_per_epoch, epochs=epochs,
                                                  batch_size=batch_size))
    size = size_report(model)
    if chief and keep_files:
        rd.RunDir(model_dir).write_size(size)
    print(f"Evaluation network: {len(cells.cells)} cells, {describe_size(size)}; "
          f"{strategy.num_replicas_in_sync} replica(s); {d['num_train']} training images")
    if chief and keep_files:
        write_operative_config(model_dir)

    run = rd.RunDir(model_dir)
    timer = StepTimer(run.file(rd.TIMING_FILE) if chief else None)
    callbacks = run_callbacks(model_dir, timer, chief and keep_files,
                              schedules=[DropPathSchedule(drop_path, epochs)]) + list(extra_callbacks)
    history = train_loop.fit(model, d["train"], epochs=epochs, strategy=strategy,
                             checkpoint_dir=run.checkpoints, callbacks=callbacks,
                             save_every_steps=config.save_every_steps, steps_per_epoch=steps_per_epoch,
                             verbose=config.verbose)
    optimizer = inner_optimizer(model.optimizer)  # the slots and the average (`precision.py`)
    if optimizer.use_ema:
        # The weight average replaces the weights, as at the end of Keras's
        # `fit`: it is what is tested, saved and exported. The saved training
        # state keeps both, so a resumed run finalises the same way.
        with strategy.scope():
            optimizer.finalize_variable_values(model.trainable_variables)
    if not chief:
        return TrainResult(history=history.history, model=model, model_dir=model_dir, chief=False)
    results = {"num_test": d["num_test"], "epochs": epochs, "epochs_run_now": len(history.epoch),
               "num_cells": len(cells.cells), "weight_average": bool(optimizer.use_ema),
               "test_time_augmentation": test_time_augmentation, **size, **timer.summary()}
    if d["num_test"]:
        # In this process alone: no collective ops, so the same under every strategy.
        evaluation = tta_metrics(model, d["test"], test_time_augmentation)
        results.update(test_accuracy=float(evaluation["accuracy"]),
                       test_top5_accuracy=float(evaluation["top5_accuracy"]), test_loss=float(evaluation["loss"]))
        if "single_view_accuracy" in evaluation:
            results["test_accuracy_single_view"] = float(evaluation["single_view_accuracy"])
    results["wall_s"] = time.perf_counter() - started
    if keep_files:
        _save_model_atomic(model, run.model_path)
        run.write_results(results)
        results_path = run.file(rd.RESULTS_FILE)
        write_operative_config(model_dir)
        if "test_accuracy" in results:
            print(f"Test accuracy: {results['test_accuracy']:.4f} ({d['num_test']} images); written: {results_path}")
    return TrainResult(results=results, history=history.history, model=model, normalization=normalization,
                       model_dir=model_dir)


def run_train(model_dir, config=None, extra_callbacks=()):
    """The training of the bound `TrainConfig` (`run_train.*`) on the data gin binds, in `model_dir`.

    The command's runner. Under a multi-worker strategy only the chief
    writes and tests.
    """
    return _run(load_arrays, config or TrainConfig(), model_dir, callbacks=extra_callbacks)
