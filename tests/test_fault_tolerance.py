"""Faults: saved states that survive corruption and failed writes, one process per run directory.

The checkpoint tests use a tiny Keras model and `checkpoints.py` directly;
the lock tests take the lock from real, separate processes. The commands'
side (a second bin/search refused, a corrupt state at resume, SIGTERM) is in
test_bad_input.py and test_resume.py.
"""

import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import keras
import numpy as np
import pytest

from asmnas_tf.rundir import checkpoints, run_lock
from asmnas_tf.rundir.checkpoints import CheckpointError, load_state, read_state, save_state
from conftest import REPO_ROOT


def _model(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    return model


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def _three_states(directory, keep=2):
    """States at (0, 2), (0, 4), (1, 0) of three different models; returns their weights."""
    saved = {}
    for seed, (epoch, step) in enumerate([(0, 2), (0, 4), (1, 0)]):
        model = _model(seed)
        save_state(model, str(directory), epoch, step, keep=keep)
        saved[(epoch, step)] = _weights(model)
    return saved


def test_the_newest_states_are_kept_with_size_and_checksum(tmp_path):
    _three_states(tmp_path, keep=2)
    names = sorted(os.listdir(tmp_path))
    assert names == ["latest.json", "state-e0000-s000004.json", "state-e0000-s000004.weights.h5",
                     "state-e0001-s000000.json", "state-e0001-s000000.weights.h5"]
    latest = json.loads((tmp_path / "latest.json").read_text())
    data = (tmp_path / "state-e0001-s000000.weights.h5").read_bytes()
    assert latest == {"epoch": 1, "step": 0, "weights": "state-e0001-s000000.weights.h5",
                      "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert (tmp_path / "state-e0001-s000000.json").read_text() == (tmp_path / "latest.json").read_text()


def test_keep_one_leaves_only_the_newest(tmp_path):
    _three_states(tmp_path, keep=1)
    assert sorted(os.listdir(tmp_path)) == ["latest.json", "state-e0001-s000000.json",
                                            "state-e0001-s000000.weights.h5"]


def _truncate(path, keep_bytes=100):
    path.write_bytes(path.read_bytes()[:keep_bytes])


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("spoil, why", [(_truncate, "is truncated or changed"),
                                         (_flip_a_byte, "SHA-256 does not match")])
def test_a_spoilt_newest_state_falls_back_to_the_previous_one(tmp_path, spoil, why):
    saved = _three_states(tmp_path)
    spoil(tmp_path / "state-e0001-s000000.weights.h5")
    lines, model = [], _model(7)
    assert load_state(model, str(tmp_path), log=lines.append) == (0, 4)
    for loaded, expected in zip(_weights(model), saved[(0, 4)]):
        np.testing.assert_array_equal(loaded, expected)
    assert len(lines) == 1 and why in lines[0]
    assert f"{tmp_path}/state-e0001-s000000.weights.h5" in lines[0]
    assert "resuming from state-e0000-s000004.weights.h5 (epoch 0, step 4)" in lines[0]
    assert read_state(str(tmp_path)) == (0, 4, str(tmp_path / "state-e0000-s000004.weights.h5"))


@pytest.mark.parametrize("pointer", [b'{"epoch": 1, "st', b"", b"\xff\xfe", b'["a list"]',
                                     b'{"epoch": 1, "step": 0, "weights": "../elsewhere.weights.h5"}'])
def test_a_corrupt_pointer_falls_back_to_the_manifests(tmp_path, pointer):
    saved = _three_states(tmp_path)
    (tmp_path / "latest.json").write_bytes(pointer)
    lines, model = [], _model(7)
    assert load_state(model, str(tmp_path), log=lines.append) == (1, 0)
    for loaded, expected in zip(_weights(model), saved[(1, 0)]):
        np.testing.assert_array_equal(loaded, expected)
    assert len(lines) == 1 and f"{tmp_path}/latest.json is corrupt" in lines[0]


def test_a_file_that_checks_out_but_does_not_load_falls_back(tmp_path):
    """An h5 file written bad (its manifest made from the bad bytes): Keras refuses it, the previous loads."""
    _three_states(tmp_path)
    bad = tmp_path / "state-e0001-s000000.weights.h5"
    bad.write_bytes(b"not an h5 file" * 20)
    manifest = json.loads((tmp_path / "latest.json").read_text())
    manifest.update(size=bad.stat().st_size, sha256=hashlib.sha256(bad.read_bytes()).hexdigest())
    (tmp_path / "latest.json").write_text(json.dumps(manifest))
    (tmp_path / "state-e0001-s000000.json").write_text(json.dumps(manifest))
    lines = []
    assert load_state(_model(7), str(tmp_path), log=lines.append) == (0, 4)
    assert "state-e0001-s000000.weights.h5 cannot be loaded" in lines[0]


def test_no_good_state_is_one_line_saying_how_to_start_over(tmp_path):
    _three_states(tmp_path)
    for name in ("state-e0000-s000004.weights.h5", "state-e0001-s000000.weights.h5"):
        _truncate(tmp_path / name)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(CheckpointError) as caught:
        load_state(_model(7), str(tmp_path))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"no usable saved state in {tmp_path}: ")
    assert message.count("is truncated or changed") == 2
    assert message.endswith(f"to start over, delete {tmp_path} (the run's saved states) or choose a new --model_dir")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing removed


def test_nothing_saved_yet_starts_from_the_beginning(tmp_path):
    assert load_state(_model(0), str(tmp_path / "none")) == (0, 0)
    assert read_state(str(tmp_path / "none")) == (0, 0, None)


def test_a_failed_write_keeps_the_previous_state_and_names_the_file(tmp_path):
    _three_states(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    model = _model(9)

    def disk_full(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    model.save_weights = disk_full
    with pytest.raises(CheckpointError) as caught:
        save_state(model, str(tmp_path), 1, 2)
    message = str(caught.value)
    assert f"could not write {tmp_path}/state-e0001-s000002.weights.h5 (No space left on device)" in message
    assert "the previous state (epoch 1, step 0)" in message and "is intact" in message
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_read_only_checkpoint_folder_is_named(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder")
    _three_states(tmp_path)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(CheckpointError) as caught:
            save_state(_model(9), str(tmp_path), 1, 2)
    finally:
        tmp_path.chmod(0o755)
    assert "could not write" in str(caught.value) and "Permission denied" in str(caught.value)


def test_keep_must_be_a_positive_integer():
    with pytest.raises(ValueError, match=r"checkpoints.keep=0: expected an integer >= 1"):
        checkpoints.keep_states(0)


# ---------------------------------------------------------------- the lock, from real processes

HOLDER = """
import sys, time
from asmnas_tf.rundir import run_lock
run_lock.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def _holder(directory):
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_process_is_refused_naming_the_holder_and_a_killed_holder_is_taken_over(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(run_lock.RunDirInUseError) as caught:
            run_lock.acquire(str(tmp_path))
        message = str(caught.value)
        assert f"--model_dir={tmp_path} is in use by pid {holder.pid} on host {socket.gethostname()}" in message
        assert f"(lock {tmp_path}/.asmnas.lock)" in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kill left the file, with the dead holder's pid: stale, taken over with a line.
    assert json.loads((tmp_path / ".asmnas.lock").read_text())["pid"] == holder.pid
    lines = []
    run_lock.acquire(str(tmp_path), log=lines.append)
    try:
        assert len(lines) == 1 and lines[0] == (
            f"note: {tmp_path}: taking over the lock of pid {holder.pid} on host {socket.gethostname()} "
            f"(started {_started(lines[0])}), which is no longer running")
        assert json.loads((tmp_path / ".asmnas.lock").read_text())["pid"] == os.getpid()
    finally:
        run_lock.release(str(tmp_path))
    assert not (tmp_path / ".asmnas.lock").exists()  # a clean end leaves the folder as it was


def _started(line):
    return line.split("(started ")[1].split(")")[0]


def test_the_lock_is_reentrant_in_one_process_and_freed_at_the_last_release(tmp_path):
    run_lock.acquire(str(tmp_path))
    run_lock.acquire(str(tmp_path))
    run_lock.release(str(tmp_path))
    assert (tmp_path / ".asmnas.lock").exists()
    run_lock.release(str(tmp_path))
    assert not (tmp_path / ".asmnas.lock").exists()
    holder = _holder(tmp_path)  # free for another process now
    holder.send_signal(signal.SIGKILL)
    holder.wait()


def test_two_processes_racing_for_a_lock_one_wins(tmp_path):
    """Twenty rounds of two processes starting together: exactly one holds the lock each time.

    Each process holds what it got until both have answered (it waits for its
    stdin to close), so a slow start of one (a loaded machine, tests run in
    parallel) cannot let it take a lock the other already gave back.
    """
    race = ("import sys; from asmnas_tf.rundir import run_lock\n"
            "try:\n    run_lock.acquire(sys.argv[1]); print('won', flush=True)\n"
            "except run_lock.RunDirInUseError: print('lost', flush=True)\n"
            "sys.stdin.read()\n")
    for round_index in range(20):
        directory = tmp_path / f"r{round_index}"
        directory.mkdir()
        processes = [subprocess.Popen([sys.executable, "-c", race, str(directory)], cwd=REPO_ROOT,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        watchdogs = [threading.Timer(60, p.kill) for p in processes]  # a hung child fails the round
        for watchdog in watchdogs:
            watchdog.start()
        outcomes = sorted(p.stdout.readline().strip() for p in processes)
        for p in processes:
            p.communicate(timeout=60)
        for watchdog in watchdogs:
            watchdog.cancel()
        assert outcomes == ["lost", "won"], round_index
        assert not (directory / ".asmnas.lock").exists()


# ---------------------------------------------------------------- clean stops


def test_signals_only_set_the_request_and_a_second_ctrl_c_interrupts():
    from asmnas_tf.rundir.stop_signals import stop_on_signals

    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as request:
        os.kill(os.getpid(), signal.SIGINT)
        assert request.signum == signal.SIGINT and request.name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        assert request.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


class _SignalAtStep(keras.callbacks.Callback):
    def __init__(self, step, signum):
        super().__init__()
        self.step, self.signum = step, signum

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_training_saves_the_state_at_that_step(tmp_path, signum, status):
    import tensorflow as tf

    from asmnas_tf.rundir.stop_signals import RunStopped
    from asmnas_tf.training.train_loop import fit

    model = _model(0)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.optimizer.build(model.trainable_variables)
    x = np.random.default_rng(0).normal(size=(40, 3)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, x[:, :2])).batch(4)
    with pytest.raises(RunStopped) as caught:
        fit(model, dataset, epochs=2, strategy=tf.distribute.get_strategy(), checkpoint_dir=str(tmp_path),
            callbacks=[_SignalAtStep(6, signum)], save_every_steps=4, verbose=0)
    assert caught.value.exit_status == status
    assert str(caught.value) == (f"stopped by {signal.Signals(signum).name}: the state at epoch 0, step 7 is saved "
                                 f"in {tmp_path}; run the same command again to resume")
    assert json.loads((tmp_path / "latest.json").read_text())["step"] == 7
    stopped = _weights(model)
    resumed = _model(5)
    resumed.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    resumed.optimizer.build(resumed.trainable_variables)
    assert load_state(resumed, str(tmp_path)) == (0, 7)
    for a, b in zip(_weights(resumed), stopped):
        np.testing.assert_array_equal(a, b)
