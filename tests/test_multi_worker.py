"""Two worker processes on 127.0.0.1 under MultiWorkerMirroredStrategy.

The same search as one process with two replicas (the same global batch,
each replica half of it), to a stated tolerance; only the chief writes; a
killed worker makes the other stop with one line, and the same command run
again on both workers finishes the job.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from asmnas_tf.space.genotype import read_genotype
from conftest import REPO_ROOT, TINY_SEARCH, gin_params, needs_fashion_mnist

# Two epochs of 8 steps, the state saved every 2 steps, deterministic.
SEARCH = [os.path.join(REPO_ROOT, "bin", "search"), *TINY_SEARCH, *gin_params(
    "run_search.epochs = 2", "run_search.save_every_steps = 2", "run_search.deterministic = True",
    "run_search.verbose = 0")]

MULTI_WORKER = "--gin_param=make_strategy.kind = 'multi_worker'"
# Coefficients of a 2-worker run against a 1-process 2-replica run: the same
# maths, the all-reduce sums in another order.
TOLERANCE = 1e-5


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(model_dir, ports, *extra):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    for index in range(len(ports)):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_CONFIG=tf_config)
        workers.append(subprocess.Popen([sys.executable, *SEARCH, MULTI_WORKER, *extra, f"--model_dir={model_dir}"],
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return workers


def _finish(process, timeout=900):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def _coefficients(model_dir):
    record = json.loads((model_dir / "attention.json").read_text())
    return np.array([cell["coefficients"] for cell in record["cells"]])


@pytest.mark.slow
@needs_fashion_mnist
def test_two_workers_search_like_one_process_with_two_replicas(tmp_path):
    workers = _start_workers(tmp_path / "two", _free_ports(2))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    single = subprocess.run([sys.executable, *SEARCH, "--gin_param=make_strategy.logical_cpus = 2",
                             f"--model_dir={tmp_path / 'one'}"], env=env, capture_output=True, text=True,
                            timeout=900)
    assert single.returncode == 0, single.stderr[-3000:]
    (chief_rc, chief_out, chief_err), (rc, out, err) = [_finish(w) for w in workers]
    assert chief_rc == 0, chief_err[-3000:]
    assert rc == 0, err[-3000:]
    assert "Written:" in chief_out and "Worker done" in out
    assert "2 replica(s)" in chief_out and "2 replica(s)" in single.stdout

    two, one = read_genotype(tmp_path / "two" / "genotype.json"), read_genotype(tmp_path / "one" / "genotype.json")
    assert [[e.op for e in c.edges] for c in two.cells] == [[e.op for e in c.edges] for c in one.cells]
    difference = np.abs(_coefficients(tmp_path / "two") - _coefficients(tmp_path / "one")).max()
    print(f"\n2 workers vs 1 process x 2 replicas: same ops; largest coefficient difference {difference:.2e}")
    assert difference <= TOLERANCE
    # One history, one set of plots: the chief's.
    assert len((tmp_path / "two" / "history.csv").read_text().splitlines()) == 3


@pytest.mark.slow
@needs_fashion_mnist
def test_a_killed_worker_stops_the_other_and_the_rerun_finishes(tmp_path):
    model_dir = tmp_path / "run"
    chief, worker = _start_workers(model_dir, _free_ports(2))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        state = model_dir / "checkpoints" / "latest.json"
        if state.exists() and json.loads(state.read_text())["step"] > 0:
            break
        assert worker.poll() is None and chief.poll() is None
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    rc, _, err = _finish(chief, timeout=300)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and lines[-1].startswith("error: ") and "worker" in lines[-1], err[-3000:]
    assert not (model_dir / "genotype.json").exists()

    chief, worker = _start_workers(model_dir, _free_ports(2))
    (chief_rc, chief_out, chief_err), (rc, _, err) = [_finish(w) for w in (chief, worker)]
    assert chief_rc == 0, chief_err[-3000:]
    assert rc == 0, err[-3000:]
    assert len(read_genotype(model_dir / "genotype.json").cells) == 2


TRAIN = [
    os.path.join(REPO_ROOT, "bin", "train"),
    "--gin_file=train/fashion_mnist.gin",
    "--gin_param=run_train.genotype = 'DARTS_V2'",
    "--gin_param=run_train.num_cells = 2",
    "--gin_param=build_eval_net.channels = 4",
    "--gin_param=load_arrays.train_subset = 512",
    "--gin_param=load_arrays.test_subset = 256",
    "--gin_param=run_train.batch_size = 32",
    "--gin_param=run_train.epochs = 1",
    "--gin_param=run_train.drop_path = 0.0",
    "--gin_param=run_train.deterministic = True",
    "--gin_param=run_train.verbose = 0",
]


@pytest.mark.slow
@needs_fashion_mnist
def test_two_workers_train_like_one_process_with_two_replicas(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        workers.append(subprocess.Popen([sys.executable, *TRAIN, MULTI_WORKER, f"--model_dir={tmp_path / 'two'}"],
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    single = subprocess.run([sys.executable, *TRAIN, "--gin_param=make_strategy.logical_cpus = 2",
                             f"--model_dir={tmp_path / 'one'}"], env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                            capture_output=True, text=True, timeout=900)
    assert single.returncode == 0, single.stderr[-3000:]
    (chief_rc, _, chief_err), (rc, out, err) = [_finish(w) for w in workers]
    assert chief_rc == 0 and rc == 0, (chief_err + err)[-3000:]
    assert "Worker done" in out
    two, one = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("two", "one"))
    assert abs(two["test_loss"] - one["test_loss"]) < 1e-4
    assert abs(two["test_accuracy"] - one["test_accuracy"]) <= 1 / 256  # at most one of 256 test images
    assert (tmp_path / "two" / "model.keras").exists()
