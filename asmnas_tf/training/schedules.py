"""Learning-rate warm-up in front of any Keras schedule (the training recipe).

Keras's `CosineDecay` has a warm-up of its own, its `PolynomialDecay` has
none; this one wrapper gives every shape the same warm-up, so that the
recipe's `warmup_epochs` means one thing whatever the decay:

    step < W:   lr = peak * (step + 1) / W          (linear, reaches peak at step W - 1)
    step >= W:  lr = after(step - W)                (a Keras schedule over the other steps)

`step` is the optimizer's `iterations` (0 for the first update), so the
first update already moves (at peak / W), unlike a ramp from 0. A linear
warm-up then a linear decay to 0 is the one-cycle (triangular) schedule of
the fast-training literature (Smith; Page's "How to train your ResNet").
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="asmnas_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`warmup_steps` linear steps up to `peak`, then `after` (counted from 0 again)."""

    def __init__(self, peak, warmup_steps, after):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.after = after

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.peak * (step + 1.0) / float(max(self.warmup_steps, 1))
        return ops.where(step < self.warmup_steps, warm, self.after(ops.maximum(step - self.warmup_steps, 0.0)))

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "after": keras.optimizers.schedules.serialize(self.after)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["after"] = keras.optimizers.schedules.deserialize(config["after"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="asmnas_tf")
class ConstantSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The same rate at every step (Keras has no schedule object for it)."""

    def __init__(self, rate):
        self.rate = float(rate)

    def __call__(self, step):
        return ops.cast(self.rate, "float32") + 0.0 * ops.cast(step, "float32")

    def get_config(self):
        return {"rate": self.rate}
