"""RunDir is the one owner of a run directory's file names, and their one reader and writer."""

import ast
import os
import pathlib

import numpy as np
import pytest

import asmnas_tf
from asmnas_tf.rundir import run_dir as rd
from asmnas_tf.space.search_space import DARTS_SPACE
from asmnas_tf.supernet.selection import select_genotype

PACKAGE = pathlib.Path(asmnas_tf.__file__).parent
FILE_NAMES = {value for name, value in vars(rd).items()
              if name.endswith("_FILE") and isinstance(value, str) and "." in value}


def _code_strings(path):
    """The string literals of a module that are not docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_module_but_run_dir_spells_a_file_name():
    assert {"genotype.json", "attention.json", "results.json", "pipeline.json", "history.csv"} <= FILE_NAMES
    spelled = [f"{path.relative_to(PACKAGE)}:{line} {value!r}"
               for path in sorted(PACKAGE.rglob("*.py")) if path.name != "run_dir.py"
               for line, value in _code_strings(path) if value in FILE_NAMES]
    assert spelled == []


def test_json_records_round_trip_whole_and_read_none_before_they_exist(tmp_path):
    run = rd.RunDir(tmp_path)
    for read, write, record in [(run.read_results, run.write_results, {"test_accuracy": 0.9312, "num_test": 10000}),
                                (run.read_timing, run.write_timing, {"wall_s": 12.5, "steps": [1, 2]}),
                                (run.read_diagnostics, run.write_diagnostics, {"lines": ["a"], "mean_abs_drift": 1e-4}),
                                (run.read_pipeline, run.write_pipeline, {"total_s": 3.0}),
                                (run.read_size, run.write_size, {"params": 123}),
                                (run.read_rsps, run.write_rsps, {"best": 3})]:
        assert read() is None
        write(record)
        assert read() == record
    assert sorted(os.listdir(tmp_path)) == sorted(["results.json", "timing.json", "diagnostics.json",
                                                   "pipeline.json", "size.json", "rsps.json"])  # no temporaries left
    assert run.search.genotype_path == os.path.join(str(tmp_path), "search", "genotype.json")
    assert run.train.saved_model == os.path.join(str(tmp_path), "train", "saved_model")


def test_genotype_and_attention_round_trip(tmp_path):
    coeffs = np.random.default_rng(3).dirichlet(np.ones(8), size=(8, 14))
    run = rd.RunDir(tmp_path)
    genotype = select_genotype(coeffs, "argmax", {"method": "asm"}, DARTS_SPACE)
    run.write_genotype(genotype)
    assert run.read_genotype() == genotype
    run.write_attention(coeffs, 77, initial=True)
    record = run.read_attention(initial=True)
    np.testing.assert_allclose(record.coefficients, coeffs, atol=5e-9)
    assert (record.num_samples, record.reductions, record.primitives) == (77, [2, 5], DARTS_SPACE.primitives)
    assert run.read_attention() is None  # the final one is another file
    (tmp_path / "attention.json").write_text('{"cells": 3}')
    with pytest.raises(asmnas_tf.UserError, match="not an attention.json record"):
        run.read_attention()
