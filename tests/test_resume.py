"""SIGKILL in the middle of an epoch, run the same command again: the same result.

With `deterministic = True` a search (and a training) killed mid-epoch and
restarted ends byte-identical to an uninterrupted run of the same command:
weights, optimizer slots, step and data position are all restored.
"""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import REPO_ROOT, TINY_SEARCH, gin_params, needs_fashion_mnist

# Two epochs of 8 steps, the state saved every 2 steps, deterministic.
SEARCH = [os.path.join(REPO_ROOT, "bin", "search"), *TINY_SEARCH, *gin_params(
    "run_search.epochs = 2", "run_search.save_every_steps = 2", "run_search.deterministic = True",
    "run_search.verbose = 0")]

TRAIN = [
    os.path.join(REPO_ROOT, "bin", "train"),
    "--gin_file=train/fashion_mnist.gin",
    "--gin_param=run_train.genotype = 'DARTS_V2'",
    "--gin_param=run_train.num_cells = 2",
    "--gin_param=build_eval_net.channels = 4",
    "--gin_param=load_arrays.train_subset = 512",
    "--gin_param=load_arrays.test_subset = 128",
    "--gin_param=run_train.batch_size = 32",
    "--gin_param=run_train.epochs = 2",
    "--gin_param=run_train.save_every_steps = 3",
    "--gin_param=run_train.deterministic = True",
    "--gin_param=run_train.verbose = 0",
]


def _start(command, model_dir):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, *command, f"--model_dir={model_dir}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _state(model_dir):
    try:
        with open(os.path.join(model_dir, "checkpoints", "latest.json")) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    return state["epoch"], state["step"]


def _signal_inside_epochs(watches, timeout=600):
    """Send each watched process its signal once it has saved a state inside its epoch.

    `watches` is a list of (process, model_dir, epoch, least_step, signum). The processes run at
    the same time, so they are polled together: waiting for one while another ran on was a race
    (CI, loaded machine: the second search finished its epoch 1 while the first was still
    starting, and the test found it gone). Returns the state each one was signalled at.
    """
    deadline = time.monotonic() + timeout
    signalled = [None] * len(watches)
    while None in signalled:
        if time.monotonic() > deadline:
            raise AssertionError(f"no state inside the watched epochs within {timeout} s")
        for i, (process, model_dir, epoch, least_step, signum) in enumerate(watches):
            if signalled[i] is not None:
                continue
            state = _state(model_dir)
            if state and state[0] == epoch and state[1] >= least_step:
                process.send_signal(signum)
                signalled[i] = state
                continue
            assert process.poll() is None, (
                f"{model_dir} ended (exit {process.returncode}) before a state inside epoch {epoch}: "
                + process.stderr.read()[-3000:])
        time.sleep(0.05)
    for process, *_ in watches:
        process.wait()
    return signalled


def _kill_inside_epoch(process, model_dir, epoch, signum=signal.SIGKILL, least_step=1):
    """Send `signum` to `process` once it has saved a state inside `epoch` (step >= least_step)."""
    return _signal_inside_epochs([(process, model_dir, epoch, least_step, signum)])[0]


def _weights(path):
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return arrays


def _kill_and_resume(tmp_path, command, epoch):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    uninterrupted = _start(command, straight)
    victim = _start(command, killed)
    state = _kill_inside_epoch(victim, killed, epoch)
    print(f"\nSIGKILL after the state of epoch {state[0]}, step {state[1]} was saved")
    assert victim.returncode == -signal.SIGKILL
    resumed = _start(command, killed)
    for process in (uninterrupted, resumed):
        _, err = process.communicate(timeout=900)
        assert process.returncode == 0, err[-3000:]
    return straight, killed, state


@pytest.mark.slow
@needs_fashion_mnist
def test_search_killed_mid_epoch_resumes_to_the_same_genotype(tmp_path):
    straight, killed, state = _kill_and_resume(tmp_path, SEARCH, epoch=1)
    assert state[1] in (2, 4, 6)  # inside epoch 1 (8 steps), saved every 2
    for name in ("genotype.json", "attention.json"):
        assert (killed / name).read_bytes() == (straight / name).read_bytes(), name
    a, b = _weights(straight / "supernet.weights.h5"), _weights(killed / "supernet.weights.h5")
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    epochs = [row.split(",")[0] for row in (killed / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1"]  # epoch 0 logged by the first process, epoch 1 by the second


@pytest.mark.slow
@needs_fashion_mnist
def test_training_killed_mid_epoch_resumes_to_the_same_model(tmp_path):
    straight, killed, state = _kill_and_resume(tmp_path, TRAIN, epoch=1)
    assert state[1] in (3, 6, 9, 12, 15)  # inside epoch 1 (16 steps), saved every 3
    results = [json.loads((d / "results.json").read_text()) for d in (straight, killed)]
    assert results[0]["test_accuracy"] == results[1]["test_accuracy"]
    assert results[0]["test_loss"] == results[1]["test_loss"]


@pytest.mark.slow
@needs_fashion_mnist
def test_search_stopped_by_sigterm_or_resumed_past_a_spoilt_state_ends_with_the_same_genotype(tmp_path):
    """SIGTERM: the state at that step saved, exit 143, one line; SIGKILL then the newest state
    truncated: the rerun names it and falls back to the one before. Both end as an uninterrupted run."""
    straight, stopped, spoilt = tmp_path / "straight", tmp_path / "stopped", tmp_path / "spoilt"
    uninterrupted, terminated, killed = (_start(SEARCH, d) for d in (straight, stopped, spoilt))
    # Inside epoch 0: the rest of training (at least 14 steps) is still ahead when the signal lands.
    # SIGKILL the third inside epoch 1, with a state before it to fall back to.
    _signal_inside_epochs([(terminated, stopped, 0, 1, signal.SIGTERM), (killed, spoilt, 1, 2, signal.SIGKILL)])
    stderr = terminated.stderr.read()
    epoch, step = _state(stopped)
    assert terminated.returncode == 143, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == (
        f"stopped by SIGTERM: the state at epoch {epoch}, step {step} is saved in {stopped}/checkpoints; "
        f"run the same command again to resume")
    assert "Traceback" not in stderr
    assert killed.returncode == -signal.SIGKILL
    # The newest complete state and the one before it, from the manifests on disk: the kill can land
    # after latest.json was written and before the oldest state was pruned (three states), or, the
    # process having gone on, after a newer manifest and before latest.json points to it.
    manifests = sorted((spoilt / "checkpoints").glob("state-*.json"))  # zero-padded names: oldest first
    newest = json.loads(manifests[-1].read_text())
    previous = json.loads(manifests[-2].read_text())["weights"]
    weights = spoilt / "checkpoints" / newest["weights"]
    weights.write_bytes(weights.read_bytes()[:-1000])
    resumed = [_start(SEARCH, d) for d in (stopped, spoilt)]
    outputs = []
    for process in (uninterrupted, *resumed):
        out, err = process.communicate(timeout=900)
        assert process.returncode == 0, err[-3000:]
        outputs.append(out)
    assert (f"checkpoint: {weights} is truncated or changed: {newest['size'] - 1000} bytes, its manifest says "
            f"{newest['size']}; resuming from {previous}") in outputs[2]
    for d in (stopped, spoilt):
        for name in ("genotype.json", "attention.json"):
            assert (d / name).read_bytes() == (straight / name).read_bytes(), (d, name)
