"""Building the table: the fixed job list, split over processes, resumable.

The jobs: the 243 architectures in one fixed shuffled order (so that a
partly built table is a random sample of the space), each with seed 0, and
after every fourth (by position) the same architecture with seed 1. Process
i of n takes jobs i, i + n, i + 2n, ... and appends to its own part file;
rerun with the same --shard, on the same or another day or machine, it skips
the rows its part already holds. Or a pool (`build_pool`): any number of
processes on one folder, each taking the jobs no other holds (a claim per
job, `experiments/task_pool.py`), each writing its own part file.
"""

import glob
import json
import os
import platform
import re
import socket

import numpy as np

from asmnas_tf.benchmark.recipe import RECIPE
from asmnas_tf.benchmark.space import BENCH_SPACE, all_architectures
from asmnas_tf.benchmark.table import BenchmarkError, header, read_part
from asmnas_tf.errors import UserError
from asmnas_tf.experiments import task_pool

JOB_ORDER_SEED = 2026


def jobs(space=BENCH_SPACE, recipe=RECIPE):
    """[(code, seed)] in the order the table is built."""
    codes = list(all_architectures(space))
    order = np.random.default_rng(JOB_ORDER_SEED).permutation(len(codes))
    result = []
    for position, index in enumerate(order):
        result.append((codes[index], 0))
        if position % recipe["second_seed_every"] == 0:
            result.append((codes[index], 1))
    return result


def parse_shard(text):
    """'i/n' -> (i, n); one line if malformed."""
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise UserError(f"--shard={text!r} is not i/n (e.g. 0/2)") from None
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--shard={text!r}: expected 0 <= i < n")
    return index, count


def part_path(directory, index, count):
    return os.path.join(directory, f"part-{index}-of-{count}.jsonl")


def _open_part(path, expected_header):
    """The part's done (code, seed) set; a new part gets its header, a cut last line is removed."""
    if not os.path.exists(path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(expected_header) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return set()
    head, rows = read_part(path)
    if head != expected_header:
        raise BenchmarkError(f"{path}: a part of another space or recipe; move it away or pick another --out")
    with open(path, "rb+") as f:
        data = f.read()
        keep = data.rfind(b"\n") + 1
        if keep < len(data):  # a row cut short by a stop
            f.truncate(keep)
    return {(row["architecture"], int(row["seed"])) for row in rows}


def parse_first(text, space=BENCH_SPACE):
    """'12122,22222' -> the codes to train first; one line naming a code not of the space."""
    if not text:
        return ()
    codes = tuple(code.strip() for code in str(text).split(",") if code.strip())
    known = set(all_architectures(space))
    for code in codes:
        if code not in known:
            raise UserError(f"--first: {code!r} is not an architecture of the benchmark's space "
                            f"({len(space.edges)} digits, each < {len(space.primitives)})")
    return codes


def build(directory, shard, train, log=print, limit=None, first=()):
    """Train this shard's jobs not yet in its part file; `train(code, seed)` -> the row's figures.

    `first`: architectures trained before the rest of the shard (for example the
    picks a scoring run waits on); the table they end in is the same.
    """
    index, count = shard
    os.makedirs(directory, exist_ok=True)
    path = part_path(directory, index, count)
    done = _open_part(path, header())
    mine = [job for k, job in enumerate(jobs()) if k % count == index]
    todo = [job for job in mine if job not in done]
    todo.sort(key=lambda job: job[0] not in first)  # stable: otherwise the fixed order
    log(f"{path}: {len(mine) - len(todo)} of {len(mine)} rows done")
    machine = platform.processor() or platform.machine()
    for number, (code, seed) in enumerate(todo[:limit] if limit else todo, 1):
        figures = train(code, seed)
        _append_row(path, code, seed, figures, machine)
        log(f"[{len(mine) - len(todo) + number}/{len(mine)}] {code} seed {seed}: "
            f"{figures['accuracy'][-1]:.4f} in {figures['seconds']:.0f} s")
    return path


def _append_row(path, code, seed, figures, machine):
    row = {"architecture": code, "seed": seed, **figures, "machine": machine}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _done_rows(directory):
    """Every (code, seed) some part file in `directory` holds.

    A part another worker is creating (no header yet) holds nothing; its
    rows are read once they are whole lines.
    """
    done = set()
    for path in glob.glob(os.path.join(directory, "*.jsonl")):
        try:
            _, rows = read_part(path)
        except BenchmarkError:
            continue
        done.update((row["architecture"], int(row["seed"])) for row in rows)
    return done


def build_pool(directory, train, log=print, limit=None, first=(), worker=None):
    """Train the jobs no part file holds and no other process has claimed; this process's rows to its own part.

    Any number of processes, on one machine or several sharing `directory`,
    run this at once: each job is claimed (`task_pool.claim`), so none is
    trained twice while its claim lives, and a killed worker's job is taken
    by the next worker that reaches it. `worker` names this process's part
    file (default: host and pid).
    """
    os.makedirs(directory, exist_ok=True)
    worker = re.sub(r"[^A-Za-z0-9_.-]", "_", worker or f"{socket.gethostname()}-{os.getpid()}")
    path = os.path.join(directory, f"part-pool-{worker}.jsonl")
    _open_part(path, header())
    todo = [job for job in jobs() if job not in _done_rows(directory)]
    todo.sort(key=lambda job: job[0] not in first)  # stable: otherwise the fixed order
    machine = platform.processor() or platform.machine()
    trained = 0
    for code, seed in todo:
        if limit and trained >= limit:
            break
        with task_pool.claim(directory, f"{code}-seed{seed}") as mine:
            if not mine or (code, seed) in _done_rows(directory):
                continue
            figures = train(code, seed)
            _append_row(path, code, seed, figures, machine)
            trained += 1
            log(f"[{worker}] {code} seed {seed}: {figures['accuracy'][-1]:.4f} in {figures['seconds']:.0f} s")
    return path
