"""An ASM-NAS search run, from a dataset to `genotype.json` (Algorithm 1).

1. Split the training set in two halves (SPEC §4): weights train on the first.
2. Train the supernet's weights (w, Theta) with `model.fit`, single level,
   under a `tf.distribute` strategy (Algorithm 1, steps 1-5).
3. Selection on the second half (steps 6-13): mean coefficients, one rule.
4. Write `attention.json` and `genotype.json` (atomically) in the run dir.

`method`: 'asm' (the paper), or the DARTS baseline on the same supernet
(`architect.py`): 'darts1' (first order) or 'darts2' (second order). DARTS
trains alpha on the second half (augmented and shuffled like the first, as
DARTS's search code does), one batch of each half per step; selection is
the same as ASM's, on softmax(alpha). See gin/search/darts.gin.

An interrupted run resumes from its last saved state, inside an epoch
(`train_loop.py`); a finished one is not run again.
"""

import json
import os
import time

import gin
import keras
import tensorflow as tf

from asmnas_tf import run_dir as rd
from asmnas_tf import train_loop
from asmnas_tf.architect import DartsModel, architecture_optimizer, compile_darts
from asmnas_tf.callbacks import LearningRateLogger, StepTimer, StopOnNonFiniteLoss
from asmnas_tf.data import channel_stats, load_arrays, make_dataset, split_halves
from asmnas_tf.distribute import make_strategy
from asmnas_tf.graph_options import lean_grappler_on_cpu
from asmnas_tf.genotype import read_genotype, write_genotype
from asmnas_tf.optim import search_optimizer
from asmnas_tf.plots import write_run_plots
from asmnas_tf.search_model import compile_supernet
from asmnas_tf.selection import mean_coefficients, select_genotype, write_attention
from asmnas_tf.supernet import build_supernet

METHODS = ("asm", "darts1", "darts2")


def seed_everything(seed, deterministic):
    """Seed Python, numpy, TF and Keras; optionally make TF ops deterministic."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def search_datasets(arrays, batch_size, selection_batch_size, seed, architecture=False):
    """(train, select, n_train, n_select) pipelines on the two halves of the training set.

    With `architecture` (DARTS) the train pipeline yields (weight batch, alpha
    batch) pairs: the second half also goes through the training pipeline
    (augmented, shuffled with seed + 1), as DARTS's validation queue.
    """
    (x_weights, y_weights), (x_select, y_select) = split_halves(arrays.x_train, arrays.y_train)
    mean, std = channel_stats(x_weights)
    train = make_dataset(x_weights, y_weights, batch_size, training=True, mean=mean, std=std, seed=seed)
    select = make_dataset(x_select, y_select, selection_batch_size, training=False, mean=mean, std=std)
    if architecture:
        alpha = make_dataset(x_select, y_select, batch_size, training=True, mean=mean, std=std, seed=seed + 1)
        train = tf.data.Dataset.zip((train, alpha))
    return train, select, len(x_weights), len(x_select)


def _callbacks(model_dir, timer, chief):
    """The run's callbacks; only the chief writes files (SPEC §8)."""
    # First: a NaN loss must stop the run before the epoch's state is saved.
    guard = StopOnNonFiniteLoss(os.path.join(model_dir, rd.CHECKPOINT_DIR))
    if not chief:
        return [guard, timer]
    return [
        guard,
        LearningRateLogger(),
        keras.callbacks.CSVLogger(os.path.join(model_dir, rd.HISTORY_FILE), append=True),
        keras.callbacks.TensorBoard(os.path.join(model_dir, rd.TENSORBOARD_DIR), write_graph=False),
        timer,
    ]


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
    verbose="auto",
    extra_callbacks=(),
):
    """Search on the dataset of `load_arrays`; returns a summary dict.

    `save_every_steps`: the training state is saved this often inside an
    epoch (and at every epoch end), so a killed run loses at most that many
    steps (`train_loop.py`). Under a multi-worker strategy only the chief
    writes; the other workers return {"genotype": None, "chief": False}.
    """
    genotype_path = os.path.join(model_dir, rd.GENOTYPE_FILE)
    if os.path.exists(genotype_path):
        print(f"Search already complete: {genotype_path}")
        return {"genotype": read_genotype(genotype_path), "resumed_complete": True}
    if method not in METHODS:
        raise ValueError(f"run_search.method={method!r} is not one of {', '.join(METHODS)}")
    strategy = make_strategy()  # first: it may split the CPU into logical devices
    lean_grappler_on_cpu()
    chief = train_loop.is_chief(strategy)
    seed_everything(seed, deterministic)
    arrays = load_arrays()
    train, select, n_train, n_select = search_datasets(
        arrays, batch_size, selection_batch_size, seed, architecture=method != "asm"
    )
    steps_per_epoch = n_train // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"run_search.batch_size={batch_size} is larger than the {n_train} training images")

    started = time.perf_counter()
    with strategy.scope():
        weight_optimizer = search_optimizer(total_steps=epochs * steps_per_epoch)
        if method == "asm":
            model = build_supernet(arrays.image_shape, arrays.num_classes)
            if isinstance(model, DartsModel):
                raise ValueError("build_supernet.mixing='alpha' is DARTS: set run_search.method to darts1 or darts2")
            compile_supernet(model, weight_optimizer)
        else:
            model = build_supernet(arrays.image_shape, arrays.num_classes, mixing="alpha")
            compile_darts(model, weight_optimizer, architecture_optimizer(), second_order=method == "darts2")
    build_s = time.perf_counter() - started
    print(
        f"Supernet: {len(model.layers)} layers, {model.count_params():,} parameters, "
        f"{strategy.num_replicas_in_sync} replica(s), built in {build_s:.1f} s; "
        f"{n_train} images train the weights, {n_select} select"
    )
    if chief:
        rd.write_text_atomic(os.path.join(model_dir, rd.OPERATIVE_CONFIG_FILE), gin.operative_config_str())

    timer = StepTimer(os.path.join(model_dir, rd.TIMING_FILE) if chief else None)
    callbacks = _callbacks(model_dir, timer, chief) + list(extra_callbacks)
    train_loop.fit(model, train, epochs=epochs, strategy=strategy,
                   checkpoint_dir=os.path.join(model_dir, rd.CHECKPOINT_DIR), callbacks=callbacks,
                   save_every_steps=save_every_steps, steps_per_epoch=steps_per_epoch, verbose=verbose)
    if not chief:
        return {"genotype": None, "chief": False, "resumed_complete": False}
    rd.save_weights_atomic(model, os.path.join(model_dir, rd.SUPERNET_WEIGHTS_FILE))

    # Selection (Algorithm 1, steps 6-13): frozen weights, inference mode.
    mean_coeffs, num_samples, selection_accuracy = mean_coefficients(model, select)
    write_attention(os.path.join(model_dir, rd.ATTENTION_FILE), mean_coeffs, num_samples)
    source = {"method": method, "dataset": arrays.name, "seed": seed}
    genotype = select_genotype(mean_coeffs, rule, source)
    write_genotype(genotype_path, genotype)
    plots = write_run_plots(model_dir)  # Fig. 4 heatmaps, Appendix A cell diagrams
    summary = {
        "build_s": build_s,
        **timer.summary(),
        "selection_accuracy": selection_accuracy,
        "wall_s": time.perf_counter() - started,
    }
    rd.write_text_atomic(os.path.join(model_dir, rd.TIMING_FILE), json.dumps(summary, indent=1) + "\n")
    rd.write_text_atomic(os.path.join(model_dir, rd.OPERATIVE_CONFIG_FILE), gin.operative_config_str())
    return {"genotype": genotype, "chief": True, "resumed_complete": False, "plots": plots, **summary}


def describe(genotype):
    """A few readable lines: each cell's kept edges."""
    lines = []
    for index, cell in enumerate(genotype.cells):
        kept = [f"{e.op}({e.source}->{e.target})" for e in cell.edges if e.op != "zero"]
        kind = "reduce" if cell.reduction else "normal"
        lines.append(f"  cell {index:2d} [{kind}] " + ", ".join(kept))
    return "\n".join(lines)

