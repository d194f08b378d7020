"""Scoring searches against the benchmark: the statistics by hand, the resumable results file."""

import json
import os

import numpy as np
import pytest
from scipy import stats

from asmnas_tf.benchmark import scoring
from asmnas_tf.benchmark.space import all_architectures
from asmnas_tf.benchmark.table import header, load_table
from asmnas_tf.errors import UserError


def _table(tmp_path):
    codes = list(all_architectures())
    path = tmp_path / "table" / "part-0-of-1.jsonl"
    path.parent.mkdir()
    finals = np.linspace(0.5, 0.9, len(codes))
    with open(path, "w") as f:
        f.write(json.dumps(header()) + "\n")
        for code, final in zip(codes, finals):
            f.write(json.dumps({"architecture": code, "seed": 0, "accuracy": [float(final)] * 5}) + "\n")
    return str(path.parent), dict(zip(codes, finals))


def test_random_variant_scores_and_resumes(tmp_path):
    table, finals = _table(tmp_path)
    record = scoring.run_score(str(tmp_path / "run"), variants=("random",), seeds=3, table=table)
    assert [r["seed"] for r in scoring.read_scores(str(tmp_path / "run" / scoring.SCORES_FILE))] == [0, 1, 2]
    table_now = load_table(table)
    rows = [scoring.score_row(table_now, pick) for pick in scoring.read_scores(str(tmp_path / "run" / scoring.SCORES_FILE))]
    ranks = {code: i for i, code in enumerate(sorted(finals, key=finals.get))}
    for row in rows:
        assert row["architecture"] == scoring.random_pick(row["seed"])
        assert row["accuracy"] == pytest.approx(finals[row["architecture"]])
        assert row["percentile"] == pytest.approx(100 * ranks[row["architecture"]] / 242, abs=1e-3)
        assert row["regret"] == pytest.approx(0.9 - finals[row["architecture"]], abs=1e-6)
    assert record["variants"]["random"]["seeds"] == 3
    scoring.run_score(str(tmp_path / "run"), variants=("random",), seeds=4, table=table)
    assert len(scoring.read_scores(str(tmp_path / "run" / scoring.SCORES_FILE))) == 4  # 3 kept, 1 new
    assert (tmp_path / "run" / "scores.png").stat().st_size > 1000


def test_a_pick_the_table_lacks_is_pending(tmp_path):
    table, finals = _table(tmp_path)
    part = os.path.join(table, "part-0-of-1.jsonl")
    lines = open(part).read().splitlines(keepends=True)
    missing = scoring.random_pick(1)
    open(part, "w").write("".join(line for line in lines if f'"{missing}"' not in line))
    record = scoring.run_score(str(tmp_path / "run"), variants=("random",), seeds=2, table=table)
    assert record["variants"]["random"]["seeds"] == 1
    assert [(p["seed"], p["architecture"]) for p in record["pending"]] == [(1, missing)]
    assert f"random/1 {missing}" in (tmp_path / "run" / "scores.md").read_text()


def test_summary_equals_scipy():
    rows = []
    a = [80.0, 90.0, 70.0, 95.0]
    b = [40.0, 55.0, 60.0, 30.0]
    for seed, (pa, pb) in enumerate(zip(a, b)):
        rows.append({"variant": "x", "seed": seed, "architecture": ["22222", "22122", "22222", "22220"][seed],
                     "accuracy": pa / 100, "percentile": pa, "regret": 1 - pa / 100, "search_wall_s": 10.0})
        rows.append({"variant": "random", "seed": seed, "architecture": "00000", "accuracy": pb / 100,
                     "percentile": pb, "regret": 1 - pb / 100, "search_wall_s": 0.0})
    record = scoring.summarize(rows, ("x", "random"))
    x = record["variants"]["x"]
    assert x["percentile"] == pytest.approx(np.mean(a))
    low, high = stats.t.interval(0.95, 3, loc=np.mean(a), scale=stats.sem(a))
    assert x["percentile_95"] == pytest.approx((low, high))
    assert x["p_above_50"] == pytest.approx(stats.ttest_1samp(a, 50, alternative="greater").pvalue)
    # Edge agreement over the 6 pairs of picks: 22222/22122 4 of 5, 22222/22222 5, 22222/22220 4, ...
    picks = ["22222", "22122", "22222", "22220"]
    pairs = [(p, q) for i, p in enumerate(picks) for q in picks[i + 1:]]
    assert x["agreement"] == pytest.approx(np.mean([np.mean([c == d for c, d in zip(p, q)]) for p, q in pairs]))
    assert record["variants"]["random"]["agreement"] == 1.0
    paired = record["paired"][0]
    assert paired["mean_difference"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert paired["p"] == pytest.approx(stats.wilcoxon(np.subtract(a, b)).pvalue)
    assert "| x | 4 |" in scoring.summary_markdown(record)
    same = [dict(row, variant="y", percentile=90.0) for row in rows if row["variant"] == "x"]
    assert scoring.summarize(same, ("y",))["variants"]["y"]["p_above_50"] is None  # no spread: no test


def test_report_scores_the_kept_picks_again_without_a_search(tmp_path):
    table, finals = _table(tmp_path)
    scoring.run_score(str(tmp_path / "run"), variants=("random",), seeds=2, table=table)
    (tmp_path / "run" / "scores.md").unlink()
    record = scoring.report(str(tmp_path / "run"), ("random",), table)
    assert record["variants"]["random"]["seeds"] == 2 and (tmp_path / "run" / "scores.md").exists()
    with pytest.raises(UserError, match="no scores.jsonl with picks to report"):
        scoring.report(str(tmp_path / "empty"), ("random",), table)


@pytest.mark.parametrize("variants, seeds, message", [
    (("asm", "nas_bench"), 8, "run_score.variants=['asm', 'nas_bench']: expected names among asm,"),
    ((), 8, "run_score.variants=[]"),
    (("asm",), 1, "run_score.seeds=1 is not an int >= 2"),
])
def test_bad_score_arguments_are_one_line(tmp_path, variants, seeds, message):
    with pytest.raises(UserError) as info:
        scoring.run_score(str(tmp_path / "run"), variants=variants, seeds=seeds)
    assert message in str(info.value)
    assert not (tmp_path / "run").exists()


def test_workers_share_a_scoring_directory(tmp_path):
    """A claimed task is left to its holder; four real processes write each pick exactly once."""
    import subprocess
    import sys

    from asmnas_tf.experiments import task_pool

    table, _ = _table(tmp_path)
    run = str(tmp_path / "run")
    with task_pool.claim(run, "random-1") as mine:
        assert mine
        scoring.run_score(run, variants=("random",), seeds=3, table=table)
    assert sorted(r["seed"] for r in scoring.read_scores(os.path.join(run, scoring.SCORES_FILE))) == [0, 2]
    shared = str(tmp_path / "shared")
    code = ("import sys; from asmnas_tf.benchmark import scoring; "
            f"scoring.run_score({shared!r}, variants=('random',), seeds=40, table={table!r}, "
            "task_index=int(sys.argv[1]) % 2, num_tasks=2)")
    workers = [subprocess.Popen([sys.executable, "-c", code, str(i)], stdout=subprocess.DEVNULL)
               for i in range(4)]
    assert [w.wait(timeout=300) for w in workers] == [0, 0, 0, 0]
    picks = scoring.read_scores(os.path.join(shared, scoring.SCORES_FILE))
    assert sorted(p["seed"] for p in picks) == list(range(40))
    assert all(p["architecture"] == scoring.random_pick(p["seed"]) for p in picks)


def test_score_refuses_a_bad_share(tmp_path):
    table, _ = _table(tmp_path)
    with pytest.raises(UserError, match="expected 0 <= task_index < num_tasks"):
        scoring.run_score(str(tmp_path / "run"), variants=("random",), seeds=2, table=table, task_index=2,
                          num_tasks=2)
    assert not (tmp_path / "run").exists()
