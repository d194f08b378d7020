"""The benchmark's data file and its reader.

A table is a folder of part files (one per building process), each JSON
lines: a header naming the format, the space and the recipe, then one row
per trained (architecture, seed):

    {"format": "asmnas-benchmark/1", "space": {"primitives": [...], "nodes": 2}, "recipe": {...}}
    {"architecture": "22122", "seed": 0, "accuracy": [0.71, ...], "train_loss": [...], "seconds": 61.2, ...}

Rows are appended one line at a time (written, flushed, synced): a process
stopped mid-line leaves a line without its newline, which the reader skips
and the builder cuts before it appends again. A part or table of another
space or recipe is refused with one line.
"""

import dataclasses
import glob
import json
import os

import numpy as np

from asmnas_tf.benchmark.recipe import RECIPE
from asmnas_tf.benchmark.space import BENCH_SPACE, all_architectures, check_code
from asmnas_tf.errors import UserError
from asmnas_tf.space.search_space import SearchSpace

FORMAT = "asmnas-benchmark/1"
DEFAULT_TABLE = os.path.join(os.path.dirname(__file__), "data", RECIPE["name"])


class BenchmarkError(UserError):
    """A table that cannot be used: one line naming the file and what is wrong."""


def header(space=BENCH_SPACE, recipe=RECIPE):
    return {"format": FORMAT, "space": {"primitives": list(space.primitives), "nodes": space.nodes},
            "recipe": dict(recipe)}


def _parse_lines(path, text):
    """(header, rows) of one part file; a last line without its newline is an unfinished row, left out."""
    lines = text.split("\n")
    complete = lines[:-1]  # the text after the last newline: empty, or a row cut short
    if not complete:
        raise BenchmarkError(f"{path}: no header line (expected a JSON object with format {FORMAT!r})")
    parsed = []
    for number, line in enumerate(complete, 1):
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise BenchmarkError(f"{path}: line {number}: invalid JSON ({err.msg})") from None
    head = parsed[0]
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise BenchmarkError(f"{path}: line 1: not a benchmark header (expected format {FORMAT!r})")
    return head, parsed[1:]


def read_part(path):
    with open(path, encoding="utf-8") as f:
        return _parse_lines(path, f.read())


@dataclasses.dataclass
class BenchmarkTable:
    """Accuracy by (architecture, seed) and budget; `final` is the last budget."""

    space: SearchSpace
    recipe: dict
    rows: dict  # (code, seed) -> row

    @property
    def budgets(self):
        return list(self.recipe["budgets"])

    def architectures(self, seed=0):
        return sorted(code for code, s in self.rows if s == seed)

    def accuracy(self, code, budget=None, seed=0):
        """The held-out accuracy of `code` at `budget` (image presentations; None: the final one)."""
        check_code(code, self.space)
        row = self.rows.get((code, seed))
        if row is None:
            raise BenchmarkError(f"architecture {code} (seed {seed}) is not in the table yet "
                                 f"({len(self.architectures(seed))} of {len(all_architectures(self.space))} trained)")
        index = -1 if budget is None else self.budgets.index(budget)
        return row["accuracy"][index]

    def final_accuracies(self, seed=0):
        """{code: final accuracy} of every architecture trained with `seed`."""
        return {code: row["accuracy"][-1] for (code, s), row in self.rows.items() if s == seed}

    def percentile(self, code, seed=0):
        """Share of the table's architectures (seed 0) that `code` beats, ties counted half, in percent."""
        values = np.array(list(self.final_accuracies(seed).values()))
        mine = self.accuracy(code, seed=seed)
        return float(100.0 * (np.sum(values < mine) + 0.5 * np.sum(values == mine) - 0.5) / max(len(values) - 1, 1))

    def regret(self, code, seed=0):
        """Best final accuracy of the table minus `code`'s."""
        return float(max(self.final_accuracies(seed).values()) - self.accuracy(code, seed=seed))


def load_table(path=DEFAULT_TABLE, space=BENCH_SPACE, recipe=RECIPE):
    """The table in `path` (a part file or a folder of them), checked against `space` and `recipe`."""
    parts = sorted(glob.glob(os.path.join(path, "*.jsonl"))) if os.path.isdir(path) else [path]
    if not parts or not all(os.path.isfile(p) for p in parts):
        raise BenchmarkError(f"{path}: no benchmark part files (*.jsonl)")
    expected = header(space, recipe)
    rows = {}
    for part in parts:
        head, part_rows = read_part(part)
        if head["space"] != expected["space"]:
            raise BenchmarkError(f"{part}: a table of the space {head['space']} (expected {expected['space']})")
        if head["recipe"] != expected["recipe"]:
            changed = sorted(k for k in set(head["recipe"]) | set(expected["recipe"])
                             if head["recipe"].get(k) != expected["recipe"].get(k))
            raise BenchmarkError(f"{part}: a table of another recipe ({', '.join(changed)} differ from "
                                 f"{expected['recipe']['name']}'s)")
        for number, row in enumerate(part_rows, 2):
            try:
                code = check_code(row["architecture"], space)
                accuracy = row["accuracy"]
                if len(accuracy) != len(recipe["budgets"]):
                    raise ValueError
            except (KeyError, TypeError, ValueError, UserError):
                raise BenchmarkError(f"{part}: line {number}: not a row of this table") from None
            rows.setdefault((code, int(row["seed"])), row)
    return BenchmarkTable(space=space, recipe=dict(recipe), rows=rows)
