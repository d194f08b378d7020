"""Independent tasks taken by several processes or machines at once: shards, claims, results once.

Two ways to spread a list of tasks (a comparison's (method, seed) runs):

- An array job (Slurm `--array`, a Kubernetes Indexed Job): process `index`
  of `count` takes the tasks at positions index, index + count, ...
  (`shard`).
- A plain pool: every worker walks the same list and takes a task by its
  claim (`claim`): `fcntl.flock` on `<directory>/claims/<task>.lock`,
  non-blocking. The kernel drops a claim when its process ends, however it
  ends, so the task of a killed worker is taken again by the next worker
  that reaches it, or by a rerun; on NFS the claim is NFS's lock (a lost
  machine's ends with its lease).

Both at once work too: each array task claims within its shard.
Every finished task is appended to the shared results file exactly once,
however many writers (`append_once`: under an exclusive lock on a lock file
beside it, the file is read again and the line written only if its task is
not there yet).
"""

import contextlib
import fcntl
import json
import os
import re

from asmnas_tf.errors import UserError
from asmnas_tf.rundir.atomic_write import write_text_atomic
from asmnas_tf.rundir.run_dir import CLAIMS_DIR


def check_shard(index, count):
    """`--task_index`, `--num_tasks`: one line unless 0 <= index < count."""
    for name, value in (("--task_index", index), ("--num_tasks", count)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{name}={value!r} is not an integer")
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--task_index={index} --num_tasks={count}: expected 0 <= task_index < num_tasks")
    return index, count


def shard(tasks, index=0, count=1):
    """The tasks of process `index` of `count`: every count-th from position `index`."""
    check_shard(index, count)
    return [task for position, task in enumerate(tasks) if position % count == index]


@contextlib.contextmanager
def claim(directory, name):
    """Yields True while this process holds task `name`'s claim in `directory`, False if another does."""
    if not re.fullmatch(r"[A-Za-z0-9_.=-]+", name):
        raise ValueError(f"a task name is letters, digits and _.=-: {name!r}")
    folder = os.path.join(directory, CLAIMS_DIR)
    os.makedirs(folder, exist_ok=True)
    fd = os.open(os.path.join(folder, f"{name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _exclusive(path):
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocking: a writer holds it for one read and one write
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_lines(path):
    """The JSON lines of `path` ([] if it does not exist yet)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(text) for text in f if text.strip()]


def append_once(path, record, key, read=read_lines):
    """Appends `record` unless a line with the same `key(line)` is there; True if written.

    The whole file is written again atomically under the lock, so a kill
    never leaves half a line and a reader never sees one. `read` parses the
    file (the caller's reader may refuse lines of another configuration).
    """
    with _exclusive(path):
        lines = read(path)
        if any(key(line) == key(record) for line in lines):
            return False
        write_text_atomic(path, "".join(json.dumps(line) + "\n" for line in [*lines, record]))
        return True
