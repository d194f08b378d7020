"""The evaluation network's training recipe: optimizer, schedule, weight average.

Every option is a gin binding whose default is the paper's recipe (§5.2,
DARTS `train.py`: SGD 0.025, momentum 0.9, coupled L2 3e-4, cosine to 0,
no warm-up, no weight average):

  train_optimizer.learning_rate         the peak rate, at `reference_batch_size`
  train_optimizer.lr_scaling            'none' | 'linear' | 'sqrt': the rate x (batch / reference)^1 or ^0.5
  train_optimizer.schedule              'cosine' | 'linear' (to 0; with warm-up: one-cycle) | 'constant'
  train_optimizer.warmup_epochs         linear warm-up (`schedules.WarmupSchedule`), in [0, epochs)
  train_optimizer.momentum / nesterov   PyTorch's momentum, optionally Nesterov's
  train_optimizer.weight_decay          coupled L2
  train_optimizer.ema_decay             None, or Keras's `use_ema` with this momentum: the average
                                        is what is tested, saved and exported
  train_optimizer.ema_warmup            the average's momentum min(ema_decay, (1 + t) / (10 + t)) at
                                        step t (TensorFlow's ExponentialMovingAverage); False: Keras's fixed one

The network's own (label smoothing, auxiliary weight, BatchNorm momentum)
are `build_eval_net`'s; augmentation (crop, flip, cutout) is `make_dataset`'s;
test-time augmentation is `run_train.test_time_augmentation` (`tta.py`).
`check_recipe` checks them all before any data is read: a bad value is one
`error:` line naming the binding and what it accepts.
"""

import inspect
import numbers

import gin
import keras

from asmnas_tf.data.pipeline import flips, make_dataset
from asmnas_tf.errors import UserError
from asmnas_tf.evaluation.builder import eval_net_config
from asmnas_tf.evaluation.tta import check_test_time_augmentation
from asmnas_tf.training.optim import CoupledSGD
from asmnas_tf.training.schedules import ConstantSchedule, WarmupSchedule

SCHEDULES = ("cosine", "linear", "constant")
LR_SCALINGS = ("none", "linear", "sqrt")


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_number(name, value, low, high, low_open=False, high_open=True, allow_none=False):
    """`value` in the interval; otherwise one line naming the binding and the interval."""
    if value is None and allow_none:
        return
    inside = _is_number(value) and (value > low if low_open else value >= low) and (
        high is None or (value < high if high_open else value <= high))
    if not inside:
        interval = f"{'(' if low_open else '['}{low}, {'inf' if high is None else high}{')' if high_open else ']'}"
        extra = ", or None" if allow_none else ""
        raise UserError(f"{name}={value!r}: expected a number in {interval}{extra}")


def _check_choice(name, value, choices):
    if value not in choices:
        raise UserError(f"{name}={value!r}: expected one of {', '.join(repr(c) for c in choices)}")


def scaled_learning_rate(learning_rate, batch_size, lr_scaling, reference_batch_size):
    """The peak rate for `batch_size`: linear (Goyal et al.) or square-root scaling from the reference."""
    ratio = batch_size / reference_batch_size
    return learning_rate * {"none": 1.0, "linear": ratio, "sqrt": ratio ** 0.5}[lr_scaling]


@gin.configurable(denylist=["steps_per_epoch", "epochs", "batch_size", "check_only"])
def train_optimizer(steps_per_epoch=1, epochs=1, batch_size=64, learning_rate=0.025, schedule="cosine",
                    warmup_epochs=0.0, momentum=0.9, nesterov=False, weight_decay=3e-4, ema_decay=None,
                    ema_warmup=True, lr_scaling="none", reference_batch_size=64, check_only=False):
    """The evaluation network's SGD (`optim.CoupledSGD`) with its per-step schedule.

    `check_only`: check the bindings against `epochs` and return None (the
    runs call this before reading any data).
    """
    _check_number("train_optimizer.learning_rate", learning_rate, 0, None, low_open=True)
    _check_choice("train_optimizer.schedule", schedule, SCHEDULES)
    _check_number("train_optimizer.warmup_epochs", warmup_epochs, 0, epochs)
    _check_number("train_optimizer.momentum", momentum, 0, 1)
    if not isinstance(nesterov, bool):
        raise UserError(f"train_optimizer.nesterov={nesterov!r}: expected True or False")
    if nesterov and momentum == 0:
        raise UserError("train_optimizer.nesterov=True: expected train_optimizer.momentum in (0, 1), received 0")
    _check_number("train_optimizer.weight_decay", weight_decay, 0, None)
    _check_number("train_optimizer.ema_decay", ema_decay, 0, 1, low_open=True, allow_none=True)
    if not isinstance(ema_warmup, bool):
        raise UserError(f"train_optimizer.ema_warmup={ema_warmup!r}: expected True or False")
    _check_choice("train_optimizer.lr_scaling", lr_scaling, LR_SCALINGS)
    if not isinstance(reference_batch_size, int) or isinstance(reference_batch_size, bool) or reference_batch_size < 1:
        raise UserError(f"train_optimizer.reference_batch_size={reference_batch_size!r}: expected an integer >= 1")
    if check_only:
        return None

    peak = scaled_learning_rate(learning_rate, batch_size, lr_scaling, reference_batch_size)
    total = max(int(steps_per_epoch) * int(epochs), 1)
    warmup = min(max(round(warmup_epochs * steps_per_epoch), 1), total - 1) if warmup_epochs else 0
    decay_steps = max(total - warmup, 1)
    if schedule == "cosine":
        after = keras.optimizers.schedules.CosineDecay(peak, decay_steps, alpha=0.0)
    elif schedule == "linear":
        after = keras.optimizers.schedules.PolynomialDecay(peak, decay_steps, end_learning_rate=0.0, power=1.0)
    else:
        after = ConstantSchedule(peak)
    rate = WarmupSchedule(peak, warmup, after) if warmup else after
    average = {} if ema_decay is None else {"use_ema": True, "ema_momentum": float(ema_decay), "ema_warmup": ema_warmup}
    return CoupledSGD(learning_rate=rate, momentum=momentum, l2=weight_decay, nesterov=nesterov, **average)


def binding(configurable, parameter):
    """The value gin binds to `configurable.parameter`, else the function's default."""
    try:
        return gin.query_parameter(f"{configurable.__name__}.{parameter}")
    except ValueError:  # not bound
        return inspect.signature(configurable).parameters[parameter].default


def check_recipe(epochs, batch_size, network_options=None, test_time_augmentation=None):
    """Every recipe binding checked against the run's epochs: a UserError (one line) on the first bad one."""
    train_optimizer(epochs=epochs, batch_size=batch_size, check_only=True)
    eval_net_config(**dict(network_options or {}))
    for parameter in ("crop_padding", "cutout"):
        value = binding(make_dataset, parameter)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise UserError(f"make_dataset.{parameter}={value!r}: expected an integer >= 0")
    flip = binding(make_dataset, "flip")
    flips(flip, None)  # a bad value is one line now; 'auto' is resolved once the data's name is known
    check_test_time_augmentation(test_time_augmentation, training_flips=flip is not False)
