"""The genotype: a searched architecture as a value, and its file (SPEC §5).

A genotype lists, for every cell of the network in order, the edges kept by
selection (`from` node, `to` node, op, mean coefficient) and the nodes whose
outputs are concatenated. It is the hand-off between search and evaluation,
so reading one validates everything and names the bad field in one line:

    runs/x/genotype.json: cells[3].edges[1].op: unknown op 'conv_9x9' (expected one of zero, ...)

Edges whose op is `zero` are kept in the file: under the paper's argmax rule
(SPEC §4) an edge may select `zero`, which means "no edge".
"""

import dataclasses
import json
import math
import numbers
import os

import numpy as np

from asmnas_tf.space.primitives import reduction_indices
from asmnas_tf.space.search_space import DARTS_SPACE, SearchSpace, make_space
from asmnas_tf.errors import UserError
from asmnas_tf.rundir.atomic_write import write_bytes_atomic
from asmnas_tf.names import RULES

FORMAT = "asmnas-genotype/1"
# Refuse bigger files before parsing: a 15-cell argmax genotype is ~30 KB.
MAX_FILE_BYTES = 1 << 20

_TOP_KEYS = ("format", "primitives", "nodes", "cells", "source")
_REQUIRED_TOP_KEYS = ("format", "primitives", "cells", "source")  # no "nodes": the DARTS space's 4
_CELL_KEYS = ("reduction", "edges", "concat")
_EDGE_KEYS = ("from", "to", "op")  # plus the optional "weight"
_DEFAULT_CONCAT = DARTS_SPACE.intermediate_nodes


class GenotypeError(UserError):
    """A genotype that cannot be used; the message is one line naming the field."""


@dataclasses.dataclass(frozen=True)
class Edge:
    source: int
    target: int
    op: str
    weight: float | None = None


@dataclasses.dataclass(frozen=True)
class Cell:
    reduction: bool
    edges: tuple[Edge, ...]
    concat: tuple[int, ...] = _DEFAULT_CONCAT


@dataclasses.dataclass(frozen=True)
class Genotype:
    cells: tuple[Cell, ...]
    # Free-form provenance (method, dataset, seed, rule); a dict, so kept out
    # of the hash (the genotype stays comparable but is not hashable by it).
    source: dict = dataclasses.field(hash=False)
    primitives: tuple = DARTS_SPACE.primitives
    nodes: int = DARTS_SPACE.nodes

    @property
    def space(self):
        """The SearchSpace this genotype's cells come from."""
        return SearchSpace(tuple(self.primitives), self.nodes)


# ---------------------------------------------------------------- dict form


def to_dict(genotype):
    """The SPEC §5 schema, keys in schema order; no validation (see dumps)."""
    nodes = {} if genotype.nodes == DARTS_SPACE.nodes else {"nodes": genotype.nodes}  # DARTS files: SPEC §5 as is
    return {
        "format": FORMAT,
        "primitives": list(genotype.primitives),
        **nodes,
        "cells": [
            {
                "reduction": cell.reduction,
                "edges": [
                    {"from": e.source, "to": e.target, "op": e.op, "weight": e.weight}
                    for e in cell.edges
                ],
                "concat": list(cell.concat),
            }
            for cell in genotype.cells
        ],
        "source": _sorted_keys(genotype.source),
    }


def from_dict(data, *, where="genotype", num_cells=None, space=None):
    """Validates `data` (the parsed JSON) and returns the Genotype.

    `num_cells`, when given, is the depth of the network that will use the
    genotype; a file for another depth is refused. `space`, when given, is
    the SearchSpace of that network: a genotype of another space is refused.
    """
    where = os.fspath(where)
    if not isinstance(data, dict):
        _fail(where, "$", f"got {_kind(data)}", "a JSON object")
    # The format first: another version may have other keys.
    if "format" not in data:
        _fail(where, "format", "missing", repr(FORMAT))
    if data["format"] != FORMAT:
        _fail(where, "format", f"unsupported format {_show(data['format'])}", repr(FORMAT))
    _check_keys(where, "", data, _TOP_KEYS, required=_REQUIRED_TOP_KEYS)
    file_space = _space_from_dict(where, data)
    if space is not None and file_space != space:
        _fail(where, "primitives", f"a genotype of the space {file_space.describe()}",
              f"the network's space, {space.describe()}")

    cells = data["cells"]
    if not isinstance(cells, list) or not cells:
        _fail(where, "cells", f"got {_kind(cells)}", "a non-empty list of cells")
    if num_cells is not None and len(cells) != num_cells:
        _fail(
            where,
            "cells",
            f"{len(cells)} cells, the network asks for {num_cells}",
            f"{num_cells} cells",
        )
    reductions = reduction_indices(len(cells))
    parsed = tuple(
        _cell_from_dict(where, i, cell, i in reductions, reductions, len(cells), file_space)
        for i, cell in enumerate(cells)
    )

    source = data["source"]
    if not isinstance(source, dict):
        _fail(where, "source", f"got {_kind(source)}", "an object")
    _check_json_value(where, "source", source)
    # A private copy, so the value does not change with the caller's dict.
    source = json.loads(json.dumps(source))
    return Genotype(cells=parsed, source=source, primitives=file_space.primitives, nodes=file_space.nodes)


def _space_from_dict(where, data):
    """The file's SearchSpace: its `primitives` (ops of the op table) and `nodes` (4 when absent)."""
    primitives = data["primitives"]
    nodes = data.get("nodes", DARTS_SPACE.nodes)
    if not isinstance(primitives, list) or not all(isinstance(name, str) for name in primitives):
        _fail(where, "primitives", f"got {_show(primitives)}", "a list of op names")
    try:
        return make_space(tuple(primitives), nodes, binding="genotype")
    except UserError as err:
        _fail(where, "primitives" if "primitives" in str(err) else "nodes", str(err).replace("genotype.", ""),
              "ops of the op table, distinct, and nodes an int >= 1")


def _cell_from_dict(where, i, cell, expect_reduction, reductions, total, space):
    path = f"cells[{i}]"
    if not isinstance(cell, dict):
        _fail(where, path, f"got {_kind(cell)}", "an object with keys " + ", ".join(_CELL_KEYS))
    _check_keys(where, path + ".", cell, _CELL_KEYS, required=_CELL_KEYS)

    reduction = cell["reduction"]
    if type(reduction) is not bool:
        _fail(where, f"{path}.reduction", f"got {_show(reduction)}", "true or false")
    if reduction != expect_reduction:
        _fail(
            where,
            f"{path}.reduction",
            f"{_json_bool(reduction)}, but with {total} cells the reduction cells "
            f"are at {_positions(reductions)}",
            _json_bool(expect_reduction),
        )

    edges = cell["edges"]
    if not isinstance(edges, list):
        _fail(where, f"{path}.edges", f"got {_kind(edges)}", "a list of edges")
    seen = {}
    parsed = []
    for k, edge in enumerate(edges):
        parsed_edge = _edge_from_dict(where, f"{path}.edges[{k}]", edge, space)
        pair = (parsed_edge.source, parsed_edge.target)
        if pair in seen:
            _fail(
                where,
                f"{path}.edges[{k}]",
                f"duplicated edge {pair[0]} -> {pair[1]} (already at {path}.edges[{seen[pair]}])",
                "each (from, to) pair at most once per cell",
            )
        seen[pair] = k
        parsed.append(parsed_edge)

    concat = cell["concat"]
    nodes = _node_range(space)
    if not isinstance(concat, list) or not concat:
        _fail(where, f"{path}.concat", f"got {_kind(concat)}", f"a non-empty list of nodes in {nodes}")
    for k, node in enumerate(concat):
        if not _is_int(node) or node not in space.intermediate_nodes:
            _fail(where, f"{path}.concat[{k}]", f"node out of range: {_show(node)}", f"an int in {nodes}")
        if node in concat[:k]:
            _fail(where, f"{path}.concat[{k}]", f"node {node} listed twice", "distinct nodes")
    return Cell(
        reduction=reduction,
        edges=tuple(parsed),
        concat=tuple(int(n) for n in concat),
    )


def _node_range(space):
    return f"{space.intermediate_nodes[0]}..{space.intermediate_nodes[-1]}"


def _edge_from_dict(where, path, edge, space):
    if not isinstance(edge, dict):
        _fail(where, path, f"got {_kind(edge)}", "an object with keys from, to, op, weight")
    _check_keys(where, path + ".", edge, _EDGE_KEYS + ("weight",), required=_EDGE_KEYS)

    target = edge["to"]
    nodes = _node_range(space)
    if not _is_int(target):
        _fail(where, f"{path}.to", f"got {_show(target)}", f"an int in {nodes}")
    if target not in space.intermediate_nodes:
        _fail(where, f"{path}.to", f"node out of range: {target}", f"an intermediate node in {nodes}")
    source = edge["from"]
    if not _is_int(source):
        _fail(where, f"{path}.from", f"got {_show(source)}", f"an int in 0..{target - 1}")
    if source < 0:
        _fail(where, f"{path}.from", f"node out of range: {source}", f"an int in 0..{target - 1}")
    if source >= target:
        _fail(
            where,
            f"{path}.from",
            f"edge does not go forward: {source} -> {target}",
            f"from < to, i.e. from in 0..{target - 1}",
        )

    op = edge["op"]
    if not isinstance(op, str) or op not in space.primitives:
        what = f"unknown op {op!r}" if isinstance(op, str) else f"got {_show(op)}"
        _fail(where, f"{path}.op", what, "one of " + ", ".join(space.primitives))

    weight = edge.get("weight")
    if weight is not None:
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            _fail(where, f"{path}.weight", f"got {_show(weight)}", "a finite number or null")
        weight = float(weight)
        if not math.isfinite(weight):
            _fail(where, f"{path}.weight", f"{weight} is not finite", "a finite number or null")
    return Edge(source=int(source), target=int(target), op=op, weight=weight)


# ---------------------------------------------------------------- text and files


def dumps(genotype):
    """Deterministic text: validated, indent 2, schema key order, trailing newline.

    Reading the text back and dumping it again gives the same bytes.
    """
    return _checked_text(genotype, "genotype")


def write_genotype(path, genotype):
    """Writes `genotype` to `path` atomically (SPEC §5: temp file + rename).

    The text is produced (and validated) before anything touches the disk; on
    any error the old file, if any, is left as it was and no temp file remains.
    """
    path = os.fspath(path)
    write_bytes_atomic(path, _checked_text(genotype, path).encode("utf-8"))


def read_genotype(path, *, num_cells=None, space=None):
    """Reads and validates a genotype file; raises GenotypeError naming the field."""
    path = os.fspath(path)
    try:
        size = os.stat(path).st_size
        if size > MAX_FILE_BYTES:
            _too_big(path, size)
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)  # bounded even if the file grew
    except OSError as err:
        _fail(path, "$", f"cannot read the file: {err.strerror or err}", "a readable genotype.json")
    if len(raw) > MAX_FILE_BYTES:
        _too_big(path, len(raw))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        _fail(path, "$", f"not UTF-8 (byte {err.start})", "a UTF-8 JSON file")
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as err:
        _fail(path, "$", f"invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}", "a JSON object")
    except _DuplicateKey as err:
        _fail(path, "$", f"duplicate key {err.args[0]!r} in a JSON object", "each key once per object")
    return from_dict(data, where=path, num_cells=num_cells, space=space)


# ---------------------------------------------------------------- baseline


def random_genotype(num_cells, seed, *, rule="argmax", space=DARTS_SPACE):
    """The DARTS "Random Sample" baseline, deterministic per seed.

    rule "argmax": every edge of the space gets a uniformly random op from
    its primitives, `zero` included (as the argmax rule may pick it).
    rule "top2": every intermediate node gets 2 distinct random predecessors
    each with a uniformly random non-zero op (8 edges per cell in the DARTS
    space).
    """
    if rule not in RULES:
        raise UserError(f"Expected rule in {RULES}. Received: rule={rule!r}")
    if not _is_int(seed):
        raise UserError(f"Expected an int seed. Received: seed={seed!r}")
    rng = np.random.default_rng(int(seed))
    reductions = reduction_indices(num_cells)
    primitives = space.primitives
    non_zero = [name for name in primitives if name != "zero"]
    cells = []
    for i in range(num_cells):
        if rule == "argmax":
            edges = tuple(
                Edge(source, target, primitives[int(rng.integers(len(primitives)))])
                for source, target in space.edges
            )
        else:
            edges = []
            for target in space.intermediate_nodes:
                sources = sorted(int(s) for s in rng.choice(target, size=2, replace=False))
                for source in sources:
                    op = non_zero[int(rng.integers(len(non_zero)))]
                    edges.append(Edge(source, target, op))
            edges = tuple(edges)
        cells.append(Cell(reduction=i in reductions, edges=edges, concat=space.intermediate_nodes))
    return Genotype(
        cells=tuple(cells),
        source={"method": "random", "seed": int(seed), "rule": rule},
        primitives=space.primitives,
        nodes=space.nodes,
    )


# ---------------------------------------------------------------- helpers


def _fail(where, field, what, expected):
    # A key or value from the file may hold a newline or other control
    # characters: escaped, so that the error stays one line (found by fuzzing).
    raise GenotypeError(_printable(f"{where}: {field}: {what} (expected {expected})"))


def _printable(text):
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _too_big(path, size):
    _fail(path, "$", f"file is {size} bytes, too big to be a genotype", f"at most {MAX_FILE_BYTES} bytes")


def _checked_text(genotype, where):
    # Validating through from_dict also turns numpy scalars into plain numbers.
    valid = from_dict(to_dict(genotype), where=where)
    return json.dumps(to_dict(valid), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _check_keys(where, prefix, obj, allowed, required):
    for key in obj:
        if key not in allowed:
            _fail(where, f"{prefix}{key}", "unknown key", "keys " + ", ".join(allowed))
    for key in required:
        if key not in obj:
            _fail(where, f"{prefix}{key}", "missing key", "keys " + ", ".join(allowed))


def _check_json_value(where, path, value):
    """`source` must survive a JSON round trip unchanged (str keys, finite numbers)."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            _fail(where, path, f"{value} is not finite", "a JSON value")
        return
    if isinstance(value, list):
        for k, item in enumerate(value):
            _check_json_value(where, f"{path}[{k}]", item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                _fail(where, path, f"non-string key {key!r}", "an object with string keys")
            _check_json_value(where, f"{path}.{key}", item)
        return
    _fail(where, path, f"got {_kind(value)}", "a JSON value (object, list, string, number, bool, null)")


def _sorted_keys(value):
    if isinstance(value, dict):
        return {key: _sorted_keys(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, list):
        return [_sorted_keys(item) for item in value]
    return value


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs):
    # json.loads would silently keep the last of two equal keys.
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def _is_int(value):
    # JSON true must not pass as 1.
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _kind(value):
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return _show(value)


def _show(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return _json_bool(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_bool(value):
    return "true" if value else "false"


def _positions(indices):
    return "(" + ", ".join(str(i) for i in indices) + ")"


