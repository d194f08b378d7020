"""The `tf.distribute` strategy a run trains under (SPEC §4).

Default: MirroredStrategy over the local devices (all GPUs, or the CPU).
`logical_cpus = n` splits the CPU into n logical devices first, which gives
a real n-replica MirroredStrategy on a CPU-only machine (used by the tests).
"""

import gin
import tensorflow as tf

STRATEGIES = ("mirrored", "default")


class StrategyError(ValueError):
    """A strategy that cannot be made; the message is one line."""


def _split_cpu(logical_cpus):
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current and len(current) == logical_cpus:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus
        )
    except RuntimeError as error:
        raise StrategyError(
            f"make_strategy.logical_cpus={logical_cpus}: TensorFlow's devices are already "
            f"initialised ({error}); set it before anything else runs"
        ) from None


# One MirroredStrategy per process: the collective ops of two strategies over
# the same devices share instance keys and abort each other's all-reduces.
_MIRRORED = {}


@gin.configurable
def make_strategy(kind="mirrored", logical_cpus=0):
    """`kind`: 'mirrored' (local devices) or 'default' (no distribution)."""
    if kind not in STRATEGIES:
        raise StrategyError(f"make_strategy.kind={kind!r} is not one of {', '.join(STRATEGIES)}")
    if logical_cpus:
        _split_cpu(logical_cpus)
    if kind == "default":
        return tf.distribute.get_strategy()
    devices = tuple(d.name for d in tf.config.list_logical_devices("GPU"))
    devices = devices or tuple(d.name for d in tf.config.list_logical_devices("CPU"))
    if devices not in _MIRRORED:
        _MIRRORED[devices] = tf.distribute.MirroredStrategy(list(devices))
    return _MIRRORED[devices]
