"""Building the table: the fixed job list, split over processes, resumable.

The jobs: the 243 architectures in one fixed shuffled order (so that a
partly built table is a random sample of the space), each with seed 0, and
after every fourth (by position) the same architecture with seed 1. Process
i of n takes jobs i, i + n, i + 2n, ... and appends to its own part file;
rerun with the same --shard, on the same or another day or machine, it skips
the rows its part already holds.
"""

import json
import os
import platform

import numpy as np

from asmnas_tf.benchmark.recipe import RECIPE
from asmnas_tf.benchmark.space import BENCH_SPACE, all_architectures
from asmnas_tf.benchmark.table import BenchmarkError, header, read_part
from asmnas_tf.errors import UserError

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
        row = {"architecture": code, "seed": seed, **figures, "machine": machine}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        log(f"[{len(mine) - len(todo) + number}/{len(mine)}] {code} seed {seed}: "
            f"{figures['accuracy'][-1]:.4f} in {figures['seconds']:.0f} s")
    return path
