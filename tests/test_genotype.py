"""Genotype value, file format (SPEC §5), named and random genotypes."""

import copy
import json
import os

import numpy as np
import pytest

from asmnas_tf.space.genotype import (
    FORMAT,
    MAX_FILE_BYTES,
    Cell,
    Edge,
    Genotype,
    GenotypeError,
    dumps,
    from_dict,
    random_genotype,
    read_genotype,
    to_dict,
    write_genotype,
)
from asmnas_tf.space.named_genotypes import NAMES, classic_pairs, named_genotype
from asmnas_tf.space.primitives import EDGES, INTERMEDIATE_NODES, PRIMITIVES, reduction_indices


def _searched(num_cells=3):
    """A genotype as search writes it: argmax rule, a weight on every edge."""
    reductions = reduction_indices(num_cells)
    cells = []
    for i in range(num_cells):
        edges = tuple(
            Edge(src, dst, PRIMITIVES[(i + k) % len(PRIMITIVES)], weight=0.1 + 0.01 * k + 1e-17 * i)
            for k, (src, dst) in enumerate(EDGES)
        )
        cells.append(Cell(reduction=i in reductions, edges=edges))
    return Genotype(
        cells=tuple(cells),
        source={"method": "asm", "dataset": "cifar10", "seed": 0, "rule": "argmax"},
    )


def _good_dict():
    return to_dict(_searched(3))


def _refused(data, *substrings, **kwargs):
    with pytest.raises(GenotypeError) as info:
        from_dict(data, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for s in substrings:
        assert s in message, message
    return message


def _refused_file(path, *substrings, **kwargs):
    with pytest.raises(GenotypeError) as info:
        read_genotype(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path) + ": ")
    for s in substrings:
        assert s in message, message
    return message


# ---------------------------------------------------------------- round trips


def test_schema_matches_spec():
    d = _good_dict()
    assert list(d) == ["format", "primitives", "cells", "source"]
    assert d["format"] == FORMAT == "asmnas-genotype/1"
    assert d["primitives"] == list(PRIMITIVES)
    assert list(d["cells"][0]) == ["reduction", "edges", "concat"]
    assert d["cells"][0]["edges"][0] == {"from": 0, "to": 2, "op": "zero", "weight": 0.1}
    assert d["cells"][0]["concat"] == [2, 3, 4, 5]
    assert [c["reduction"] for c in d["cells"]] == [True, True, False]  # L = 3: (0, 1)


def test_dict_round_trip_is_exact():
    g = _searched(15)
    assert from_dict(to_dict(g)) == g
    assert from_dict(to_dict(g), num_cells=15) == g


def test_write_read_write_is_byte_identical(tmp_path):
    g = _searched(15)
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    write_genotype(first, g)
    back = read_genotype(first, num_cells=15)
    assert back == g
    write_genotype(second, back)
    assert first.read_bytes() == second.read_bytes()
    text = first.read_text("utf-8")
    assert text == dumps(g)
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert text.startswith('{\n  "format": "asmnas-genotype/1",\n  "primitives": [\n')
    assert json.loads(text) == to_dict(g)
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.json"]


def test_dumps_is_deterministic_and_canonical():
    g = _searched(3)
    shuffled = Genotype(cells=g.cells, source=dict(reversed(list(g.source.items()))))
    assert dumps(shuffled) == dumps(g)  # source keys are written sorted
    # numpy scalars (what selection produces) are written as plain numbers.
    np_edge = Edge(np.int64(0), np.int64(2), "skip_connect", weight=np.float32(0.5))
    cell = Cell(reduction=True, edges=(np_edge,))  # 1 cell: it is the reduction cell
    h = Genotype(cells=(cell,), source={})
    assert json.loads(dumps(h))["cells"][0]["edges"][0] == {
        "from": 0, "to": 2, "op": "skip_connect", "weight": 0.5}


def test_weight_optional_and_zero_edges_kept(tmp_path):
    d = _good_dict()
    del d["cells"][2]["edges"][3]["weight"]
    d["cells"][2]["edges"][3]["op"] = "zero"
    g = from_dict(d)
    assert g.cells[2].edges[3] == Edge(1, 3, "zero", None)
    assert len(g.cells[2].edges) == 14
    path = tmp_path / "g.json"
    write_genotype(path, g)
    written = json.loads(path.read_text())["cells"][2]["edges"][3]
    assert written == {"from": 1, "to": 3, "op": "zero", "weight": None}


# ---------------------------------------------------------------- refusals


def test_invalid_json_names_line_and_column(tmp_path):
    path = tmp_path / "genotype.json"
    path.write_text('{\n  "format": "asmnas-genotype/1",\n  "cells": [,]\n}\n')
    _refused_file(path, "invalid JSON at line 3, column 13")


def test_duplicate_json_key(tmp_path):
    path = tmp_path / "genotype.json"
    path.write_text('{"format": "asmnas-genotype/1", "format": "asmnas-genotype/1"}')
    _refused_file(path, "duplicate key 'format'")


def test_huge_file_refused_without_parsing(tmp_path):
    path = tmp_path / "genotype.json"
    path.write_bytes(b"{" * (MAX_FILE_BYTES + 1))  # invalid JSON: size must be checked first
    msg = _refused_file(path, f"file is {MAX_FILE_BYTES + 1} bytes", f"at most {MAX_FILE_BYTES} bytes")
    assert "JSON" not in msg


def test_missing_file(tmp_path):
    _refused_file(tmp_path / "nope.json", "cannot read the file")


def test_not_an_object():
    _refused([1, 2], "genotype: $: got a list (expected a JSON object)")


def test_wrong_format():
    d = _good_dict()
    d["format"] = "asmnas-genotype/2"
    _refused(d, "genotype: format: unsupported format 'asmnas-genotype/2'", "expected 'asmnas-genotype/1'")


def test_wrong_primitives_order():
    """Another op order is another space: refused by a network of the DARTS space, in one line."""
    from asmnas_tf.space.search_space import DARTS_SPACE

    d = _good_dict()
    d["primitives"][1], d["primitives"][2] = d["primitives"][2], d["primitives"][1]
    _refused(d, "genotype: primitives: a genotype of the space 8 ops [zero, avg_pool_3x3, max_pool_3x3,",
             "expected the network's space, 8 ops [zero, max_pool_3x3, avg_pool_3x3,", space=DARTS_SPACE)
    assert from_dict(d).primitives[1] == "avg_pool_3x3"  # valid on its own: a space of its own


def test_unknown_op_names_the_field():
    d = _good_dict()
    d["cells"][2]["edges"][1]["op"] = "conv_9x9"
    msg = _refused(d, where="runs/x/genotype.json")
    assert msg.startswith("runs/x/genotype.json: cells[2].edges[1].op: unknown op 'conv_9x9' "
                          "(expected one of zero, max_pool_3x3, ")


def test_backward_edge():
    d = _good_dict()
    d["cells"][1]["edges"][0]["from"] = 2  # to = 2
    _refused(d, "cells[1].edges[0].from: edge does not go forward: 2 -> 2")
    d["cells"][1]["edges"][0]["from"] = 4
    _refused(d, "cells[1].edges[0].from: edge does not go forward: 4 -> 2")


def test_node_out_of_range():
    d = _good_dict()
    d["cells"][0]["edges"][13]["to"] = 6
    _refused(d, "cells[0].edges[13].to: node out of range: 6", "2..5")
    d = _good_dict()
    d["cells"][0]["edges"][0]["from"] = -1
    _refused(d, "cells[0].edges[0].from: node out of range: -1")
    d = _good_dict()
    d["cells"][0]["edges"][0]["to"] = 1
    _refused(d, "cells[0].edges[0].to: node out of range: 1")


def test_wrong_cell_count(tmp_path):
    path = tmp_path / "genotype.json"
    write_genotype(path, _searched(12))
    _refused_file(path, "cells: 12 cells, the network asks for 15", num_cells=15)
    assert len(read_genotype(path, num_cells=12).cells) == 12


def test_empty_cells():
    d = _good_dict()
    d["cells"] = []
    _refused(d, "cells: got an empty list")


def test_reduction_at_wrong_position():
    g = to_dict(_searched(8))  # reductions at (2, 5)
    g["cells"][3]["reduction"] = True
    _refused(g, "cells[3].reduction: true, but with 8 cells the reduction cells are at (2, 5)",
             "(expected false)")
    g = to_dict(_searched(8))
    g["cells"][5]["reduction"] = False
    _refused(g, "cells[5].reduction: false", "(expected true)")


def test_duplicated_edge():
    d = _good_dict()
    d["cells"][1]["edges"][5] = dict(d["cells"][1]["edges"][3])
    _refused(d, "cells[1].edges[5]: duplicated edge 1 -> 3 (already at cells[1].edges[3])")


def test_bool_is_not_int():
    d = _good_dict()
    d["cells"][0]["edges"][0]["from"] = True
    _refused(d, "cells[0].edges[0].from: got true")
    d = _good_dict()
    d["cells"][0]["reduction"] = 1
    _refused(d, "cells[0].reduction: got 1 (expected true or false)")
    d = _good_dict()
    d["cells"][0]["concat"] = [2, 3, True]
    _refused(d, "cells[0].concat[2]:")
    d = _good_dict()
    d["cells"][0]["edges"][0]["weight"] = False
    _refused(d, "cells[0].edges[0].weight: got false")


def test_unknown_and_missing_keys():
    d = _good_dict()
    d["extra"] = 1
    _refused(d, "genotype: extra: unknown key (expected keys format, primitives, nodes, cells, source)")
    d = _good_dict()
    d["cells"][1]["stride"] = 2
    _refused(d, "cells[1].stride: unknown key")
    d = _good_dict()
    d["cells"][1]["edges"][2]["w"] = 0.3
    _refused(d, "cells[1].edges[2].w: unknown key")
    d = _good_dict()
    del d["cells"][1]["edges"][2]["op"]
    _refused(d, "cells[1].edges[2].op: missing key")
    d = _good_dict()
    del d["source"]
    _refused(d, "genotype: source: missing key")


def test_weight_must_be_finite(tmp_path):
    d = _good_dict()
    d["cells"][0]["edges"][4]["weight"] = float("nan")
    _refused(d, "cells[0].edges[4].weight: nan is not finite (expected a finite number or null)")
    # The same from a file holding Python's NaN literal.
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps(d))
    _refused_file(path, "cells[0].edges[4].weight: nan is not finite")
    d["cells"][0]["edges"][4]["weight"] = "0.3"
    _refused(d, "cells[0].edges[4].weight: got '0.3'")


def test_bad_concat_and_source():
    for concat, text in [([], "concat: got an empty list"), ([2, 2], "concat[1]: node 2 listed twice"),
                         ([1, 2], "concat[0]: node out of range: 1"), ([6], "concat[0]: node out of range: 6")]:
        d = _good_dict()
        d["cells"][0]["concat"] = concat
        _refused(d, f"cells[0].{text}")
    d = _good_dict()
    d["source"] = ["asm"]
    _refused(d, "source: got a list (expected an object)")


def test_from_dict_does_not_alias_caller_data():
    d = _good_dict()
    g = from_dict(d)
    before = copy.deepcopy(g)
    d["source"]["seed"] = 99
    assert g == before


# ---------------------------------------------------------------- atomic write


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "genotype.json"
    write_genotype(path, _searched(3))
    old = path.read_bytes()
    good = _searched(3)
    bad_cell = Cell(False, (Edge(0, 2, "skip_connect", weight=object()),))  # bypasses from_dict
    bad_cells = (good.cells[0], good.cells[1], bad_cell)
    for bad in [Genotype(bad_cells, {}), Genotype(good.cells, {"seed": object()}),
                Genotype(good.cells, {"lr": float("inf")})]:
        with pytest.raises(GenotypeError) as info:
            write_genotype(path, bad)
        assert str(info.value).startswith(str(path) + ": ")
        assert path.read_bytes() == old
        assert os.listdir(tmp_path) == ["genotype.json"]


def test_failed_rename_leaves_no_temp(tmp_path):
    # The target is a directory: the temp file is written, the rename fails.
    target = tmp_path / "genotype.json"
    target.mkdir()
    with pytest.raises(OSError):
        write_genotype(target, _searched(3))
    assert os.listdir(tmp_path) == ["genotype.json"]
    assert os.listdir(target) == []


def test_overwrite_replaces_and_keeps_mode(tmp_path):
    path = tmp_path / "genotype.json"
    write_genotype(path, _searched(3))
    assert (os.stat(path).st_mode & 0o777) == 0o644
    os.chmod(path, 0o640)
    write_genotype(path, random_genotype(3, seed=1))
    assert read_genotype(path) == random_genotype(3, seed=1)
    assert (os.stat(path).st_mode & 0o777) == 0o640


# ---------------------------------------------------------------- named genotypes


def test_darts_v2_at_20_cells():
    g = named_genotype("DARTS_V2", 20)
    assert len(g.cells) == 20
    assert [i for i, c in enumerate(g.cells) if c.reduction] == [6, 13]
    assert all(len(c.edges) == 8 for c in g.cells)
    assert all(c.concat == (2, 3, 4, 5) for c in g.cells)
    assert g.source == {"method": "named", "name": "DARTS_V2"}
    normal, reduce = g.cells[0], g.cells[6]
    assert normal.edges == (
        Edge(0, 2, "sep_conv_3x3"), Edge(1, 2, "sep_conv_3x3"),
        Edge(0, 3, "sep_conv_3x3"), Edge(1, 3, "sep_conv_3x3"),
        Edge(1, 4, "sep_conv_3x3"), Edge(0, 4, "skip_connect"),
        Edge(0, 5, "skip_connect"), Edge(2, 5, "dil_conv_3x3"),
    )
    assert reduce.edges == (
        Edge(0, 2, "max_pool_3x3"), Edge(1, 2, "max_pool_3x3"),
        Edge(2, 3, "skip_connect"), Edge(1, 3, "max_pool_3x3"),
        Edge(0, 4, "max_pool_3x3"), Edge(2, 4, "skip_connect"),
        Edge(2, 5, "skip_connect"), Edge(1, 5, "max_pool_3x3"),
    )
    assert all(c == normal for i, c in enumerate(g.cells) if i not in (6, 13))
    assert g.cells[13] == reduce


def test_other_named_genotypes_spot_checks():
    v1 = named_genotype("DARTS_V1", 8)
    assert v1.cells[0].edges[-1] == Edge(2, 5, "skip_connect")
    assert v1.cells[2].edges[-1] == Edge(0, 5, "avg_pool_3x3")
    pc = named_genotype("PC_DARTS", 8)
    assert pc.cells[0].edges[:2] == (Edge(1, 2, "sep_conv_3x3"), Edge(0, 2, "skip_connect"))
    assert pc.cells[5].edges[3] == Edge(2, 3, "sep_conv_5x5")
    pd = named_genotype("PDARTS", 8)
    assert pd.cells[0].edges[-1] == Edge(4, 5, "dil_conv_5x5")
    assert pd.cells[2].edges[:2] == (Edge(0, 2, "avg_pool_3x3"), Edge(1, 2, "sep_conv_5x5"))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("num_cells", [8, 15, 20])
def test_named_genotypes_validate(name, num_cells, tmp_path):
    g = named_genotype(name, num_cells)
    assert from_dict(to_dict(g), num_cells=num_cells) == g
    assert [i for i, c in enumerate(g.cells) if c.reduction] == list(reduction_indices(num_cells))
    normal, reduce = classic_pairs(name)
    for pairs in (normal, reduce):
        assert len(pairs) == 8
        assert all(op in PRIMITIVES and op != "zero" for op, _ in pairs)
    path = tmp_path / "g.json"
    write_genotype(path, g)
    assert read_genotype(path, num_cells=num_cells) == g


def test_unknown_name():
    with pytest.raises(GenotypeError) as info:
        named_genotype("DARTS_V3", 20)
    assert str(info.value) == ("genotype: name: unknown named genotype 'DARTS_V3' "
                               "(expected one of DARTS_V1, DARTS_V2, PC_DARTS, PDARTS)")


# ---------------------------------------------------------------- random genotypes


def test_random_argmax():
    g = random_genotype(15, seed=3)
    assert g == random_genotype(15, seed=3)
    assert g != random_genotype(15, seed=4)
    assert from_dict(to_dict(g), num_cells=15) == g
    assert g.source == {"method": "random", "seed": 3, "rule": "argmax"}
    assert [i for i, c in enumerate(g.cells) if c.reduction] == [4, 9]
    for cell in g.cells:
        assert tuple((e.source, e.target) for e in cell.edges) == EDGES
        assert all(e.weight is None for e in cell.edges)
    ops = [e.op for c in g.cells for e in c.edges]
    assert set(ops) == set(PRIMITIVES)  # 210 uniform draws cover all 8 ops, zero included
    assert len({c.edges for c in g.cells}) == 15  # cells are drawn independently


def test_random_top2():
    g = random_genotype(8, seed=0, rule="top2")
    assert g == random_genotype(8, seed=0, rule="top2")
    assert g != random_genotype(8, seed=1, rule="top2")
    assert from_dict(to_dict(g), num_cells=8) == g
    for cell in g.cells:
        assert len(cell.edges) == 8
        assert all(e.op != "zero" for e in cell.edges)
        for node in INTERMEDIATE_NODES:
            preds = [e.source for e in cell.edges if e.target == node]
            assert len(preds) == 2 and len(set(preds)) == 2
            assert all(0 <= p < node for p in preds)


def test_random_bad_rule():
    with pytest.raises(ValueError, match="rule"):
        random_genotype(8, seed=0, rule="top3")
