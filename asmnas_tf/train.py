"""A training run of the evaluation network: genotype in, tested model out (paper §5.2).

1. Read the genotype (a genotype.json, or a named one such as 'DARTS_V2').
2. Data: the arrays of `load_arrays` (CIFAR, Fashion-MNIST, user data) with
   crop, flip, cutout and normalisation in tf.data, or the streaming
   ImageNet pipeline (`data.imagenet`). The normalisation is saved in the
   run directory for the export.
3. Build the network (`eval_net`), report its size (`size.json`), train it
   with `train_loop.fit` under a `tf.distribute` strategy: SGD with coupled L2,
   cosine or linear decay, drop-path scheduled by epoch, auxiliary loss.
4. Test accuracy at the end, in `results.json`; the model in `model.keras`.

An interrupted run resumes from its last saved state, inside an epoch
(`train_loop.py`); a finished one (`results.json` present) is not run again.
"""

import json
import os
import time

import gin
import keras

from asmnas_tf import run_dir as rd
from asmnas_tf import train_loop
from asmnas_tf.callbacks import LearningRateLogger, StepTimer, StopOnNonFiniteLoss
from asmnas_tf.data import channel_stats, load_arrays, make_dataset
from asmnas_tf.distribute import make_strategy
from asmnas_tf.graph_options import lean_grappler_on_cpu
from asmnas_tf.drop_path import DropPathSchedule
from asmnas_tf.eval_model import LOGITS, compile_eval_model
from asmnas_tf.eval_net import build_eval_net, resolve_genotype
from asmnas_tf.export import MODEL_FILE, write_normalization
from asmnas_tf.inference import classification_metrics, outputs_and_labels
from asmnas_tf.optim import CoupledSGD
from asmnas_tf.search import seed_everything
from asmnas_tf.size_report import describe_size, size_report

RESULTS_FILE = "results.json"
SIZE_FILE = "size.json"
SCHEDULES = ("cosine", "linear")
DATA_SOURCES = ("arrays", "imagenet")


@gin.configurable(denylist=["total_steps"])
def train_optimizer(total_steps, learning_rate=0.025, schedule="cosine", momentum=0.9, weight_decay=3e-4):
    """SGD (PyTorch semantics, coupled L2) with cosine or linear decay to 0 per step."""
    steps = max(int(total_steps), 1)
    if schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.0)
    elif schedule == "linear":
        rate = keras.optimizers.schedules.PolynomialDecay(learning_rate, steps, end_learning_rate=0.0, power=1.0)
    else:
        raise ValueError(f"train_optimizer.schedule={schedule!r} is not one of {', '.join(SCHEDULES)}")
    return CoupledSGD(learning_rate=rate, momentum=momentum, l2=weight_decay)


def _array_data(batch_size, eval_batch_size, seed):
    arrays = load_arrays()
    mean, std = channel_stats(arrays.x_train)
    train = make_dataset(arrays.x_train, arrays.y_train, batch_size, training=True, mean=mean, std=std, seed=seed)
    test = make_dataset(arrays.x_test, arrays.y_test, eval_batch_size, training=False, mean=mean, std=std)
    return dict(train=train, test=test, num_train=len(arrays.x_train), num_test=len(arrays.x_test),
                image_shape=arrays.image_shape, num_classes=arrays.num_classes, mean=mean, std=std,
                name=arrays.name)


def _imagenet_data(batch_size, eval_batch_size, seed):
    from asmnas_tf.data.imagenet import imagenet_datasets

    data = imagenet_datasets(batch_size, eval_batch_size, seed=seed)
    return {field: getattr(data, field) for field in
            ("train", "test", "num_train", "num_test", "image_shape", "num_classes", "mean", "std", "name")}


def _callbacks(model_dir, drop_path, epochs, timer, extra, chief):
    """The run's callbacks; only the chief writes files (SPEC §8)."""
    # First: a NaN loss must stop the run before the epoch's state is saved.
    guard = StopOnNonFiniteLoss(os.path.join(model_dir, rd.CHECKPOINT_DIR))
    schedule = DropPathSchedule(drop_path, epochs)
    if not chief:
        return [guard, schedule, timer, *extra]
    return [
        guard,
        schedule,
        LearningRateLogger(),
        keras.callbacks.CSVLogger(os.path.join(model_dir, rd.HISTORY_FILE), append=True),
        keras.callbacks.TensorBoard(os.path.join(model_dir, rd.TENSORBOARD_DIR), write_graph=False),
        timer,
        *extra,
    ]


def _write_json(path, value):
    rd.write_text_atomic(path, json.dumps(value, indent=1) + "\n")


def _save_model_atomic(model, path):
    tmp = os.path.join(os.path.dirname(path), ".tmp-" + os.path.basename(path))
    model.save(tmp)
    os.replace(tmp, path)


@gin.configurable(denylist=["model_dir", "extra_callbacks"])
def run_train(
    model_dir,
    genotype=None,
    num_cells=None,
    data="arrays",
    batch_size=64,
    eval_batch_size=256,
    epochs=600,
    drop_path=0.2,
    seed=0,
    deterministic=False,
    save_every_steps=100,
    verbose="auto",
    extra_callbacks=(),
):
    """Train and test the evaluation network of `genotype`; returns a summary dict.

    `save_every_steps`: how often the training state is saved inside an
    epoch (`train_loop.py`). Under a multi-worker strategy only the chief
    writes and tests; the other workers return {"chief": False}.

    `genotype`: a genotype.json path or a named genotype ('DARTS_V2', ...).
    `num_cells`: the depth; None takes the file's (15 for a named genotype).
    `data`: 'arrays' (whatever `load_arrays` is bound to) or 'imagenet'.
    The dict holds test_accuracy, test_loss, params, macs, epochs, wall_s...
    """
    results_path = os.path.join(model_dir, RESULTS_FILE)
    if os.path.exists(results_path):
        with open(results_path, encoding="utf-8") as f:
            results = json.load(f)
        print(f"Training already complete: {results_path}")
        return {**results, "resumed_complete": True}
    if genotype is None:
        raise ValueError("run_train.genotype is not set: bind it to a genotype.json path or a named "
                         "genotype (DARTS_V1, DARTS_V2, PC_DARTS, PDARTS)")
    if data not in DATA_SOURCES:
        raise ValueError(f"run_train.data={data!r} is not one of {', '.join(DATA_SOURCES)}")
    cells = resolve_genotype(genotype, num_cells)
    os.makedirs(model_dir, exist_ok=True)  # bin/train has prepared it; direct callers may not
    strategy = make_strategy()  # first: it may split the CPU into logical devices
    lean_grappler_on_cpu()
    chief = train_loop.is_chief(strategy)
    seed_everything(seed, deterministic)
    loader = _array_data if data == "arrays" else _imagenet_data
    d = loader(batch_size, eval_batch_size, seed)
    steps_per_epoch = d["num_train"] // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"run_train.batch_size={batch_size} is larger than the {d['num_train']} training images")
    if chief:
        write_normalization(model_dir, d["mean"], d["std"], d["image_shape"], d["num_classes"], d["name"])

    started = time.perf_counter()
    with strategy.scope():
        model = build_eval_net(cells, d["image_shape"], d["num_classes"])
        compile_eval_model(model, train_optimizer(total_steps=epochs * steps_per_epoch))
    size = size_report(model)
    if chief:
        _write_json(os.path.join(model_dir, SIZE_FILE), size)
    print(f"Evaluation network: {len(cells.cells)} cells, {describe_size(size)}; "
          f"{strategy.num_replicas_in_sync} replica(s); {d['num_train']} training images")
    if chief:
        rd.write_text_atomic(os.path.join(model_dir, rd.OPERATIVE_CONFIG_FILE), gin.operative_config_str())

    timer = StepTimer(os.path.join(model_dir, rd.TIMING_FILE) if chief else None)
    callbacks = _callbacks(model_dir, drop_path, epochs, timer, list(extra_callbacks), chief)
    history = train_loop.fit(model, d["train"], epochs=epochs, strategy=strategy,
                             checkpoint_dir=os.path.join(model_dir, rd.CHECKPOINT_DIR), callbacks=callbacks,
                             save_every_steps=save_every_steps, steps_per_epoch=steps_per_epoch,
                             verbose=verbose)
    if not chief:
        return {"chief": False, "resumed_complete": False}
    # In this process alone: no collective ops, so the same under every strategy.
    outputs, labels = outputs_and_labels(model, d["test"])
    evaluation = classification_metrics(outputs[LOGITS], labels)
    _save_model_atomic(model, os.path.join(model_dir, MODEL_FILE))
    results = {
        "test_accuracy": float(evaluation["accuracy"]),
        "test_top5_accuracy": float(evaluation["top5_accuracy"]),
        "test_loss": float(evaluation["loss"]),
        "num_test": d["num_test"],
        "epochs": epochs,
        "epochs_run_now": len(history.epoch),
        "num_cells": len(cells.cells),
        **size,
        **timer.summary(),
        "wall_s": time.perf_counter() - started,
    }
    _write_json(results_path, results)
    rd.write_text_atomic(os.path.join(model_dir, rd.OPERATIVE_CONFIG_FILE), gin.operative_config_str())
    print(f"Test accuracy: {results['test_accuracy']:.4f} ({d['num_test']} images); written: {results_path}")
    return {**results, "resumed_complete": False}
