"""The auxiliary classifier of the evaluation network (DARTS, SPEC §6).

Attached to the output of the second reduction cell, its loss is added to
the main loss with weight 0.4 during training; it is not used at inference
and not part of the served model.

DARTS `AuxiliaryHeadCIFAR` (8x8 input): ReLU, 5x5 average pool stride 3
(2x2 out), 1x1 conv to 128, BN, ReLU, 2x2 conv to 768, BN, ReLU, linear.
`AuxiliaryHeadImageNet` (7x7 input): the same with stride 2 and without the
second BN (DARTS left it out "for consistency with the experiments in the
paper"). Other image sizes give other feature maps; the pool is then chosen
so that it still yields 2x2: size min(5, H - 1), stride H - size, which is
exactly DARTS's (5, 3) at 8 and (5, 2) at 7 (and e.g. (5, 2) for
Fashion-MNIST's 28x28 images).
"""

import keras
from keras import ops

from asmnas_tf.layers import op_math
from asmnas_tf.layers.batch_norm import batch_norm
from asmnas_tf.errors import UserError
from asmnas_tf.names import STEMS

KINDS = STEMS


def aux_pool_geometry(size):
    """(pool size, stride) giving a 2-pixel output from `size` pixels."""
    if size < 2:
        raise UserError(f"Expected an auxiliary-head input of at least 2x2 pixels. Received: size={size}")
    pool = min(5, size - 1)
    return pool, size - pool


@keras.saving.register_keras_serializable(package="asmnas_tf")
class AuxiliaryHead(keras.layers.Layer):
    """DARTS's auxiliary head (`kind` 'cifar' or 'imagenet'); returns logits."""

    def __init__(self, num_classes, kind="cifar", **kwargs):
        super().__init__(**kwargs)
        if kind not in KINDS:
            raise UserError(f"Expected kind in {KINDS}. Received: kind={kind!r}")
        self.num_classes = num_classes
        self.kind = kind
        self.conv1 = None
        self.bn1 = batch_norm("bn1")
        self.bn2 = batch_norm("bn2") if kind == "cifar" else None
        self.conv2 = keras.layers.Conv2D(
            768, 2, use_bias=False, kernel_initializer=op_math.torch_uniform(128 * 4), name="conv2"
        )
        self.classifier = keras.layers.Dense(
            num_classes,
            kernel_initializer=op_math.torch_uniform(768),
            bias_initializer=op_math.torch_uniform(768),
            dtype="float32",
            name="classifier",
        )

    def build(self, input_shape):
        _, height, width, channels = input_shape
        self.pool_h = aux_pool_geometry(height)
        self.pool_w = aux_pool_geometry(width)
        self.conv1 = keras.layers.Conv2D(
            128, 1, use_bias=False, kernel_initializer=op_math.torch_uniform(channels), name="conv1"
        )
        self.conv1.build((None, 2, 2, channels))
        self.bn1.build((None, 2, 2, 128))
        self.conv2.build((None, 2, 2, 128))
        if self.bn2 is not None:
            self.bn2.build((None, 1, 1, 768))
        self.classifier.build((None, 768))

    def call(self, x, training=None):
        (pool_h, stride_h), (pool_w, stride_w) = self.pool_h, self.pool_w
        # No padding, so DARTS's count_include_pad=False changes nothing.
        x = ops.average_pool(ops.relu(x), (pool_h, pool_w), (stride_h, stride_w), padding="valid")
        x = ops.relu(self.bn1(self.conv1(x), training=training))
        x = self.conv2(x)
        if self.bn2 is not None:
            x = self.bn2(x, training=training)
        x = ops.relu(x)
        return self.classifier(ops.reshape(x, (-1, 768)))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "kind": self.kind}
