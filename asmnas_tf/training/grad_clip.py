"""Global gradient-norm clipping that is exact under `tf.distribute` (SPEC §4).

DARTS clips with `clip_grad_norm_(params, 5)` on the gradient of the whole
batch. Keras's `global_clipnorm` clips each replica's share before the
optimizer all-reduces them, which is a different operation. Here the norm is
taken of the all-reduced gradient, and each replica's share is scaled by the
common factor, so the optimizer's own all-reduce sums to the clipped gradient.
"""

import tensorflow as tf
from keras import ops


def unscale_loss(loss):
    """The replica's own mean loss, from a Keras loss's output.

    Keras losses divide their result by the number of replicas under
    `tf.distribute` (so that the SUM all-reduce of the replicas' gradients is
    the gradient of the global batch mean): differentiate that value, but
    multiply it back before tracking it as a metric.
    """
    return loss * tf.distribute.get_strategy().num_replicas_in_sync


def all_reduce_sum(tensors):
    """The sum over the replicas, in replica context (as is on one replica)."""
    if tf.distribute.get_strategy().num_replicas_in_sync == 1:
        return tensors
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tensors)


def clip_by_global_norm(gradients, clipnorm, loss_scale=None):
    """Returns (this replica's gradients, clipped; squared norm of the global gradient).

    torch.nn.utils.clip_grad_norm_: scale by clipnorm / (norm + 1e-6) when
    that is below 1. The squared norm is the quantity of the paper's
    convergence bound (eq. 4.22).

    `loss_scale`: the gradients are of the loss times this (mixed float16,
    `precision.py`): the clip and the returned norm are the unscaled
    gradient's, and the clipped gradients keep the scale, which the
    `LossScaleOptimizer` divides out. A non-finite norm makes every
    replica's gradients NaN, so that the wrapper skips the step on all of
    them (it checks only the first replica's share).
    """
    global_gradients = all_reduce_sum(gradients)
    # One L2Loss (sum(g^2) / 2) per tensor and one AddN: fewer ops to trace.
    norm_sq = 2.0 * tf.add_n([tf.nn.l2_loss(g) for g in global_gradients])
    if loss_scale is not None:
        norm_sq = norm_sq / ops.square(ops.cast(loss_scale, norm_sq.dtype))
    scale = ops.minimum(1.0, clipnorm / (ops.sqrt(norm_sq) + 1e-6))
    if loss_scale is not None:
        scale = ops.where(ops.isfinite(norm_sq), scale, float("nan"))
    return [g * ops.cast(scale, g.dtype) for g in gradients], norm_sq
