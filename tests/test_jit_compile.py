"""XLA for the train step: `jit_compile_step.enabled`, off by default.

The compiled step trains to the same weights as the plain one (float32, to
1e-5) through `train_loop.fit`, DARTS's step functions compile too, and XLA
with two replicas is one line before any work.
"""

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from asmnas_tf.errors import UserError
from asmnas_tf.evaluation.builder import build_eval_net, resolve_genotype
from asmnas_tf.evaluation.model import compile_eval_model
from asmnas_tf.layers import mixed_edge
from asmnas_tf.training import train_loop
from asmnas_tf.host.distribute import make_strategy
from asmnas_tf.training.optim import CoupledSGD
from asmnas_tf.supernet import runner as search
from asmnas_tf.supernet.builder import build_supernet
from asmnas_tf.supernet.darts import architecture_optimizer, compile_darts, step_functions
from asmnas_tf.supernet.model import compile_supernet


def _data(n=16, batch=8):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 4, n).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _eval_net():
    model = build_eval_net(resolve_genotype("DARTS_V2", 2), (8, 8, 3), 4, channels=4, drop_path=False)
    return compile_eval_model(model, CoupledSGD(0.1))


def _supernet():  # one (reduction) cell: XLA's CPU compile time grows with the graph
    return compile_supernet(build_supernet((8, 8, 3), 4, num_cells=1, channels=4), CoupledSGD(0.1))


def _trained_weights(build, jit_compile, tmp_path):
    keras.utils.set_random_seed(0)
    model = build()
    strategy = tf.distribute.get_strategy()
    history = train_loop.fit(model, _data(), epochs=1, strategy=strategy, verbose=0, jit_compile=jit_compile,
                             checkpoint_dir=str(tmp_path / f"{build.__name__}{jit_compile}"))
    return [np.asarray(v) for v in model.weights], history.history["loss"][0]


@pytest.mark.parametrize("build", [_eval_net, _supernet], ids=["eval_net", "supernet"])
def test_the_compiled_step_trains_to_the_same_weights(build, tmp_path):
    plain, plain_loss = _trained_weights(build, False, tmp_path)
    compiled, compiled_loss = _trained_weights(build, True, tmp_path)
    assert len(plain) == len(compiled)
    for a, b in zip(plain, compiled):  # weights, BatchNorm statistics, optimizer step count
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    assert compiled_loss == pytest.approx(plain_loss, rel=1e-5)


def test_the_replica_step_is_compiled_only_when_asked():
    def step(x):
        return x * 2.0

    plain = train_loop.replica_step(step, False)  # the step itself, outside AutoGraph (test_plain_trace.py)
    assert not isinstance(plain, tf.types.experimental.PolymorphicFunction)
    np.testing.assert_array_equal(np.asarray(plain(tf.constant([1.5]))), [3.0])
    compiled = train_loop.replica_step(step, True)
    # The XLA program exists (HLO text), and computes the same.
    assert "HloModule" in compiled.experimental_get_compiler_ir(tf.constant([1.0]))(stage="hlo")
    np.testing.assert_array_equal(np.asarray(compiled(tf.constant([1.5]))), [3.0])


def test_edges_are_traced_inline_under_xla():
    """The shared edge functions, called from an XLA program, were compiled anew at every step."""
    seen = []

    def probe(x):
        seen.append(mixed_edge._in_xla_context())
        return x + 1.0

    tf.function(probe)(tf.constant(1.0))
    tf.function(probe, jit_compile=True)(tf.constant(1.0))
    assert seen == [False, True]


def test_darts_step_functions_compile(tmp_path):
    keras.utils.set_random_seed(0)
    # One (reduction) cell: XLA's CPU compile time grows with the graph.
    model = build_supernet((8, 8, 3), 4, num_cells=1, channels=4, mixing="alpha")
    compile_darts(model, CoupledSGD(0.1), architecture_optimizer(), second_order=False)
    x, y = next(iter(_data()))
    batch = ((x, y), (x[::-1], y[::-1]))
    start = [np.asarray(v) for v in model.architecture_variables]
    steps = step_functions(model, jit_compile=True)
    steps["architecture"](batch)
    steps["weight"](batch)
    assert int(model.architecture_optimizer.iterations) == 1 and int(model.optimizer.iterations) == 1
    assert any(np.abs(np.asarray(v) - s).max() > 0 for v, s in zip(model.architecture_variables, start))


def test_xla_with_two_replicas_or_a_bad_value_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"^jit_compile_step.enabled=True needs one replica; this strategy has 2$"):
        train_loop.check_jit_compile(make_strategy("mirrored"), True)
    run = tmp_path / "run"
    for value, message in ((True, "needs one replica"), ("yes", r"enabled='yes': expected True or False")):
        with gin.unlock_config():
            gin.bind_parameter("jit_compile_step.enabled", value)
        try:
            with pytest.raises(UserError, match=message):
                search.run_search(str(run), search.search_config(epochs=1))  # the tests' default strategy has two replicas
        finally:
            gin.clear_config()
        assert not run.exists()
