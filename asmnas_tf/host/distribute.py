"""The `tf.distribute` strategy a run trains under (SPEC §4).

Default: MirroredStrategy over the local devices (all GPUs, or the CPU).
`logical_cpus = n` splits the CPU into n logical devices first, which gives
a real n-replica MirroredStrategy on a CPU-only machine (used by the tests).

`kind = 'multi_worker'`: MultiWorkerMirroredStrategy over several machines
(or processes), the cluster read from the `TF_CONFIG` environment variable
(`cluster = 'tf_config'`) or from Slurm's (`cluster = 'slurm'`, through
`SlurmClusterResolver`: one task per node). Every worker runs the same
command; `train_loop.is_chief` says which one writes.
"""

import os

import gin
import tensorflow as tf
from asmnas_tf.errors import UserError
from asmnas_tf.host.cpu_threads import one_thread_per_op_on_cpu

STRATEGIES = ("mirrored", "default", "multi_worker")
CLUSTERS = ("tf_config", "slurm")


class StrategyError(UserError):
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


def _multi_worker(cluster):
    if cluster not in CLUSTERS:
        raise StrategyError(f"make_strategy.cluster={cluster!r} is not one of {', '.join(CLUSTERS)}")
    if cluster == "tf_config":
        if not os.environ.get("TF_CONFIG"):
            raise StrategyError("make_strategy.kind='multi_worker' needs TF_CONFIG (the cluster and this "
                                "task), or make_strategy.cluster='slurm' inside a Slurm job")
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    else:
        if "SLURM_JOB_ID" not in os.environ:
            raise StrategyError("make_strategy.cluster='slurm' outside a Slurm job (no SLURM_JOB_ID)")
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver()
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)


@gin.configurable
def make_strategy(kind="mirrored", logical_cpus=0, cluster="tf_config"):
    """`kind`: 'mirrored' (local devices), 'default' (no distribution) or
    'multi_worker' (several processes, `cluster` 'tf_config' or 'slurm')."""
    if kind not in STRATEGIES:
        raise StrategyError(f"make_strategy.kind={kind!r} is not one of {', '.join(STRATEGIES)}")
    # Like the logical CPUs, the thread pools must be set before TensorFlow's
    # runtime starts, and every command and API run makes its strategy before
    # its first op: set here, they reach them all (cpu_threads.py).
    one_thread_per_op_on_cpu()
    if logical_cpus:
        _split_cpu(logical_cpus)
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "multi_worker":
        if "multi_worker" not in _MIRRORED:  # one per process, as the mirrored ones
            _MIRRORED["multi_worker"] = _multi_worker(cluster)
        return _MIRRORED["multi_worker"]
    devices = tuple(d.name for d in tf.config.list_logical_devices("GPU"))
    devices = devices or tuple(d.name for d in tf.config.list_logical_devices("CPU"))
    if devices not in _MIRRORED:
        _MIRRORED[devices] = tf.distribute.MirroredStrategy(list(devices))
    return _MIRRORED[devices]
