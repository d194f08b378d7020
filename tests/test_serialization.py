"""get_config/from_config round trips of every custom layer, model and optimizer.

Each round trip must give back the same config and, with the weights copied,
the same outputs: a config that forgets an argument (stride, mixing,
sharing, clipnorm...) builds another layer, and these comparisons catch it.
The op layers (ops.py) have their own round trips in test_ops.py; the
evaluation model its .keras round trip in test_eval_net.py.
"""

import copy

import keras
import numpy as np
import pytest

from asmnas_tf.evaluation.model import EvalModel
from asmnas_tf.layers.alphas import ArchitectureParameters
from asmnas_tf.layers.attention import ArchitectureAttention
from asmnas_tf.layers.aux_head import AuxiliaryHead
from asmnas_tf.layers.drop_path import DropPath
from asmnas_tf.layers.mixed_edge import MixedEdge
from asmnas_tf.training.optim import CoupledSGD
from asmnas_tf.supernet.builder import build_supernet
from asmnas_tf.supernet.darts import CoupledAdam, DartsModel
from asmnas_tf.supernet.model import SupernetModel

RNG = np.random.default_rng(0)


def _round_trip_layer(layer, *inputs, **call_kwargs):
    """The clone's config and outputs equal the original's."""
    expected = layer(*inputs, **call_kwargs)
    clone = type(layer).from_config(layer.get_config())
    clone(*inputs, **call_kwargs)  # builds it
    clone.set_weights(layer.get_weights())
    assert clone.get_config() == layer.get_config()
    for got, want in zip(keras.tree.flatten(clone(*inputs, **call_kwargs)), keras.tree.flatten(expected)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    return clone


def test_architecture_parameters_round_trip():
    for sharing in ("darts", "per_cell"):
        layer = ArchitectureParameters(5, sharing=sharing)
        clone = _round_trip_layer(layer, np.zeros((1,), np.float32))
        assert clone.sharing == sharing and clone.num_cells == 5


def test_attention_round_trip():
    outputs = [RNG.normal(size=(2, 4, 4, 3)).astype(np.float32) for _ in range(8)]
    layer = ArchitectureAttention(8, hidden_units=5)
    _round_trip_layer(layer, outputs)


@pytest.mark.parametrize("stride,mixing", [(1, "attention"), (2, "attention"), (1, "uniform")])
def test_mixed_edge_round_trip(stride, mixing):
    x = RNG.normal(size=(2, 8, 8, 4)).astype(np.float32)
    clone = _round_trip_layer(MixedEdge(4, stride, 6, mixing=mixing), x, training=False)
    assert (clone.stride, clone.mixing) == (stride, mixing)


def test_mixed_edge_with_alpha_round_trip():
    x = RNG.normal(size=(2, 8, 8, 4)).astype(np.float32)
    alpha = RNG.normal(size=(8,)).astype(np.float32)
    _round_trip_layer(MixedEdge(4, 1, mixing="alpha"), x, alpha=alpha, training=False)


def test_auxiliary_head_and_drop_path_round_trip():
    x = RNG.normal(size=(2, 8, 8, 6)).astype(np.float32)
    _round_trip_layer(AuxiliaryHead(7), x, training=False)
    # Drop-path draws its masks from its seed: the clone, at the same rate,
    # drops the same samples on its first call.
    layer = DropPath(seed=3)
    clone = DropPath.from_config(layer.get_config())
    outputs = []
    for each in (layer, clone):
        each.build(x.shape)
        each.rate.assign(0.5)
        outputs.append(np.asarray(each(x, training=True)))
    assert clone.get_config() == layer.get_config() and clone.seed == 3
    np.testing.assert_array_equal(outputs[0], outputs[1])
    for sample, out in zip(x, outputs[0]):  # each sample dropped, or kept and scaled by 1 / keep
        assert np.all(out == 0) or np.allclose(out, sample / 0.5)


@pytest.mark.parametrize("cls,kwargs", [(CoupledSGD, {"learning_rate": 0.1, "momentum": 0.5, "l2": 1e-3}),
                                        (CoupledAdam, {"learning_rate": 1e-3, "beta_1": 0.4, "l2": 2e-3})])
def test_optimizer_round_trip(cls, kwargs):
    optimizer = cls(**kwargs)
    clone = cls.from_config(optimizer.get_config())
    assert clone.get_config() == optimizer.get_config()
    for name, value in kwargs.items():
        assert float(np.asarray(getattr(clone, name))) == pytest.approx(value)


@pytest.mark.parametrize("mixing,cls", [("attention", SupernetModel), ("alpha", DartsModel)])
def test_supernet_models_round_trip(mixing, cls):
    model = build_supernet((8, 8, 1), 3, num_cells=2, channels=4, attention_hidden_units=4, mixing=mixing,
                           clipnorm=3.0)
    assert type(model) is cls
    x = RNG.normal(size=(2, 8, 8, 1)).astype(np.float32)
    config = keras.saving.serialize_keras_object(model)
    clone = keras.saving.deserialize_keras_object(copy.deepcopy(config))  # it consumes its argument
    assert type(clone) is cls and clone.clipnorm == 3.0
    clone.set_weights(model.get_weights())
    assert keras.saving.serialize_keras_object(clone)["config"] == config["config"]
    for got, want in zip(keras.tree.flatten(clone(x, training=False)), keras.tree.flatten(model(x, training=False))):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)


def test_eval_model_class_is_registered():
    # The .keras round trip itself is in test_eval_net.py; here: the name it is saved under.
    assert keras.saving.get_registered_name(EvalModel) == "asmnas_tf>EvalModel"
    assert keras.saving.get_registered_object("asmnas_tf>EvalModel") is EvalModel
