"""A tiny smoke run of bench/step_bench.py (the benchmark itself never runs in CI)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

STEP_BENCH = os.path.join(REPO_ROOT, "bench", "step_bench.py")
TINY = ["--num_cells=2", "--channels=4", "--batch=8", "--image_size=8", "--image_channels=1", "--steps=2"]


def _bench(tmp_path, *args):
    results = tmp_path / "results.jsonl"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, STEP_BENCH, *TINY, *args, f"--results={results}"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(rows) == 1
    return rows[0], done.stdout


@pytest.mark.slow
def test_step_bench_asm_and_darts2_rows(tmp_path):
    from asmnas_tf.supernet.builder import build_supernet

    asm, printed = _bench(tmp_path / "asm")
    expected = build_supernet((8, 8, 1), 10, num_cells=2, channels=4)
    assert asm["params"] == expected.count_params()
    assert asm["trainable_tensors"] == len(expected.trainable_weights)
    assert asm["images_per_s"] == pytest.approx(8 / asm["steady_step_s"], rel=0.01)
    assert asm["first_step_s"] > asm["steady_step_s"] > 0  # the first step traces the graph
    assert asm["peak_rss_gb"] >= asm["peak_rss_first_step_gb"] > 0
    assert (asm["edge_graph"], asm["lean_grappler"], asm["precision"]) == ("function", True, "float32")
    assert "| supernet | 2 | 4 | 8 | 8x8x1 | asm |" in printed

    darts, _ = _bench(tmp_path / "darts2", "--method=darts2")
    # An iteration is the architecture step and then the weight step.
    assert darts["steady_step_s"] == pytest.approx(darts["architecture_step_s"] + darts["weight_step_s"], abs=2e-4)
    assert darts["architecture_step_s"] > 0 and darts["weight_step_s"] > 0
    # The DARTS supernet: alpha instead of the attention modules.
    assert darts["params"] == build_supernet((8, 8, 1), 10, num_cells=2, channels=4, mixing="alpha").count_params()
    assert darts["params"] < asm["params"]
