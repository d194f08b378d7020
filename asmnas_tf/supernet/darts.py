"""DARTS's bi-level step (paper eq. 3.4; Liu et al. 2019, §2.3 and Algorithm 1).

    min_alpha L_val(w*(alpha), alpha)  s.t.  w*(alpha) = argmin_w L_train(w, alpha)

Each training step of a `DartsModel` takes a batch of each half of the
training set and does, as DARTS's `architect.py` + `train_search.py`:

1. the architecture step on the validation batch: alpha <- Adam(grad_alpha),
   - first order: grad_alpha L_val(w, alpha);
   - second order: w' = w - xi (mu buf + grad_w L_train(w, alpha) + wd w),
     the virtual SGD step with the weight optimizer's momentum buffer and
     learning rate xi, then
         grad_alpha L_val(w', alpha) - xi (H v),
         H v ~ (grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)) / (2 eps),
     w+- = w +- eps v, v = grad_w' L_val(w', alpha), eps = 0.01 / ||v||;
2. the weight step on the training batch, exactly `SupernetModel`'s
   (global-norm clip, coupled-L2 SGD), with the new alpha.

The virtual and perturbed weights are never written to the variables: every
loss of step 1 is a `stateless_call` of the model on substituted values, so
the weights (and the BatchNorm statistics, which those passes would update)
are untouched by construction; nothing has to be restored. All passes run
in training mode (batch statistics), as DARTS's. Under `tf.distribute` the
virtual step and eps use the all-reduced gradient, so every replica
evaluates the same w' and w+-, and each replica's share of grad_alpha is
summed by the optimizer, as the weight gradients are.
"""

import gin
import keras
import tensorflow as tf
from keras import ops

from asmnas_tf.training.grad_clip import all_reduce_sum, unscale_loss
from asmnas_tf.training.optim import CoupledSGD
from asmnas_tf.training.precision import inner_optimizer, loss_scale, loss_scaling
from asmnas_tf.training.train_loop import replica_step
from asmnas_tf.supernet.model import LOGITS, SupernetModel
from asmnas_tf.errors import UserError

# Name of the supernet layer that holds the alphas (`alphas.py`).
ARCHITECTURE = "architecture"
# DARTS's finite-difference radius: eps = HVP_RADIUS / ||grad_w' L_val||.
HVP_RADIUS = 0.01

_register = keras.saving.register_keras_serializable(package="asmnas_tf")


@_register
class CoupledAdam(keras.optimizers.Optimizer):
    """torch.optim.Adam (DARTS's alpha optimizer): coupled L2, PyTorch's epsilon.

    g += l2 * w (before the moments, unlike Keras's decoupled `weight_decay`);
    m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + epsilon).
    """

    def __init__(self, learning_rate=3e-4, beta_1=0.5, beta_2=0.999, epsilon=1e-8, l2=1e-3,
                 name="coupled_adam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        for arg, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= value < 1.0:
                raise UserError(f"Expected 0 <= {arg} < 1. Received: {arg}={value}")
        if l2 < 0 or epsilon <= 0:
            raise UserError(f"Expected l2 >= 0 and epsilon > 0. Received: l2={l2}, epsilon={epsilon}")
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.l2 = l2

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.first_moments = [self.add_variable_from_reference(v, name="m") for v in variables]
        self.second_moments = [self.add_variable_from_reference(v, name="v") for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        learning_rate = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        if self.l2:
            gradient = gradient + ops.cast(self.l2, dtype) * variable
        index = self._get_variable_index(variable)
        m, v = self.first_moments[index], self.second_moments[index]
        beta_1, beta_2 = ops.cast(self.beta_1, dtype), ops.cast(self.beta_2, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        self.assign(m, beta_1 * m + (1.0 - beta_1) * gradient)
        self.assign(v, beta_2 * v + (1.0 - beta_2) * ops.square(gradient))
        correction_1 = 1.0 - ops.power(beta_1, step)
        correction_2 = 1.0 - ops.power(beta_2, step)
        denominator = ops.sqrt(v) / ops.sqrt(correction_2) + ops.cast(self.epsilon, dtype)
        self.assign_sub(variable, learning_rate / correction_1 * m / denominator)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "l2": self.l2}


@gin.configurable
def architecture_optimizer(learning_rate=3e-4, beta_1=0.5, beta_2=0.999, weight_decay=1e-3):
    """DARTS's alpha optimizer: Adam 3e-4, betas (0.5, 0.999), coupled L2 1e-3."""
    return CoupledAdam(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, l2=weight_decay)


def _unscaled(tensors, scale):
    """`tensors` divided by the loss scale (as they are without one)."""
    if scale is None:
        return tensors
    return [t / ops.cast(scale, t.dtype) for t in tensors]


def _global_norm(tensors):
    return ops.sqrt(ops.sum(ops.stack([ops.sum(ops.square(t)) for t in tensors])))


@_register
class DartsModel(SupernetModel):
    """The supernet trained by DARTS's bi-level step (eq. 3.4).

    `fit` takes a dataset of `((x_train, y_train), (x_val, y_val))`: a batch
    of the weight half and one of the architecture half per step. Compile
    with `compile_darts`. Metrics: `loss`, `accuracy`, `grad_norm_sq` of the
    weight step (as `SupernetModel`), and `arch_loss`, L_val of the
    architecture step (at w, or at w' for the second order; not named
    `val_loss`, which is Keras's for `validation_data`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.architecture_optimizer = None
        self.second_order = False
        self.hvp_radius = HVP_RADIUS
        self.arch_loss_tracker = keras.metrics.Mean(name="arch_loss")

    def compile(self, optimizer, architecture_optimizer, second_order=False, hvp_radius=HVP_RADIUS, **kwargs):
        if not isinstance(optimizer, CoupledSGD):
            # The virtual step of the second order reads its momentum and L2.
            raise UserError(f"Expected a CoupledSGD weight optimizer. Received: {type(optimizer).__name__}")
        # Under mixed float16 both optimizers scale their losses (`precision.py`).
        super().compile(optimizer=loss_scaling(optimizer), **kwargs)
        self.architecture_optimizer = loss_scaling(architecture_optimizer)
        self.second_order = bool(second_order)
        self.hvp_radius = float(hvp_radius)

    @property
    def metrics(self):
        return super().metrics + [self.arch_loss_tracker]

    @property
    def architecture_variables(self):
        """The alphas: `alpha_normal`, `alpha_reduce` or `alpha` (see `alphas.py`)."""
        return self.get_layer(ARCHITECTURE).trainable_variables

    @property
    def weight_variables(self):
        alphas = {id(v) for v in self.architecture_variables}
        return [v for v in self.trainable_variables if id(v) not in alphas]

    # --- losses at substituted values (no side effects) -------------------

    def _loss(self, weights, alphas, x, y):
        """Cross-entropy at weights `weights` and alphas `alphas` (tensors).

        Training mode; the BatchNorm updates are discarded with the scope.
        Divided by the number of replicas, as every Keras loss here.
        """
        weights, alphas = iter(weights), iter(alphas)
        is_alpha = {id(v) for v in self.architecture_variables}
        values = [next(alphas) if id(v) in is_alpha else next(weights) for v in self.trainable_variables]
        outputs, _ = self.stateless_call(values, list(self.non_trainable_variables), x, training=True)
        return self.cross_entropy(y, outputs[LOGITS])

    def _gradients(self, weights, alphas, x, y, wrt, scale=None):
        """(loss, d (loss scale) / d wrt) at (weights, alphas); `wrt` is one of the two lists.

        `scale`: the architecture optimizer's loss scale (mixed float16), or None.
        """
        with tf.GradientTape() as tape:
            tape.watch(wrt)
            loss = self._loss(weights, alphas, x, y)
            tape_loss = loss if scale is None else loss * ops.cast(scale, loss.dtype)
        gradients = tape.gradient(tape_loss, wrt)
        # An alpha no cell reads (alpha_normal when every cell reduces) has none.
        return loss, [ops.zeros_like(t) if g is None else g for t, g in zip(wrt, gradients)]

    def _current_values(self):
        # Plain tensors (a read of each variable), which the tapes watch.
        weights = [tf.convert_to_tensor(v) for v in self.weight_variables]
        alphas = [tf.convert_to_tensor(v) for v in self.architecture_variables]
        return weights, alphas

    def unrolled_weights(self, weights, alphas, x, y, xi, scale=None):
        """w' = w - xi (mu buf + grad_w L_train(w, alpha) + wd w): one virtual SGD step.

        The gradient is unclipped and of the global batch, as DARTS's
        `_compute_unrolled_model` (taken at loss scale `scale` and divided
        back: an overflow makes w' and so the step's gradient non-finite).
        """
        _, gradients = self._gradients(weights, alphas, x, y, wrt=weights, scale=scale)
        gradients = _unscaled(all_reduce_sum(gradients), scale)
        sgd = inner_optimizer(self.optimizer)  # its momentum slots
        unrolled = []
        for variable, w, g in zip(self.weight_variables, weights, gradients):
            buffer = ops.cast(sgd.momentums[sgd._get_variable_index(variable)], w.dtype)
            step = ops.cast(sgd.momentum, w.dtype) * buffer + g + ops.cast(sgd.l2, w.dtype) * w
            unrolled.append(w - ops.cast(xi, w.dtype) * step)
        return unrolled

    def hessian_vector_product(self, weights, alphas, vector, x, y, scale=None):
        """(d^2 L_train / d alpha d w) . vector, by central finite differences (DARTS).

        Times the loss scale `scale` when given (`vector` is unscaled).
        """
        eps = self.hvp_radius / _global_norm(vector)
        plus = [w + ops.cast(eps, w.dtype) * v for w, v in zip(weights, vector)]
        minus = [w - ops.cast(eps, w.dtype) * v for w, v in zip(weights, vector)]
        _, grad_plus = self._gradients(plus, alphas, x, y, wrt=alphas, scale=scale)
        _, grad_minus = self._gradients(minus, alphas, x, y, wrt=alphas, scale=scale)
        return [(p - m) / ops.cast(2.0 * eps, p.dtype) for p, m in zip(grad_plus, grad_minus)]

    def architecture_gradients(self, x_train, y_train, x_val, y_val):
        """(this replica's share of grad_alpha of the outer problem, L_val share).

        First order: grad_alpha L_val(w, alpha). Second order: the unrolled
        gradient with the finite-difference Hessian-vector product (module doc).
        Under mixed float16 the gradient is times the architecture
        optimizer's loss scale, which its `LossScaleOptimizer` divides out.
        """
        weights, alphas = self._current_values()
        scale = loss_scale(self.architecture_optimizer)
        if not self.second_order:
            return self._gradients(weights, alphas, x_val, y_val, wrt=alphas, scale=scale)[::-1]
        xi = self.optimizer.learning_rate  # the rate of this step's weight update
        unrolled = self.unrolled_weights(weights, alphas, x_train, y_train, xi, scale)
        with tf.GradientTape() as tape:
            tape.watch(unrolled + alphas)
            val_loss = self._loss(unrolled, alphas, x_val, y_val)
            tape_loss = val_loss if scale is None else val_loss * ops.cast(scale, val_loss.dtype)
        gradients = tape.gradient(tape_loss, alphas + unrolled)
        gradients = [ops.zeros_like(t) if g is None else g for t, g in zip(alphas + unrolled, gradients)]
        grad_alphas, grad_unrolled = gradients[: len(alphas)], gradients[len(alphas):]
        # The global gradient, unscaled: same w+- everywhere.
        vector = _unscaled(all_reduce_sum(grad_unrolled), scale)
        hvp = self.hessian_vector_product(weights, alphas, vector, x_train, y_train, scale)
        return [g - ops.cast(xi, g.dtype) * h for g, h in zip(grad_alphas, hvp)], val_loss

    # --- the two halves of a step ------------------------------------------

    def architecture_step(self, x_train, y_train, x_val, y_val):
        """Step 1: update alpha (Adam, unclipped, as DARTS); returns the L_val share."""
        gradients, val_loss = self.architecture_gradients(x_train, y_train, x_val, y_val)
        self.architecture_optimizer.apply_gradients(zip(gradients, self.architecture_variables))
        self.arch_loss_tracker.update_state(unscale_loss(val_loss), sample_weight=ops.shape(y_val)[0])
        return val_loss

    def weight_step(self, x, y):
        """Step 2: `SupernetModel`'s step on the weights, alpha fixed."""
        return super().train_step((x, y))

    def train_step(self, data):
        (x_train, y_train), (x_val, y_val) = data
        self.architecture_step(x_train, y_train, x_val, y_val)
        logs = self.weight_step(x_train, y_train)
        return {**logs, "arch_loss": self.arch_loss_tracker.result()}


def compile_darts(model, weight_optimizer, alpha_optimizer, second_order, hvp_radius=HVP_RADIUS):
    """Attach both optimizers and build their slots before `fit` (one trace).

    `hvp_radius`: eps * ||v|| of the finite difference (DARTS: 0.01).
    """
    model.compile(optimizer=weight_optimizer, architecture_optimizer=alpha_optimizer,
                  second_order=second_order, hvp_radius=hvp_radius)
    model.optimizer.build(model.weight_variables)  # the loss-scaling wrappers, if any, with them
    model.architecture_optimizer.build(model.architecture_variables)
    return model


def step_functions(model, strategy=None, jit_compile=False):
    """The two halves of a DARTS step as separate `tf.function`s, for timing.

    `architecture(batch)` and `weight(batch)` take a `((x, y), (x_val,
    y_val))` batch (distributed by `strategy` if given) and run one step;
    `jit_compile`: each half XLA-compiled (`train_loop.replica_step`).
    """
    strategy = strategy or tf.distribute.get_strategy()
    architecture_step = replica_step(model.architecture_step, jit_compile)
    weight_step = replica_step(model.weight_step, jit_compile)

    @tf.function
    def architecture(batch):
        (x, y), (x_val, y_val) = batch
        return strategy.run(architecture_step, args=(x, y, x_val, y_val))

    @tf.function
    def weight(batch):
        (x, y), _ = batch
        return strategy.run(weight_step, args=(x, y))

    return {"architecture": architecture, "weight": weight}
