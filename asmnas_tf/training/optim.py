"""The search optimizer with DARTS's PyTorch semantics (SPEC §4).

DARTS trains with `torch.optim.SGD(momentum, weight_decay)` after
`clip_grad_norm_(params, 5)`. That is *coupled* L2 (w * wd added to the
gradient before momentum) and PyTorch's momentum form (buf = mu buf + g;
w -= lr buf). Keras's SGD differs on both counts: its `weight_decay` is
decoupled and its momentum buffer absorbs the learning rate, which matters
under a cosine schedule. The global-norm clip is done by the model's
train step on the all-reduced gradient (see `search_model.py`).

The update of each variable is TensorFlow's fused `ResourceApplyMomentum`
kernel (TF1's MomentumOptimizer, whose momentum form is PyTorch's) instead of
a chain of Keras ops: fewer graph ops to trace and optimise before the first
step.
"""

import gin
import keras
import tensorflow as tf
from keras import ops
from asmnas_tf.errors import UserError


@keras.saving.register_keras_serializable(package="asmnas_tf")
class CoupledSGD(keras.optimizers.Optimizer):
    """SGD with PyTorch momentum (optionally Nesterov's) and coupled L2 weight decay.

    Further keyword arguments are Keras's (`use_ema`, `ema_momentum`: the
    evaluation recipe's weight average, `recipe.train_optimizer`).
    `ema_warmup`: the average's momentum at step t is min(ema_momentum,
    (1 + t) / (10 + t)), as TensorFlow's `ExponentialMovingAverage` with
    `num_updates`: Keras's fixed momentum keeps the random initialisation in
    the average for ~1 / (1 - momentum) steps, which a short training on a
    small dataset never outgrows (momentum 0.99 after 165 steps: 19% of the
    average is the first steps' weights).
    """

    def __init__(self, learning_rate=0.025, momentum=0.9, l2=3e-4, nesterov=False, name="coupled_sgd",
                 ema_warmup=False, **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.ema_warmup = bool(ema_warmup)
        if not 0.0 <= momentum < 1.0:
            raise UserError(f"Expected 0 <= momentum < 1. Received: momentum={momentum}")
        if l2 < 0:
            raise UserError(f"Expected l2 >= 0. Received: l2={l2}")
        self.momentum = momentum
        self.l2 = l2
        self.nesterov = bool(nesterov)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = [
            self.add_variable_from_reference(reference_variable=v, name="momentum") for v in variables
        ]

    def update_step(self, gradient, variable, learning_rate):
        # `variable` is a tf.Variable here (a replica's component under tf.distribute).
        self._apply_momentum(gradient, variable, learning_rate, *self._hyperparameters(variable.dtype))

    def _hyperparameters(self, dtype):
        return ops.cast(self.l2, dtype), ops.cast(self.momentum, dtype)

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        """Keras's loop over the variables, with one constant of l2 and momentum per dtype and device.

        Keras's `update_step` made two graph constants a variable (650 of the
        evaluation network's 10,700 step ops at 8 cells); the update is the same.
        """
        constants = {}

        def apply_to_component(variable, gradient, learning_rate):
            key = (variable.dtype, variable.device)
            if key not in constants:
                constants[key] = self._hyperparameters(variable.dtype)
            return self._apply_momentum(gradient, variable, learning_rate, *constants[key])

        for gradient, variable in grads_and_vars:
            distribution.extended.update(variable, apply_to_component, args=(gradient, learning_rate), group=False)

    def _apply_momentum(self, gradient, variable, learning_rate, l2, momentum):
        dtype = variable.dtype
        gradient = ops.cast(gradient, dtype)
        if self.l2:
            gradient = gradient + l2 * variable
        buffer = self.momentums[self._get_variable_index(variable)].value
        # buf = momentum * buf + g; w -= lr * buf: PyTorch's SGD, in one kernel.
        # Nesterov: w -= lr * (g + momentum * buf), PyTorch's nesterov=True too.
        return tf.raw_ops.ResourceApplyMomentum(
            var=variable.handle, accum=buffer.handle, lr=ops.cast(learning_rate, dtype), grad=gradient,
            momentum=momentum, use_locking=False, use_nesterov=self.nesterov)

    def _update_model_variables_moving_average(self, trainable_variables):
        if not (self.use_ema and self.ema_warmup):
            return super()._update_model_variables_moving_average(trainable_variables)
        step = ops.cast(self.iterations, "float32")
        # 0 at the first step (the average starts as the weights, as Keras's).
        momentum = ops.where(ops.equal(step, 0.0), 0.0, ops.minimum(self.ema_momentum, (1.0 + step) / (10.0 + step)))
        for variable, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is not None:
                m = ops.cast(momentum, variable.dtype)
                average.assign(m * average + (1.0 - m) * variable)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "l2": self.l2, "nesterov": self.nesterov,
                "ema_warmup": self.ema_warmup}


@gin.configurable
def cosine_learning_rate(initial, total_steps, final=0.0):
    """Cosine annealing from `initial` to `final` over `total_steps` (paper §5.1)."""
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=initial, decay_steps=max(int(total_steps), 1), alpha=final / initial
    )


@gin.configurable(denylist=["total_steps"])
def search_optimizer(total_steps, learning_rate=0.025, min_learning_rate=0.0, momentum=0.9, weight_decay=3e-4):
    """The paper's search optimizer: SGD 0.025 cosine to 0, momentum 0.9, wd 3e-4."""
    schedule = cosine_learning_rate(learning_rate, total_steps, min_learning_rate)
    return CoupledSGD(learning_rate=schedule, momentum=momentum, l2=weight_decay)
