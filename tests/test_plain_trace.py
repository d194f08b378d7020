"""The train step is traced as plain Python, not through AutoGraph.

AutoGraph converted every variable's optimizer update and clip of the step
(`converted_call`, about four a variable) for the same graph. The step that
`train_loop` runs converts none of them, and trains to the same weights as
the AutoGraph-traced step.
"""

import collections

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.autograph.impl import api as autograph_api

from asmnas_tf.evaluation.builder import build_eval_net, resolve_genotype
from asmnas_tf.evaluation.model import compile_eval_model
from asmnas_tf.training import train_loop
from asmnas_tf.training.optim import CoupledSGD


def _model():
    keras.utils.set_random_seed(0)
    model = build_eval_net(resolve_genotype("DARTS_V2", 2), (8, 8, 3), 4, channels=4, drop_path=False)
    return compile_eval_model(model, CoupledSGD(0.1))


def _batches():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 8, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 4, (3, 8)).astype("int32")
    return [(tf.constant(a), tf.constant(b)) for a, b in zip(x, y)]


def _train(step_of, monkeypatch):
    """Weights after three steps of `step_of(model)` and the functions AutoGraph converted meanwhile."""
    converted = collections.Counter()
    original = autograph_api.converted_call

    def counting(f, args, kwargs, caller_fn_scope=None, options=None):
        converted[getattr(f, "__qualname__", type(f).__name__)] += 1
        return original(f, args, kwargs, caller_fn_scope, options)

    model = _model()
    strategy = tf.distribute.get_strategy()
    step = step_of(model)

    @tf.function
    def train(batch):
        return strategy.run(step, args=(batch,))

    with monkeypatch.context() as patch:
        patch.setattr(autograph_api, "converted_call", counting)
        for batch in _batches():
            train(batch)
    # A copy: AutoGraph caches the converted `train` with this `counting` in it, which a later run calls again.
    return [np.asarray(v) for v in model.weights], collections.Counter(converted), len(model.trainable_variables)


def test_the_replica_step_converts_nothing_and_trains_as_the_autograph_step(monkeypatch):
    plain, plain_converted, num_variables = _train(lambda m: train_loop.replica_step(m.train_step), monkeypatch)
    autograph, autograph_converted, _ = _train(lambda m: m.train_step, monkeypatch)
    # AutoGraph: the optimizer's per-variable update among others, at least once a variable.
    updates = "CoupledSGD._distributed_tf_update_step.<locals>.apply_to_component"
    assert autograph_converted[updates] == num_variables > 20
    # Plain: at most `train` itself and `strategy.run` (the outer tf.function's AutoGraph; whether
    # `run` is counted depends on what AutoGraph cached before), not the step's ~90.
    assert plain_converted[updates] == 0
    assert set(plain_converted) <= {"_train.<locals>.train", "StrategyBase.run"}, plain_converted
    assert len(plain) == len(autograph)
    for a, b in zip(autograph, plain):  # the same graph: the same weights, bit for bit
        np.testing.assert_array_equal(b, a)
