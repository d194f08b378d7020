"""TensorBoard HParams sessions: what a run writes is what TensorBoard reads back."""

import numpy as np
import pytest

from tensorboard_sessions import read_session
from asmnas_tf.supernet.runner import search
from asmnas_tf.training.hparams import plain, write_session


def test_a_session_round_trips(tmp_path):
    write_session(str(tmp_path), "asm-seed3", {"method": "asm", "seed": 3, "warmup": 0.5, "fused": True,
                                               "primitives": ["zero", "skip_connect"], "cap": None},
                  {"test_accuracy": 0.8125, "params": 123456})
    hparams, scalars = read_session(str(tmp_path))
    assert hparams == {"method": "asm", "seed": 3.0, "warmup": 0.5, "fused": True,
                       "primitives": '["zero", "skip_connect"]', "cap": "null"}
    assert scalars == {"test_accuracy": 0.8125, "params": 123456.0}
    assert plain(np.int64(7)) == 7 and isinstance(plain(np.float32(0.5)), float)


@pytest.mark.parametrize("method", ["asm", "rsps"])
def test_a_search_writes_its_session(tmp_path, method):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (96, 8, 8, 1)).astype("uint8")
    y = rng.integers(0, 4, 96)
    result = search(x, y, method=method, epochs=1, batch_size=16, num_cells=2, channels=4, seed=5,
                    rsps_candidates=3, rsps_images=32, telemetry_samples=0,
                    supernet_options={"attention_hidden_units": 8}, model_dir=str(tmp_path), verbose=0)
    hparams, scalars = read_session(str(tmp_path / "tensorboard"))
    assert hparams["method"] == method and hparams["seed"] == 5 and hparams["epochs"] == 1
    assert hparams["build_supernet.channels"] == 4 and hparams["remedies.attention_warmup"] == 0.0
    assert scalars["selection_accuracy"] == pytest.approx(result.selection_accuracy, abs=1e-6)
    if method == "asm":
        assert scalars["mean_abs_drift"] == pytest.approx(result.diagnostics["mean_abs_drift"], abs=1e-6)
