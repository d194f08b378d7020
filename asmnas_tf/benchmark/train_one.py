"""One benchmark architecture trained with the fixed recipe: its held-out accuracy at every budget."""

import time

import keras
import numpy as np
import tensorflow as tf

from asmnas_tf.benchmark.space import BENCH_SPACE, genotype_of
from asmnas_tf.evaluation.builder import build_eval_net
from asmnas_tf.evaluation.model import LOGITS, compile_eval_model
from asmnas_tf.training.optim import CoupledSGD


def standardise(images, mean, std):
    return ((images.astype(np.float32) / 255.0) - mean) / std


def prepared_arrays(arrays, recipe):
    """(x_train, y_train, x_test, y_test) of the recipe's split, standardised by the training images' statistics."""
    x_train = arrays.x_train[:recipe["train_images"]]
    y_train = arrays.y_train[:recipe["train_images"]]
    x_test = arrays.x_test[:recipe["test_images"]]
    y_test = arrays.y_test[:recipe["test_images"]]
    scaled = x_train.astype(np.float32) / 255.0
    mean, std = float(scaled.mean()), float(scaled.std())
    return (standardise(x_train, mean, std), y_train.astype(np.int32),
            standardise(x_test, mean, std), y_test.astype(np.int32))


def _train_dataset(x, y, batch_size, seed):
    data = tf.data.Dataset.from_tensor_slices((x, y))
    data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).repeat()
    return data.batch(batch_size, drop_remainder=True).prefetch(2)


def inference_logits(model):
    """The model's logits in inference mode, traced once for the whole learning curve."""
    return tf.function(lambda batch: model(batch, training=False)[LOGITS], reduce_retracing=True)


def held_out_accuracy(logits, x, y, batch_size=1000):
    hits = 0
    for start in range(0, len(x), batch_size):
        hits += int(np.sum(np.argmax(logits(x[start:start + batch_size]).numpy(), axis=-1) ==
                           y[start:start + batch_size]))
    return hits / len(x)


def train_architecture(code, seed, recipe, data, space=BENCH_SPACE):
    """{"accuracy": [held-out accuracy at each budget], "train_loss", "seconds", "parameters"}.

    `data`: `prepared_arrays`' tuple. The learning rate follows one cosine
    over the last budget; the earlier budgets are points along that run.
    """
    x_train, y_train, x_test, y_test = data
    started = time.perf_counter()
    keras.utils.set_random_seed(int(seed))
    genotype = genotype_of(code, recipe["num_cells"], space)
    model = build_eval_net(genotype, x_train.shape[1:], 10, channels=recipe["channels"], stem="cifar",
                           auxiliary=False, clipnorm=5.0, stem_multiplier=recipe["stem_multiplier"],
                           drop_path=False, space=space, name="bench_net")
    batch = recipe["batch_size"]
    steps = [budget // batch for budget in recipe["budgets"]]
    schedule = keras.optimizers.schedules.CosineDecay(recipe["learning_rate"], decay_steps=steps[-1])
    compile_eval_model(model, CoupledSGD(learning_rate=schedule, momentum=recipe["momentum"], l2=recipe["l2"]))
    batches = iter(_train_dataset(x_train, y_train, batch, int(seed)))
    model.make_train_function()
    step = model.train_function  # Keras's compiled step: one batch from the iterator a call
    logits = inference_logits(model)
    accuracies, losses, done = [], [], 0
    for target in steps:
        model.reset_metrics()
        for _ in range(target - done):
            logs = step(batches)
        done = target
        losses.append(float(logs["loss"]))
        accuracies.append(held_out_accuracy(logits, x_test, y_test))
    return {"accuracy": [round(a, 6) for a in accuracies], "train_loss": [round(v, 6) for v in losses],
            "seconds": round(time.perf_counter() - started, 2),
            "parameters": int(sum(np.prod(v.shape) for v in model.trainable_variables))}
