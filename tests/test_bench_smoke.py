"""A smoke run of bench/gpu.sh on this CPU: every step_bench row at tiny sizes (the benchmarks never run in CI)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT


@pytest.mark.slow
def test_gpu_script_smoke_prints_every_row_and_the_projection(tmp_path):
    """bench/gpu.sh --smoke: its twelve step_bench rows at tiny sizes on this CPU, the table, the projection."""
    from asmnas_tf.supernet.builder import build_supernet

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", OUT=str(tmp_path), PY=sys.executable)
    done = subprocess.run(["bash", os.path.join(REPO_ROOT, "bench", "gpu.sh"), "--smoke"], capture_output=True,
                          text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "gpu.jsonl").read_text().splitlines()]
    assert [r.get("failed") for r in rows] == [None] * 12
    kinds = [(r["network"].split(":")[0], r["method"], r["precision"], r["xla"]) for r in rows]
    assert kinds == [
        ("supernet", "asm", "float32", False), ("supernet", "asm", "mixed_float16", False),
        ("supernet", "uniform", "float32", False), ("supernet", "darts1", "float32", False),
        ("supernet", "darts2", "float32", False), ("eval", "asm", "float32", False),
        ("eval", "asm", "mixed_float16", False), ("supernet", "asm", "float32", True),
        ("supernet", "asm", "mixed_float16", True), ("supernet", "asm", "mixed_bfloat16", False),
        ("eval", "asm", "float32", True), ("eval", "asm", "float32", False)]
    asm = rows[0]
    expected = build_supernet((8, 8, 3), 10, num_cells=1, channels=4)
    assert asm["params"] == expected.count_params()
    assert asm["trainable_tensors"] == len(expected.trainable_weights)
    assert asm["images_per_s"] == pytest.approx(8 / asm["steady_step_s"], rel=0.01)
    assert asm["first_step_s"] > asm["steady_step_s"] > 0  # the first step traces the graph
    assert asm["peak_rss_gb"] >= asm["peak_rss_first_step_gb"] > 0
    assert (asm["edge_graph"], asm["lean_grappler"]) == ("function", True)
    darts = rows[4]
    # An iteration is the architecture step and then the weight step.
    assert darts["steady_step_s"] == pytest.approx(darts["architecture_step_s"] + darts["weight_step_s"], abs=2e-4)
    assert darts["params"] == build_supernet((8, 8, 3), 10, num_cells=1, channels=4, mixing="alpha").count_params()
    table = (tmp_path / "table.md").read_text().splitlines()
    assert len(table) == 2 + 12 + 2 and table[2].startswith("| supernet | 1 | 4 | 8 | asm | float32 | False |")
    fastest = min(r["steady_step_s"] for r in rows if r["network"] == "supernet" and r["method"] == "asm")
    hours = 30 * (25000 // 64) * fastest * 64 / 8 / 3600
    assert f": {hours:.2f} h (goal <= 1.5 h" in table[-1]
    assert table[-1] in done.stdout


def test_graph_probe_profile_sums_the_executed_ops_by_type(tmp_path):
    """graph_probe.py --profile_steps: the ops the profiler saw, by type, in ms a step.

    Uniform mixing against ASM on one tiny supernet: the fused attention kernels appear
    only with attention, both profiles hold the convolutions
    every edge runs, and the ops counted per step do not depend on the steps profiled.
    """
    results = tmp_path / "probe.jsonl"
    for mixing, steps in (("attention", 2), ("uniform", 2), ("attention", 1)):
        done = subprocess.run(
            [sys.executable, os.path.join(REPO_ROOT, "bench", "graph_probe.py"), "--what=step", "--num_cells=1",
             "--channels=4", "--batch=4", "--image_size=8", f"--mixing={mixing}", f"--profile_steps={steps}",
             "--top=200", f"--results={results}"],
            capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    attention, uniform, attention_one_step = (json.loads(line) for line in results.read_text().splitlines())
    # Every step executes the same graph: the ops counted per step do not depend on how many were profiled
    # (a sum not divided by the steps, or events lost at the profile's edges, would differ).
    assert attention["profile"]["ops_per_step"] == attention_one_step["profile"]["ops_per_step"] > 0
    assert (attention["mixing"], uniform["mixing"]) == ("attention", "uniform")
    for row in (attention, uniform):
        by_type = dict(row["profile"]["top"])
        assert row["profile"]["total_ms"] == pytest.approx(sum(by_type.values()), abs=0.05 * len(by_type))
        assert all(ms >= 0 for ms in by_type.values())
        assert any("Conv2D" in op for op in by_type) and any("DepthwiseConv2dNative" in op for op in by_type)
        assert not any(op in ("Process", "Run") or op.startswith("__inference") for op in by_type)
    # Eq. 4.2-4.5 and their backward: the fused kernels (the set-up built them), in the attention
    # step only; T1..T4's own ops (the softmax, the sigmoid's gradient) in neither step.
    def attention_ops(row):
        return sorted(op for op in dict(row["profile"]["top"])
                      if op.startswith("AsmAttend") or op.endswith("Softmax") or op == "SigmoidGrad")

    assert attention_ops(attention) == ["AsmAttendBackward", "AsmAttendForward"]
    assert attention_ops(uniform) == []
    assert attention["ops"] > uniform["ops"]
