"""Mixed precision for search and training: one gin binding, loss scaling in our own steps.

    precision_policy.policy = 'mixed_float16'    # or 'mixed_bfloat16', 'float32'

Keras's dtype policy: layers compute in float16 / bfloat16 and keep float32
variables. What stays float32 whatever the policy: the attention softmax
(eq. 4.5, `attention.coefficients`), DARTS's softmax(alpha) (eq. 3.1, the
alphas are float32 variables), the classifier and the loss.

float16 needs loss scaling (its gradients underflow); bfloat16 has float32's
exponent and does not. Keras's `compile` wraps the optimizer in its
`LossScaleOptimizer` under 'mixed_float16'; the train steps here compute
their own gradients (global-norm clip of SPEC §4, DARTS's bi-level step), so
they scale the loss with `optimizer.scale_loss`, clip by the norm of the
*unscaled* gradient (`grad_clip.clip_by_global_norm(loss_scale=...)`), and
the wrapper divides the scale out, skips a step whose gradient is not
finite and halves the scale (doubles it after 2,000 finite steps). The
weight average (`use_ema`) and the momentum slots live on the inner
optimizer (`inner_optimizer`).
"""

import gin
import keras

from asmnas_tf.errors import UserError

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


@gin.configurable
def precision_policy(policy=None):
    """The Keras dtype policy a run sets before it builds its model.

    None (the default) leaves Keras's global policy as it is, so that a
    Python user's `keras.mixed_precision.set_global_policy` holds.
    """
    if policy is not None and policy not in POLICIES:
        raise UserError(f"precision_policy.policy={policy!r} is not one of {', '.join(POLICIES)}")
    return policy


def apply_precision_policy():
    """Sets the gin-bound policy (if any); returns the global policy's name."""
    policy = precision_policy()
    if policy is not None:
        keras.mixed_precision.set_global_policy(policy)
    return keras.mixed_precision.global_policy().name


def loss_scaling(optimizer):
    """The optimizer wrapped in Keras's dynamic `LossScaleOptimizer` under 'mixed_float16', else as is."""
    if keras.mixed_precision.global_policy().name != "mixed_float16":
        return optimizer
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer
    return keras.optimizers.LossScaleOptimizer(optimizer)


def loss_scale(optimizer):
    """The current loss scale of `optimizer` (a float32 variable), or None without loss scaling."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.dynamic_scale if optimizer.built else optimizer.initial_scale
    return None


def inner_optimizer(optimizer):
    """The optimizer that holds the slots and the weight average (itself without loss scaling)."""
    return getattr(optimizer, "inner_optimizer", optimizer)
