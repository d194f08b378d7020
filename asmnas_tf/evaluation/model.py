"""The evaluation network's training step: main + 0.4 x auxiliary loss (SPEC §6).

`EvalModel` is a functional model whose graph has the outputs
`{"logits", "aux_logits"}` (the second only when the network has an
auxiliary head). Called in training mode it returns both; at inference only
`{"logits"}` (DARTS's `NetworkCIFAR.forward` returns `logits_aux = None`
outside training), so `predict`, `evaluate` and the export never see the
auxiliary head, and TensorFlow prunes it from compiled inference graphs.

The train step follows DARTS `train.py`: loss = CE(logits) + w * CE(aux),
the global gradient norm of the all-reduced gradient clipped at 5
(`grad_clip.py`), coupled L2 in the optimizer (`optim.CoupledSGD`). The
ImageNet recipe adds label smoothing (DARTS `CrossEntropyLabelSmooth`).
"""

import keras
import tensorflow as tf
from keras import ops

from asmnas_tf.training.grad_clip import clip_by_global_norm
from asmnas_tf.training.precision import loss_scale, loss_scaling
from asmnas_tf.errors import UserError
from asmnas_tf.names import AUX_LOGITS, LOGITS  # noqa: F401  (importers use them from here too)



@keras.saving.register_keras_serializable(package="asmnas_tf")
class EvalModel(keras.Model):
    """Functional evaluation network with an auxiliary loss and global-norm clip."""

    def __init__(self, *args, auxiliary_weight=0.4, clipnorm=5.0, label_smoothing=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        if auxiliary_weight < 0 or clipnorm <= 0 or not 0.0 <= label_smoothing < 1.0:
            raise UserError(
                "Expected auxiliary_weight >= 0, clipnorm > 0 and 0 <= label_smoothing < 1. Received: "
                f"auxiliary_weight={auxiliary_weight}, clipnorm={clipnorm}, label_smoothing={label_smoothing}"
            )
        self.auxiliary_weight = auxiliary_weight
        self.clipnorm = clipnorm
        self.label_smoothing = label_smoothing
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.top5_tracker = keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy")

    @property
    def has_auxiliary(self):
        return AUX_LOGITS in self.output

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker, self.top5_tracker]

    def call(self, inputs, training=None, mask=None, **kwargs):
        outputs = super().call(inputs, training=training, mask=mask, **kwargs)
        if training:
            return outputs
        return {LOGITS: outputs[LOGITS]}

    def cross_entropy(self, y, logits, label_smoothing=0.0):
        """Mean CE over the batch, with targets smoothed as DARTS ImageNet does."""
        num_classes = ops.shape(logits)[-1]
        targets = ops.one_hot(ops.cast(y, "int32"), num_classes, dtype=logits.dtype)
        if label_smoothing:
            targets = targets * (1.0 - label_smoothing) + label_smoothing / ops.cast(num_classes, logits.dtype)
        log_probs = ops.log_softmax(logits, axis=-1)
        return -ops.mean(ops.sum(targets * log_probs, axis=-1))

    def _update_metrics(self, y, logits, loss):
        self.loss_tracker.update_state(loss, sample_weight=ops.shape(logits)[0])
        self.accuracy_tracker.update_state(y, logits)
        self.top5_tracker.update_state(y, logits)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            outputs = self(x, training=True)
            logits = outputs[LOGITS]
            loss = self.cross_entropy(y, logits, self.label_smoothing)
            if AUX_LOGITS in outputs and self.auxiliary_weight:
                aux_loss = self.cross_entropy(y, outputs[AUX_LOGITS], self.label_smoothing)
                loss = loss + self.auxiliary_weight * aux_loss
            # The loss is a plain mean (not a Keras loss, which would do this
            # itself): 1 / replicas makes the optimizer's SUM all-reduce of
            # the replicas' gradients the gradient of the global batch mean.
            scaled_loss = loss / tf.distribute.get_strategy().num_replicas_in_sync
            # Times the loss scale under mixed float16 (`precision.py`), else as is.
            tape_loss = self.optimizer.scale_loss(scaled_loss)
        variables = self.trainable_variables
        # A cell whose every edge is `zero` leaves its preprocessing out of the
        # loss: those weights get a zero gradient, not None.
        gradients = [tf.zeros(v.shape, v.dtype) if g is None else g
                     for g, v in zip(tape.gradient(tape_loss, variables), variables)]
        gradients, _ = clip_by_global_norm(gradients, self.clipnorm,
                                           loss_scale(self.optimizer))
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self._update_metrics(y, logits, loss)

    def test_step(self, data):
        x, y = data
        logits = self(x, training=False)[LOGITS]
        return self._update_metrics(y, logits, self.cross_entropy(y, logits))

    def get_config(self):
        return {
            **super().get_config(),
            "auxiliary_weight": self.auxiliary_weight,
            "clipnorm": self.clipnorm,
            "label_smoothing": self.label_smoothing,
        }


def compile_eval_model(model, optimizer):
    """Attach the optimizer and build its slots now: one trace of the train step, not two.

    Under mixed float16 the optimizer is wrapped in loss scaling (`precision.py`).
    """
    model.compile(optimizer=loss_scaling(optimizer))
    model.optimizer.build(model.trainable_variables)
    return model
