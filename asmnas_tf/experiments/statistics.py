"""The comparison's statistics: can it tell a search from a coin toss?

Per method: mean, sample standard deviation (ddof = 1) and the 95%
confidence interval of the mean (Student's t, n - 1 degrees of freedom).
Against a baseline, by seed (seed s of both methods: the same data split
and training seed, so the differences are paired): mean difference, paired
t-test (`scipy.stats.ttest_rel`), Wilcoxon signed-rank test
(`scipy.stats.wilcoxon`), and the improvement over the random mean (Yang
et al. 2020, "NAS evaluation is frustratingly hard"). Across seeds of one
method: how much its genotypes agree (`genotype_stability`).
"""

import itertools

import numpy as np
from scipy import stats

from asmnas_tf.space.primitives import PRIMITIVES


def describe(values, level=0.95):
    """{n, mean, std, ci_low, ci_high} of `values` (std and interval None for one value)."""
    x = np.asarray(values, np.float64)
    n = len(x)
    out = {"n": n, "mean": float(x.mean()), "std": None, "ci_low": None, "ci_high": None}
    if n > 1:
        std = float(x.std(ddof=1))
        half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / np.sqrt(n)
        out.update(std=std, ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    return out


def paired(method_by_seed, baseline_by_seed):
    """Paired comparison over the seeds both have: {seeds, mean_difference, t_p, wilcoxon_p, ...}.

    `*_by_seed`: {seed: accuracy}. p-values are two-sided; None where the
    test is undefined (fewer than 2 pairs; Wilcoxon when every difference is 0).
    """
    seeds = sorted(set(method_by_seed) & set(baseline_by_seed))
    a = np.array([method_by_seed[s] for s in seeds], np.float64)
    b = np.array([baseline_by_seed[s] for s in seeds], np.float64)
    d = a - b
    out = {"seeds": seeds, "n": len(seeds), "mean_difference": float(d.mean()) if len(d) else None,
           "wins": int(np.sum(d > 0)), "losses": int(np.sum(d < 0)), "t_statistic": None, "t_p": None,
           "wilcoxon_statistic": None, "wilcoxon_p": None}
    if len(d) >= 2 and np.any(d != d[0]):
        t = stats.ttest_rel(a, b)
        out.update(t_statistic=float(t.statistic), t_p=float(t.pvalue))
    if len(d) >= 2 and np.any(d != 0):
        w = stats.wilcoxon(a, b)
        out.update(wilcoxon_statistic=float(w.statistic), wilcoxon_p=float(w.pvalue))
    return out


def genotype_ops(genotype_dict):
    """[L, |edges|] op indices of an argmax genotype's dict (`genotype.to_dict`), in its own space.

    An edge left out is `zero` (-1 in a space without zero).
    """
    from asmnas_tf.space.search_space import make_space

    space = make_space(tuple(genotype_dict.get("primitives", PRIMITIVES)), genotype_dict.get("nodes", 4))
    dropped = space.index("zero") if space.has_zero else -1
    cells = []
    for cell in genotype_dict["cells"]:
        kept = {(e["from"], e["to"]): space.index(e["op"]) for e in cell["edges"]}
        cells.append([kept.get(edge, dropped) for edge in space.edges])
    return np.array(cells)


def genotype_stability(genotype_dicts):
    """How much genotypes of one method agree across seeds.

    {"all_agree": share of edges with the same op in every genotype,
     "all_agree_per_cell": [L], "pairwise": mean over pairs of the share of
     edges with the same op, "pairs": number of pairs}. Chance for two
     uniform argmax genotypes: 1/8 pairwise.
    """
    ops = np.stack([genotype_ops(g) for g in genotype_dicts])  # [runs, L, 14]
    same = np.all(ops == ops[:1], axis=0)
    pairs = [float(np.mean(a == b)) for a, b in itertools.combinations(ops, 2)]
    return {"all_agree": float(same.mean()), "all_agree_per_cell": same.mean(axis=1).round(4).tolist(),
            "pairwise": float(np.mean(pairs)) if pairs else None, "pairs": len(pairs), "runs": len(ops)}
