"""One process per run directory: a lock file held while the run lives.

Two runs writing one directory mix their history.csv rows, TensorBoard
events and checkpoints. The lock is `fcntl.flock` on `<model_dir>/.asmnas.lock`:
the kernel holds it for the process and drops it when the process ends, however
it ends, so a lock left by a killed run (or, on NFS, a lost machine once its lease
runs out) is stale by construction and the next run takes it over, saying
whose it was. The file holds the holder's pid, host and start time, for the
line that refuses a second process. It is removed when the run ends cleanly.

Within one process the lock is re-entrant (the command takes it, then the
API call it makes); under a multi-worker strategy only the chief takes it.
"""

import atexit
import datetime
import fcntl
import json
import os
import socket

from asmnas_tf.errors import UserError

LOCK_FILE = ".asmnas.lock"


class RunDirInUseError(UserError):
    """Another live process holds the run directory; the message is one line."""


# realpath of the run directory -> [open descriptor, lock path, depth]
_HELD = {}


def _describe(data):
    if not isinstance(data, dict) or "pid" not in data:
        return "another process"
    return f"pid {data.get('pid')} on host {data.get('host', '?')} (started {data.get('started', '?')})"


def _read_holder(fd):
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
        return json.loads(raw.decode("utf-8")) if raw.strip() else None
    except (OSError, ValueError):
        return {}


def acquire(model_dir, log=print):
    """Hold `model_dir`'s lock for this process; RunDirInUseError naming the holder if another has it."""
    key = os.path.realpath(model_dir)
    if key in _HELD:
        _HELD[key][2] += 1
        return
    path = os.path.join(model_dir, LOCK_FILE)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise RunDirInUseError(f"--model_dir={model_dir}: cannot create its lock {path} "
                                   f"({error.strerror or error})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunDirInUseError(
                f"--model_dir={model_dir} is in use by {_describe(holder)} (lock {path}); wait for that run "
                f"to end or stop it, or choose another --model_dir"
            ) from None
        # The holder before us may have removed the file between our open and
        # our flock: then we hold a lock on a file nobody else can see.
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(fd)
    previous = _read_holder(fd)
    if previous is not None:
        log(f"note: {model_dir}: taking over the lock of {_describe(previous)}, which is no longer running")
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.datetime.now().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
    os.fsync(fd)
    _HELD[key] = [fd, path, 1]


def release(model_dir):
    """Drop one hold of `model_dir`'s lock; the last one removes the file and unlocks."""
    key = os.path.realpath(model_dir)
    held = _HELD.get(key)
    if held is None:
        return
    held[2] -= 1
    if held[2] > 0:
        return
    del _HELD[key]
    fd, path = held[0], held[1]
    try:
        os.remove(path)  # while still locked: a waiting process then sees another inode and retries
    except OSError:
        pass
    os.close(fd)


def holds(model_dir):
    return os.path.realpath(model_dir) in _HELD


@atexit.register
def release_all():
    for key in list(_HELD):
        _HELD[key][2] = 1
        release(key)
