"""The architecture self-attention module (paper §4.2, eq. 4.2-4.5; SPEC §3).

For the |O| outputs y_k of one edge:

    e_k = mean over H, W, C of y_k                   (eq. 4.3)
    z   = sigmoid(T4 relu(T3 relu(T2 relu(T1 E))))   (eq. 4.4, dense with bias)
    a   = softmax(z) over k                          (eq. 4.5)
    out = sum_k a_k y_k                              (eq. 4.2)

The coefficients a are per sample. The maths lives in plain functions so the
fused supernet edge (`mixed_edge.py`) and the standalone layer below share it.
"""

import keras
import tensorflow as tf
from keras import ops

from asmnas_tf.layers import op_math
from asmnas_tf.errors import UserError

_register = keras.saving.register_keras_serializable(package="asmnas_tf")


def attention_param_shapes(num_ops, hidden_units):
    """Names and shapes of T1..T4 (kernels and biases), with their fan-in."""
    widths = [num_ops, hidden_units, hidden_units, hidden_units, num_ops]
    shapes = []
    for layer in range(4):
        fan_in, fan_out = widths[layer], widths[layer + 1]
        shapes.append((f"t{layer + 1}_kernel", (fan_in, fan_out), fan_in))
        shapes.append((f"t{layer + 1}_bias", (fan_out,), fan_in))
    return shapes


def embed(outputs):
    """Eq. 4.3: one scalar per sample and op. `None` stands for the zero op.

    Returns E of shape [B, |O|]. The zero op's embedding is exactly 0, so it
    is not computed from a tensor of zeros.
    """
    reference = next(y for y in outputs if y is not None)
    zeros = ops.zeros_like(reference[:, 0, 0, 0])
    means = [zeros if y is None else ops.mean(y, axis=[1, 2, 3]) for y in outputs]
    return ops.stack(means, axis=1)


def coefficients(embedding, params, activations=None):
    """Eq. 4.4 and 4.5: attention coefficients a, shape [B, |O|], rows sum to 1.

    The softmax runs in float32 whatever the compute dtype, so that mixed
    precision cannot make the coefficients lose their normalisation.
    `activations`, a list, receives T1..T4's outputs (after ReLU / sigmoid)
    for `coefficients_gradient`.
    """
    h = embedding
    for layer in range(1, 5):
        # Raw TensorFlow: BiasAdd's gradient is one op, a broadcast add's ~6
        # (210 modules in the paper's supernet).
        h = tf.nn.bias_add(tf.matmul(h, params[f"t{layer}_kernel"]), params[f"t{layer}_bias"])
        h = tf.nn.relu(h) if layer < 4 else tf.sigmoid(h)
        if activations is not None:
            activations.append(h)
    return tf.nn.softmax(tf.cast(h, "float32"), axis=-1)


def coefficients_gradient(grad_coeffs, coeffs, embedding, params, activations):
    """The backward of `coefficients` by hand: (dL/dE, {name: dL/dT}).

    `coeffs` and `activations` are the forward's; the ops are autodiff's
    (softmax, SigmoidGrad, ReluGrad, the dense layers' two MatMuls and a
    sum), so a caller with its own custom gradient (`mixed_edge.py`) gets
    the same numbers without a nested tape.
    """
    grad = grad_coeffs * coeffs
    grad = grad - coeffs * tf.reduce_sum(grad, axis=-1, keepdims=True)  # softmax, eq. 4.5
    grad = tf.raw_ops.SigmoidGrad(y=activations[3], dy=tf.cast(grad, activations[3].dtype))
    grads = {}
    for layer in range(4, 0, -1):
        if layer < 4:
            grad = tf.raw_ops.ReluGrad(gradients=grad, features=activations[layer - 1])
        inputs = activations[layer - 2] if layer > 1 else embedding
        grads[f"t{layer}_kernel"] = tf.matmul(inputs, grad, transpose_a=True)
        grads[f"t{layer}_bias"] = tf.reduce_sum(grad, axis=0)
        grad = tf.matmul(grad, params[f"t{layer}_kernel"], transpose_b=True)
    return grad, grads


def weighted_sum(outputs, coeffs):
    """Eq. 4.2: sum_k a_k y_k, per sample; `None` outputs (zero op) add nothing."""
    total = None
    for k, y in enumerate(outputs):
        if y is None:
            continue
        a_k = ops.cast(coeffs[:, k], y.dtype)[:, None, None, None]
        total = a_k * y if total is None else total + a_k * y
    return total


@_register
class ArchitectureAttention(keras.layers.Layer):
    """Eq. 4.2-4.5 as a layer: takes the list of op outputs of one edge.

    Returns `(mixed, coefficients)`; the coefficients are an output so that
    selection reads them from the same model that was trained.
    """

    def __init__(self, num_ops, hidden_units=16, **kwargs):
        super().__init__(**kwargs)
        if hidden_units < 1:
            raise UserError(f"Expected hidden_units >= 1. Received: hidden_units={hidden_units}")
        self.num_ops = num_ops
        self.hidden_units = hidden_units

    def build(self, input_shape):
        self.params = {
            name: self.add_weight(shape=shape, initializer=op_math.torch_uniform(fan_in), name=name)
            for name, shape, fan_in in attention_param_shapes(self.num_ops, self.hidden_units)
        }

    def call(self, outputs):
        if len(outputs) != self.num_ops:
            raise UserError(f"Expected {self.num_ops} op outputs. Received: {len(outputs)}")
        coeffs = coefficients(embed(outputs), self.params)
        return weighted_sum(outputs, coeffs), coeffs

    def get_config(self):
        return {**super().get_config(), "num_ops": self.num_ops, "hidden_units": self.hidden_units}
