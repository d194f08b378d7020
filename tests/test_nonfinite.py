"""A NaN loss stops the run with one clear error and keeps the last good checkpoint."""

import hashlib

import gin
import keras
import numpy as np
import pytest
from conftest import needs_fashion_mnist

from asmnas_tf.commands import cli

from asmnas_tf.supernet import runner as search
from asmnas_tf.training.callbacks import NonFiniteLossError
from asmnas_tf.training.train_loop import read_state

BINDINGS = [
    "load_arrays.train_subset = 256", "load_arrays.test_subset = 64", "build_supernet.num_cells = 1",
    "build_supernet.channels = 4", "build_supernet.attention_hidden_units = 8", "run_search.batch_size = 32",
    "run_search.epochs = 3", "run_search.save_every_steps = 0", "run_search.verbose = 0",
    "make_strategy.kind = 'default'",
]


def _digest(checkpoint_dir):
    """Digest of the saved training state: its pointer file and the weights it names."""
    epoch, step, weights = read_state(checkpoint_dir)
    pointer = (checkpoint_dir / "latest.json").read_bytes()
    return hashlib.sha256(pointer + open(weights, "rb").read()).hexdigest(), (epoch, step)


class PoisonAtEpoch(keras.callbacks.Callback):
    """At the start of `epoch`: note the checkpoint's digest, then make every weight infinite."""

    def __init__(self, epoch, checkpoint):
        super().__init__()
        self.epoch, self.checkpoint, self.digest = epoch, checkpoint, None

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.digest = _digest(self.checkpoint)
            for variable in self.model.trainable_variables:
                variable.assign(np.full(variable.shape, np.inf, dtype=variable.dtype))


@pytest.mark.slow
@needs_fashion_mnist
def test_nan_loss_stops_the_search_and_keeps_the_last_checkpoint(tmp_path):
    checkpoint = tmp_path / "checkpoints"
    poison = PoisonAtEpoch(1, checkpoint)
    cli.parse_gin(["search/fashion_mnist.gin"], BINDINGS)
    try:
        with pytest.raises(NonFiniteLossError) as error:
            search.run_search(str(tmp_path), extra_callbacks=[poison])
    finally:
        gin.clear_config()
    message = str(error.value).splitlines()[0]  # gin appends "In call to configurable ..." lines
    assert "the loss became nan at epoch 1, step 0" in message
    assert f"the last saved state (epoch 1, step 0) is kept in {checkpoint}" in message
    assert _digest(checkpoint) == poison.digest  # the end of epoch 0, not the infinite weights
    assert poison.digest[1] == (1, 0)
    assert not (tmp_path / "genotype.json").exists() and not (tmp_path / "supernet.weights.h5").exists()
    rows = (tmp_path / "history.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["0"]  # the broken epoch is not logged
