"""The supernet's training step: single-level SGD on (w, Theta) (paper §4.3).

`SupernetModel` is a functional model with outputs `{"logits",
"coefficients"}`; only the logits have a target. Its train step clips the
global norm of the all-reduced gradient (`grad_clip.py`, SPEC §4) and
reports the epoch mean of its square, `grad_norm_sq`: the quantity
E[||grad F||^2] bounded by the paper's convergence analysis (eq. 4.22).
"""

import keras
import tensorflow as tf
from keras import ops

from asmnas_tf.training.grad_clip import clip_by_global_norm, unscale_loss
from asmnas_tf.training.precision import loss_scale, loss_scaling
from asmnas_tf.names import COEFFICIENTS, LOGITS  # noqa: F401  (importers use them from here too)

# Output names of the supernet.


@keras.saving.register_keras_serializable(package="asmnas_tf")
class SupernetModel(keras.Model):
    """Functional supernet: cross-entropy on the logits, global-norm clip.

    Loss and metrics are the model's own trackers (the outputs are a dict of
    which only the logits have a target), so `compile` takes the optimizer.
    """

    def __init__(self, *args, clipnorm=5.0, attention_warmup_steps=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.clipnorm = clipnorm
        # The warm-up (PC-DARTS: weights only for the first 15 of 50 epochs,
        # because parameter-free ops win the early race): for the first
        # `attention_warmup_steps` optimizer steps T1..T4 do not move.
        self.attention_warmup_steps = int(attention_warmup_steps)
        self.cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.grad_norm_sq_tracker = keras.metrics.Mean(name="grad_norm_sq")
        self.attention_grad_norm_tracker = keras.metrics.Mean(name="attention_grad_norm")
        self.ops_grad_norm_tracker = keras.metrics.Mean(name="ops_grad_norm")

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker, self.grad_norm_sq_tracker, *self._attention_trackers()]

    @tf.autograph.experimental.do_not_convert  # plain Python over the layers
    def _attention_trackers(self):
        """The attention gradient norms' trackers, where there are attention modules (else no column)."""
        return [self.attention_grad_norm_tracker, self.ops_grad_norm_tracker] if self._attention_edges() else []

    @property
    def weight_variables(self):
        """What the weight step trains: every trainable variable (DARTS leaves out alpha)."""
        return self.trainable_variables

    def _update_metrics(self, y, logits, loss):
        self.loss_tracker.update_state(loss, sample_weight=ops.shape(logits)[0])
        self.accuracy_tracker.update_state(y, logits)
        return {"loss": self.loss_tracker.result(), "accuracy": self.accuracy_tracker.result()}

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            logits = self(x, training=True)[LOGITS]
            # Divided by the number of replicas inside (see grad_clip.unscale_loss).
            scaled_loss = self.cross_entropy(y, logits)
            # Times the loss scale under mixed float16 (`precision.py`), else as is.
            tape_loss = self.optimizer.scale_loss(scaled_loss)
        variables = self.weight_variables
        scale = loss_scale(self.optimizer)
        gradients, norm_sq = clip_by_global_norm(tape.gradient(tape_loss, variables), self.clipnorm, scale)
        _track(self.grad_norm_sq_tracker, norm_sq, scaled=scale is not None)
        self._track_attention_gradients(gradients, variables, scale)
        gradients = self._scale_gradients(gradients, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        metrics = self._update_metrics(y, logits, unscale_loss(scaled_loss))
        attention = {t.name: t.result() for t in self._attention_trackers()}
        return {**metrics, "grad_norm_sq": self.grad_norm_sq_tracker.result(), **attention}

    @tf.autograph.experimental.do_not_convert  # plain Python over the layers
    def _attention_edges(self):
        """{kernel variable path: edge} of the edges with an attention module."""
        from asmnas_tf.layers.mixed_edge import MixedEdge  # the layers import this package's names

        return {layer.kernel.path: layer for layer in self.layers
                if isinstance(layer, MixedEdge) and layer.attention_start() is not None}

    @tf.autograph.experimental.do_not_convert  # plain Python over the layers
    def _scale_gradients(self, gradients, variables):
        """Clipped gradients with T1..T4's times their edge's `attention_lr_multiplier`, frozen in the warm-up."""
        edges = self._attention_edges()
        frozen = None
        if self.attention_warmup_steps > 0 and edges:
            frozen = self.optimizer.iterations < self.attention_warmup_steps
        l2 = getattr(self.optimizer, "l2", 0.0)
        scale = loss_scale(self.optimizer)
        return [edges[v.path].scale_gradient(g, frozen, _frozen_gradient(v, edges[v.path], l2, scale))
                if v.path in edges else g for g, v in zip(gradients, variables)]

    @tf.autograph.experimental.do_not_convert  # plain Python over the layers
    def _track_attention_gradients(self, gradients, variables, scale=None):
        """Epoch means of the clipped gradient's norm on T1..T4 and on the edges' op weights.

        The telemetry's question: how much of the gradient reaches the attention
        modules at all. This replica's share (the global gradient on one
        replica); divided by the loss scale `scale` under mixed float16.
        """
        edges = self._attention_edges()
        attention_sq, ops_sq = [], []
        for g, v in zip(gradients, variables):
            if v.path in edges:
                start = edges[v.path].attention_start()
                attention_sq.append(tf.nn.l2_loss(g[start:]))
                ops_sq.append(tf.nn.l2_loss(g[:start]))
        if not attention_sq:
            return
        pairs = ((self.attention_grad_norm_tracker, attention_sq), (self.ops_grad_norm_tracker, ops_sq))
        for tracker, squares in pairs:
            norm = ops.sqrt(2.0 * tf.add_n(squares))
            _track(tracker, norm if scale is None else norm / ops.cast(scale, norm.dtype), scaled=scale is not None)

    def test_step(self, data):
        x, y = data
        logits = self(x, training=False)[LOGITS]
        return self._update_metrics(y, logits, unscale_loss(self.cross_entropy(y, logits)))

    def get_config(self):
        return {**super().get_config(), "clipnorm": self.clipnorm,
                "attention_warmup_steps": self.attention_warmup_steps}


def _frozen_gradient(variable, edge, l2, scale):
    """The gradient that leaves T1..T4 of `edge` exactly as they are under coupled L2.

    `CoupledSGD` adds l2 w to the gradient, then buf = m buf + g, w -= lr
    buf: a gradient of exactly -l2 w makes the sum +0, so the momentum
    buffer (0 before the warm-up ends) and the weights stay bit-identical.
    Under loss scaling the wrapper divides by the scale first: there the
    cancellation is to rounding, not exact.
    """
    def make():
        part = variable.value[edge.attention_start():]
        gradient = -(ops.cast(l2, part.dtype) * part)
        return gradient if scale is None else gradient * ops.cast(scale, part.dtype)

    return make


def _track(tracker, value, scaled):
    """tracker.update_state(value); under loss scaling a skipped step's non-finite value is left out.

    (A weight of 0 on it would still make the mean NaN: NaN x 0.)
    """
    if not scaled:
        tracker.update_state(value)
        return
    finite = ops.isfinite(value)
    tracker.update_state(ops.where(finite, value, 0.0), sample_weight=ops.cast(finite, "float32"))


def compile_supernet(model, optimizer):
    """Attach the optimizer and build its slots up front.

    Building the optimizer's slots before `fit` makes TensorFlow trace the
    train step once instead of twice (Keras creates them lazily in the trace).
    Under mixed float16 the optimizer is wrapped in loss scaling (`precision.py`).
    """
    model.compile(optimizer=loss_scaling(optimizer))
    model.optimizer.build(model.weight_variables)
    return model
