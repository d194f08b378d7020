"""BatchNorm through TensorFlow's fused kernel: Keras's layer, Keras's maths.

Keras 3's `BatchNormalization` on TensorFlow is unfused: `tf.nn.moments`
(a mean, a squared difference, another mean) and `tf.nn.batch_normalization`
(rsqrt, multiplies, adds), each a pass over the tensor forward and again
backward. On a CPU the small networks of this project spend much of their
step in such memory-bound passes (`docs/bench-log.md`); `FusedBatchNormV3`
(oneDNN's kernel on x86) does the forward in one pass and the backward in
one more.

`FusedBatchNorm` is `keras.layers.BatchNormalization` with the same weights,
config and moving-average update (Keras's convention: biased batch variance,
moving = m * moving + (1 - m) * batch); only the float32 NHWC case without a
mask, renorm or synchronisation takes the fused kernel, everything else is
Keras's own code path.
"""

import keras
import tensorflow as tf
from keras import ops

from asmnas_tf.layers import op_math


@keras.saving.register_keras_serializable(package="asmnas_tf")
class FusedBatchNorm(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization`, float32 NHWC on TensorFlow's fused kernel."""

    def _fusable(self, inputs, mask):
        return (mask is None and not self.renorm and not self.synchronized and len(inputs.shape) == 4
                and self.axis in (-1, 3) and inputs.dtype == tf.float32)

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        gamma = ops.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
        beta = ops.cast(self.beta, "float32") if self.center else tf.zeros([channels])
        moving_mean = ops.cast(self.moving_mean, "float32")
        moving_variance = ops.cast(self.moving_variance, "float32")
        if training and self.trainable:
            ratio = biased_over_unbiased(inputs)
            if isinstance(ratio, float) and ratio > 0.0:
                return self._train_averaging_in_kernel(inputs, gamma, beta, moving_mean, moving_variance, ratio)
            empty = tf.zeros([0])  # no statistics in: the kernel computes the batch's
            outputs, mean, unbiased_variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta, mean=empty, variance=empty,
                epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
            # The kernel returns the Bessel-corrected variance (PyTorch's running
            # statistic); Keras averages the biased one: n / (n - 1) undone.
            variance = unbiased_variance * ratio
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(moving_variance * self.momentum + variance * (1.0 - self.momentum))
            return outputs
        outputs, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=gamma, offset=beta, mean=moving_mean, variance=moving_variance,
            epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=False)
        return outputs

    def _train_averaging_in_kernel(self, inputs, gamma, beta, moving_mean, moving_variance, ratio):
        """Training with a static batch: the moving averages from the kernel itself.

        With the moving statistics in and `exponential_avg_factor` f = 1 -
        momentum, FusedBatchNormV3 returns (1 - f) m + f mean and (1 - f) v +
        f s2, s2 the unbiased batch variance. Fed v / r and multiplied back by
        r = (n - 1) / n, the second is Keras's (1 - f) v + f r s2 (the biased
        variance): 4 graph ops where the average took 14, times ~240
        BatchNorms in the evaluation network (its trace, docs/bench-log.md).
        """
        outputs, new_mean, new_variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=gamma, offset=beta, mean=moving_mean, variance=moving_variance * (1.0 / ratio),
            epsilon=self.epsilon, exponential_avg_factor=1.0 - self.momentum, data_format="NHWC",
            is_training=True)
        self.moving_mean.assign(new_mean)
        self.moving_variance.assign(new_variance * ratio)
        return outputs


def biased_over_unbiased(inputs):
    """(n - 1) / n for the n = batch x height x width values of each channel.

    A Python number when the shape is static (training batches are: the
    pipeline drops the remainder), else the graph's arithmetic on the shape;
    the static form saves 9 of a training BatchNorm's ~38 graph ops.
    """
    count = inputs.shape[:3].num_elements()
    if count is not None:
        return (count - 1.0) / max(count, 1.0)
    count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), "float32")
    return (count - 1.0) / tf.maximum(count, 1.0)


def batch_norm(name, affine=True):
    """The project's BatchNorm: PyTorch's momentum 0.1 and epsilon 1e-5 (DARTS)."""
    return FusedBatchNorm(momentum=op_math.BN_MOMENTUM, epsilon=op_math.BN_EPSILON, center=affine, scale=affine,
                          name=name)
