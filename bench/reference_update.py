"""The weight update as it was before the fused one (issue 5), for A/B runs.

`use()` puts back, for this process, `CoupledSGD`'s per-variable chain of
Keras ops and the per-tensor square + sum of the global-norm clip.
"""

from keras import ops


def _update_step(self, gradient, variable, learning_rate):
    learning_rate = ops.cast(learning_rate, variable.dtype)
    gradient = ops.cast(gradient, variable.dtype)
    if self.l2:
        gradient = gradient + ops.cast(self.l2, variable.dtype) * variable
    buffer = self.momentums[self._get_variable_index(variable)]
    self.assign(buffer, ops.cast(self.momentum, variable.dtype) * buffer + gradient)
    self.assign_sub(variable, learning_rate * buffer)


def _clip_by_global_norm(gradients, clipnorm):
    from asmnas_tf.training.grad_clip import all_reduce_sum

    global_gradients = all_reduce_sum(gradients)
    norm_sq = ops.sum(ops.stack([ops.sum(ops.square(g)) for g in global_gradients]))
    scale = ops.minimum(1.0, clipnorm / (ops.sqrt(norm_sq) + 1e-6))
    return [g * ops.cast(scale, g.dtype) for g in gradients], norm_sq


def use():
    from asmnas_tf.evaluation import model as eval_model
    from asmnas_tf.training import grad_clip
    from asmnas_tf.training import optim
    from asmnas_tf.supernet import model as search_model

    optim.CoupledSGD.update_step = _update_step
    for module in (grad_clip, search_model, eval_model):
        module.clip_by_global_norm = _clip_by_global_norm
