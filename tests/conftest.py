"""Test set-up: import path, quiet TensorFlow, two logical CPU devices.

The two logical CPUs must be declared before TensorFlow touches a device, so
this runs at import time; they let the tests run a real 2-replica
MirroredStrategy on a CPU-only machine.
"""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
