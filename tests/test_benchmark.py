"""The ground-truth benchmark: its space, its table file and reader, its builder, its statistics."""

import json
import os

import numpy as np
import pytest
from scipy import stats

from asmnas_tf.benchmark import build as bench_build
from asmnas_tf.benchmark import fidelity
from asmnas_tf.benchmark.recipe import RECIPE
from asmnas_tf.benchmark.space import (BENCH_SPACE, all_architectures, architecture_of, check_code,
                                       genotype_of)
from asmnas_tf.benchmark.table import BenchmarkError, header, load_table, read_part
from asmnas_tf.errors import UserError
from asmnas_tf.space.genotype import from_dict, to_dict
from asmnas_tf.space.search_space import make_space
from asmnas_tf.supernet.selection import select_genotype


def test_space_has_243_architectures_that_round_trip():
    codes = all_architectures()
    assert len(codes) == 243 == len(set(codes))
    for code in codes:
        genotype = genotype_of(code, 3)
        assert [cell.reduction for cell in genotype.cells] == [True, True, False]
        assert architecture_of(from_dict(to_dict(genotype))) == code


def test_a_top2_pick_is_the_row_with_zero_on_its_dropped_edge():
    mean = np.zeros((3, 5, 3))
    mean[:, :, 2] = [0.5, 0.4, 0.3, 0.9, 0.8]  # sep everywhere; node 3 keeps 1->3 and 2->3
    mean[:, 2, 1] = 0.6  # 0->3: skip's 0.6 is its best non-zero op, third into node 3
    assert architecture_of(select_genotype(mean, "argmax", space=BENCH_SPACE)) == "22122"
    assert architecture_of(select_genotype(mean, "top2", space=BENCH_SPACE)) == "22022"


def test_codes_and_genotypes_of_another_space_are_refused():
    with pytest.raises(UserError, match=r"architecture='2212' is not a code of the benchmark's space \(expected 5"):
        check_code("2212")
    with pytest.raises(UserError, match="architecture='22123'"):
        check_code("22123")
    other = genotype_of("00000", 3, make_space(("zero", "skip_connect", "max_pool_3x3"), 2))
    with pytest.raises(UserError, match="cannot be scored on the benchmark"):
        architecture_of(other)


def _write_part(path, rows, head=None):
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(head or header()) + "\n")
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _row(code, seed, final, curve=None):
    curve = curve or [final - 0.04, final - 0.03, final - 0.02, final - 0.01, final]
    return {"architecture": code, "seed": seed, "accuracy": curve, "train_loss": [1.0] * 5, "seconds": 1.0}


def test_table_reads_parts_and_scores_by_hand(tmp_path):
    _write_part(tmp_path / "part-0-of-2.jsonl", [_row("22222", 0, 0.90), _row("00000", 0, 0.10)])
    _write_part(tmp_path / "part-1-of-2.jsonl", [_row("11111", 0, 0.80), _row("12121", 0, 0.80),
                                                  _row("22222", 1, 0.88)])
    with open(tmp_path / "part-1-of-2.jsonl", "a") as f:
        f.write('{"architecture": "21212", "seed": 0, "accur')  # a row cut short by a stop
    table = load_table(str(tmp_path))
    assert table.architectures() == ["00000", "11111", "12121", "22222"]
    assert table.accuracy("22222") == 0.90 and table.accuracy("22222", seed=1) == 0.88
    assert table.accuracy("22222", budget=7680) == pytest.approx(0.87)
    # Percentile among the 4, ties half: 11111 beats 00000 and ties 12121: (1 + 0.5) / 3.
    assert table.percentile("11111") == pytest.approx(100 * 1.5 / 3)
    assert table.percentile("22222") == pytest.approx(100.0)
    assert table.percentile("00000") == pytest.approx(0.0)
    assert table.regret("11111") == pytest.approx(0.10)
    with pytest.raises(BenchmarkError, match="architecture 21212 \\(seed 0\\) is not in the table yet \\(4 of 243"):
        table.accuracy("21212")


def test_table_of_another_space_or_recipe_is_refused(tmp_path):
    other_space = make_space(("zero", "skip_connect", "max_pool_3x3"), 2)
    _write_part(tmp_path / "a.jsonl", [], header(other_space))
    with pytest.raises(BenchmarkError) as info:
        load_table(str(tmp_path / "a.jsonl"))
    assert "a.jsonl: a table of the space {'primitives': ['zero', 'skip_connect', 'max_pool_3x3']" in str(info.value)
    _write_part(tmp_path / "b.jsonl", [], header(recipe=dict(RECIPE, channels=16)))
    with pytest.raises(BenchmarkError, match=r"b.jsonl: a table of another recipe \(channels differ"):
        load_table(str(tmp_path / "b.jsonl"))
    (tmp_path / "c.jsonl").write_text('{"format": "x"}\n')
    with pytest.raises(BenchmarkError, match="c.jsonl: line 1: not a benchmark header"):
        load_table(str(tmp_path / "c.jsonl"))


def test_jobs_cover_the_space_with_a_quarter_twice():
    jobs = bench_build.jobs()
    assert sorted(code for code, seed in jobs if seed == 0) == sorted(all_architectures())
    assert sum(1 for _, seed in jobs if seed == 1) == 61  # ceil(243 / 4)
    assert bench_build.parse_shard("1/2") == (1, 2)
    for bad in ("2/2", "x", "1/0"):
        with pytest.raises(UserError, match="--shard="):
            bench_build.parse_shard(bad)


def test_build_resumes_where_it_stopped(tmp_path):
    """Shard 1/40's rows: a first run of 2, then the rest; a cut last line is removed, nothing trained twice."""
    trained = []

    def train(code, seed):
        trained.append((code, seed))
        value = int(code, 3) / 243
        return {"accuracy": [value] * 5, "train_loss": [0.0] * 5, "seconds": 0.0}

    path = bench_build.build(str(tmp_path), (1, 40), train, log=lambda line: None, limit=2)
    with open(path, "a") as f:
        f.write('{"architecture": "0')
    bench_build.build(str(tmp_path), (1, 40), train, log=lambda line: None)
    mine = [job for k, job in enumerate(bench_build.jobs()) if k % 40 == 1]
    assert trained == mine
    table = load_table(str(tmp_path))
    assert sorted(table.rows) == sorted(mine)
    assert open(path).read().endswith("}\n")


def test_build_trains_the_first_architectures_first_and_the_same_rows(tmp_path):
    mine = [job for k, job in enumerate(bench_build.jobs()) if k % 40 == 1]
    first = bench_build.parse_first(f"{mine[4][0]}, {mine[2][0]}")
    trained = []

    def train(code, seed):
        trained.append((code, seed))
        return {"accuracy": [0.5] * 5, "train_loss": [0.0] * 5, "seconds": 0.0}

    bench_build.build(str(tmp_path), (1, 40), train, log=lambda line: None, first=first)
    picked = [job for job in mine if job[0] in first]  # in the fixed order, each seed of them
    assert trained == picked + [job for job in mine if job[0] not in first]
    assert sorted(load_table(str(tmp_path)).rows) == sorted(mine)
    for bad in ("1212", "12123", "a"):
        with pytest.raises(UserError, match=f"--first: '{bad}' is not an architecture of the benchmark's space"):
            bench_build.parse_first(f"00000,{bad}")
    assert bench_build.parse_first("") == ()


def test_fidelity_equals_scipy_and_numpy(tmp_path):
    rng = np.random.default_rng(0)
    codes = list(all_architectures())[:40]
    finals = rng.uniform(0.5, 0.9, len(codes))
    early = finals + rng.normal(0, 0.05, len(codes))
    rows = [_row(c, 0, f, [e, e, e, e, f]) for c, f, e in zip(codes, finals, early)]
    second = finals[:10] + rng.normal(0, 0.01, 10)
    rows += [_row(c, 1, s) for c, s in zip(codes[:10], second)]
    _write_part(tmp_path / "p.jsonl", rows)
    record = fidelity.summary(load_table(str(tmp_path)))
    order = np.argsort(codes)
    f_sorted, e_sorted = finals[order], early[order]
    assert record["tau_to_final"][0]["all"] == pytest.approx(stats.kendalltau(e_sorted, f_sorted).statistic)
    assert record["tau_to_final"][-1]["all"] == pytest.approx(1.0)
    top = f_sorted >= np.percentile(f_sorted, 80)
    assert record["tau_to_final"][0]["top20"] == pytest.approx(
        stats.kendalltau(e_sorted[top], f_sorted[top]).statistic)
    assert record["seed_noise_std"] == pytest.approx(np.std(finals[:10] - second, ddof=1) / np.sqrt(2))
    p10, p90 = np.percentile(finals, [10, 90])
    assert record["spread_p10_p90"] == pytest.approx(p90 - p10)
    assert record["spread_over_noise"] == pytest.approx((p90 - p10) / record["seed_noise_std"])
    assert "tau to final" in fidelity.summary_text(record)


@pytest.mark.slow
def test_one_architecture_trains_with_the_recipe_on_real_data():
    """Tiny budgets of the real recipe on Fashion-MNIST: a curve per budget, the parameter count of its network."""
    from asmnas_tf.benchmark.train_one import prepared_arrays, train_architecture
    from asmnas_tf.data.sources import load_fashion_mnist_idx

    recipe = dict(RECIPE, train_images=4096, test_images=500, budgets=[1024, 4096])
    data = prepared_arrays(load_fashion_mnist_idx("/usr/share/datasets/fashion-mnist"), recipe)
    assert data[0].shape == (4096, 28, 28, 1)
    assert abs(float(data[0].mean())) < 1e-4 and float(data[0].std()) == pytest.approx(1.0, abs=1e-4)
    figures = train_architecture("21012", 0, recipe, data)
    assert len(figures["accuracy"]) == 2 and all(0.0 <= a <= 1.0 for a in figures["accuracy"])
    assert figures["accuracy"][-1] > 0.4  # 32 steps learn something of 10 classes (chance: 0.1)
    again = train_architecture("21012", 0, recipe, data)
    assert again["parameters"] == figures["parameters"]
    assert again["accuracy"] == figures["accuracy"]  # one seed, one result
    assert os.path.exists("/usr/share/datasets/fashion-mnist")


def test_the_shipped_table_reads_and_holds_only_planned_rows():
    """The table in the package (complete or still being built) is of this space and recipe, row for row."""
    from asmnas_tf.benchmark.table import DEFAULT_TABLE

    table = load_table(DEFAULT_TABLE)
    planned = set(bench_build.jobs())
    assert table.rows and set(table.rows) <= planned
    for (code, seed), row in table.rows.items():
        assert len(row["accuracy"]) == len(RECIPE["budgets"]) and all(0.0 <= a <= 1.0 for a in row["accuracy"])
        assert row["parameters"] > 0 and row["seconds"] > 0
    # Each part holds only its own shard's jobs.
    for index in range(2):
        part = os.path.join(DEFAULT_TABLE, f"part-{index}-of-2.jsonl")
        mine = {job for k, job in enumerate(bench_build.jobs()) if k % 2 == index}
        rows = [json.loads(line) for line in open(part).read().split("\n")[1:-1]]  # complete lines only
        assert {(r["architecture"], r["seed"]) for r in rows} <= mine


POOL_WORKER = """
import json, sys, time
from asmnas_tf.benchmark import build
def train(code, seed):
    time.sleep(0.01)
    return {"accuracy": [int(code, 3) / 243] * 5, "train_loss": [0.0] * 5, "seconds": 0.0}
build.build_pool(sys.argv[1], train, log=lambda line: None, limit=int(sys.argv[2]), worker=sys.argv[3])
"""


def test_a_pool_of_build_processes_trains_each_job_once(tmp_path):
    import subprocess
    import sys

    workers = [subprocess.Popen([sys.executable, "-c", POOL_WORKER, str(tmp_path), "12", f"w{k}"])
               for k in range(3)]
    assert [w.wait(timeout=300) for w in workers] == [0, 0, 0]
    rows = [row for k in range(3) for row in read_part(str(tmp_path / f"part-pool-w{k}.jsonl"))[1]]
    jobs = [(row["architecture"], row["seed"]) for row in rows]
    assert len(jobs) == len(set(jobs)) == 36  # 3 workers x 12, none trained twice
    assert set(jobs) == set(bench_build.jobs()[:36])  # the first 36 of the fixed order: each taken once
    table = load_table(str(tmp_path))
    assert len(table.rows) == 36
    for code, seed in jobs:
        assert table.accuracy(code, seed=seed) == pytest.approx(int(code, 3) / 243)
