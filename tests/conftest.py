"""Test set-up: quiet TensorFlow, two logical CPU devices.

The package is imported as installed (`make setup` installs the checkout
in .venv, editable): no import path is set here.

The two logical CPUs must be declared before TensorFlow touches a device, so
this runs at import time; they let the tests run a real 2-replica
MirroredStrategy on a CPU-only machine.
"""

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
needs_fashion_mnist = pytest.mark.skipif(
    not os.path.isdir(FASHION_MNIST_DIR), reason="apt-get install dataset-fashion-mnist"
)


def gin_params(*bindings):
    return [f"--gin_param={binding}" for binding in bindings]


# The tiny search on real Fashion-MNIST that the end-to-end tests share:
# 2 cells, C = 4, 256 images train the weights and 256 select, batch 32
# (8 steps an epoch). Each test adds its epochs, strategy and switches.
TINY_SEARCH = ["--gin_file=search/fashion_mnist.gin", *gin_params(
    "load_arrays.train_subset = 512",
    "load_arrays.test_subset = 64",
    "build_supernet.num_cells = 2",
    "build_supernet.channels = 4",
    "build_supernet.attention_hidden_units = 8",
    "run_search.batch_size = 32",
)]
