"""Test set-up: quiet TensorFlow, two logical CPU devices.

The package is imported as installed (`make setup` installs the checkout
in .venv, editable): no import path is set here.

The two logical CPUs must be declared before TensorFlow touches a device, so
this runs at import time; they let the tests run a real 2-replica
MirroredStrategy on a CPU-only machine. The thread pools too are set before
the runtime starts, as the commands set them (`cpu_threads.py`): the runs a
test makes in this process then find the pools they ask for.
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
from asmnas_tf.host.cpu_threads import one_thread_per_op_on_cpu  # noqa: E402

one_thread_per_op_on_cpu()

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


# `make test` runs one pytest worker per core, a file per worker (pytest-xdist,
# --dist loadfile --no-loadscope-reorder): the files are handed out in
# collection order, so the longest go first and the short ones fill the
# gaps at the end (longest-processing-time first). Seconds per file, one
# serial run of the suite (AMD EPYC, 2 cores); files not listed follow.
FILE_SECONDS = {
    "test_multi_worker.py": 229, "test_bench_smoke.py": 205, "test_experiments.py": 205,
    "test_resume.py": 200, "test_bad_input.py": 177, "test_train_e2e.py": 169, "test_search_cli.py": 130,
    "test_pipeline.py": 109, "test_package.py": 108, "test_darts.py": 80, "test_precision.py": 63,
    "test_jit_compile.py": 57, "test_search_diagnostics.py": 55, "test_custom_space_e2e.py": 117,
    "test_benchmark.py": 40,
}


def pytest_collection_modifyitems(config, items):
    """The test files longest first (stable: tests keep their order inside a file)."""
    items.sort(key=lambda item: -FILE_SECONDS.get(os.path.basename(str(item.fspath)), 0))


@pytest.fixture(autouse=True)
def _op_determinism_ends_with_the_test():
    """A run with `deterministic = True` turns on TensorFlow's op determinism for the whole process
    (run_skeleton.start_run); it must not outlive its test: under it XLA refuses MaxPool's gradient,
    so tests/test_jit_compile.py failed whenever a deterministic run had gone before it on its worker."""
    yield
    from tensorflow.python.framework import config as tf_config

    if tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()
