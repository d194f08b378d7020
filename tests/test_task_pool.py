"""Tasks over several processes (experiments/task_pool.py): shards, claims, each result exactly once."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from asmnas_tf.errors import UserError
from asmnas_tf.experiments import task_pool

# A worker: walks tasks t00..t{n-1}, takes those it can claim and that are not done,
# "works" `pause` seconds, appends its result once. Prints the tasks it ran.
WORKER = """
import json, sys, time
from asmnas_tf.experiments import task_pool
directory, results, n, pause, index, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
ran = []
for task in task_pool.shard([f"t{k:02d}" for k in range(n)], index, count):
    if any(line["task"] == task for line in task_pool.read_lines(results)):
        continue
    with task_pool.claim(directory, task) as mine:
        if not mine or any(line["task"] == task for line in task_pool.read_lines(results)):
            continue
        open(directory + "/started-" + task, "w").close()
        time.sleep(pause)
        if task_pool.append_once(results, {"task": task, "by": index}, lambda r: r["task"]):
            ran.append(task)
print(json.dumps(ran))
"""


def _worker(tmp_path, n, pause, index=0, count=1):
    return subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), str(tmp_path / "results.jsonl"), str(n),
                             str(pause), str(index), str(count)], stdout=subprocess.PIPE, text=True)


def test_shards_partition_the_tasks():
    tasks = list(range(11))
    shards = [task_pool.shard(tasks, i, 3) for i in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    for index, count in ((3, 3), (-1, 2), (0, 0)):
        with pytest.raises(UserError, match=f"--task_index={index} --num_tasks={count}: expected 0 <= task_index"):
            task_pool.shard(tasks, index, count)


def test_a_pool_of_processes_runs_each_task_exactly_once(tmp_path):
    workers = [_worker(tmp_path, 12, 0.2) for _ in range(3)]
    ran = [json.loads(w.communicate(timeout=300)[0]) for w in workers]
    assert all(w.returncode == 0 for w in workers)
    lines = task_pool.read_lines(str(tmp_path / "results.jsonl"))
    assert sorted(line["task"] for line in lines) == [f"t{k:02d}" for k in range(12)]  # each once
    assert sorted(t for r in ran for t in r) == [f"t{k:02d}" for k in range(12)]  # no task run twice


def test_array_shards_and_a_pool_together(tmp_path):
    workers = [_worker(tmp_path, 10, 0.05, index, 2) for index in (0, 1, 0, 1)]  # two workers per shard
    ran = [json.loads(w.communicate(timeout=300)[0]) for w in workers]
    lines = task_pool.read_lines(str(tmp_path / "results.jsonl"))
    assert sorted(line["task"] for line in lines) == [f"t{k:02d}" for k in range(10)]
    assert all(int(t[1:]) % 2 == index for r, index in zip(ran, (0, 1, 0, 1)) for t in r)


def test_the_task_of_a_killed_worker_is_taken_again(tmp_path):
    stuck = _worker(tmp_path, 1, 600)  # claims t00, then "works" for 10 minutes
    deadline = time.time() + 120
    while not (tmp_path / "started-t00").exists():
        assert time.time() < deadline and stuck.poll() is None
        time.sleep(0.05)
    assert json.loads(_worker(tmp_path, 1, 0).communicate(timeout=120)[0]) == []  # t00 is claimed: skipped
    stuck.send_signal(signal.SIGKILL)
    stuck.wait(timeout=60)
    assert json.loads(_worker(tmp_path, 1, 0).communicate(timeout=120)[0]) == ["t00"]  # the claim died with it
    assert task_pool.read_lines(str(tmp_path / "results.jsonl")) == [{"task": "t00", "by": 0}]


def test_append_once_refuses_a_second_line_of_a_task(tmp_path):
    path = str(tmp_path / "r.jsonl")
    assert task_pool.append_once(path, {"task": "a", "v": 1}, lambda r: r["task"])
    assert not task_pool.append_once(path, {"task": "a", "v": 2}, lambda r: r["task"])
    assert task_pool.read_lines(path) == [{"task": "a", "v": 1}]
    assert sorted(os.listdir(tmp_path)) == ["r.jsonl", "r.jsonl.lock"]  # no temporaries left
