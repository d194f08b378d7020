"""What the table says about itself: spread against seed noise, and how well cheap budgets rank."""

import numpy as np
from scipy import stats


def _tau(a, b):
    if len(a) < 3:
        return None
    return float(stats.kendalltau(a, b).statistic)


def summary(table):
    """Spread, noise and Kendall tau per budget of `table` (seed 0; seed 1 for the noise)."""
    codes = table.architectures(0)
    final = np.array([table.accuracy(c) for c in codes])
    result = {"architectures": len(codes), "budgets": table.budgets}
    if not codes:
        return result
    p10, p50, p90 = np.percentile(final, [10, 50, 90])
    result.update({"final_p10": float(p10), "final_median": float(p50), "final_p90": float(p90),
                   "final_best": float(final.max()), "spread_p10_p90": float(p90 - p10)})
    both = [c for c in codes if (c, 1) in table.rows]
    if both:
        a = np.array([table.accuracy(c, seed=0) for c in both])
        b = np.array([table.accuracy(c, seed=1) for c in both])
        # One run's noise: the std of a seed-to-seed difference over sqrt(2).
        noise = float(np.std(a - b, ddof=1) / np.sqrt(2)) if len(both) > 1 else None
        result.update({"two_seeds": len(both), "seed_noise_std": noise,
                       "mean_abs_seed_difference": float(np.mean(np.abs(a - b))), "tau_between_seeds": _tau(a, b),
                       "spread_over_noise": None if not noise else float((p90 - p10) / noise)})
    top = final >= np.percentile(final, 80)
    result["tau_to_final"] = []
    for budget in table.budgets:
        early = np.array([table.accuracy(c, budget) for c in codes])
        result["tau_to_final"].append({"budget": budget, "all": _tau(early, final),
                                       "top20": _tau(early[top], final[top])})
    return result


def _f(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def summary_text(record):
    lines = [f"architectures (seed 0): {record['architectures']}"]
    if record["architectures"] == 0:
        return lines[0]
    lines.append(f"final accuracy: p10 {record['final_p10']:.4f}, median {record['final_median']:.4f}, "
                 f"p90 {record['final_p90']:.4f}, best {record['final_best']:.4f}; "
                 f"spread p10-p90 {record['spread_p10_p90']:.4f}")
    if "two_seeds" in record:
        noise = record["seed_noise_std"]
        lines.append(f"two seeds: {record['two_seeds']} architectures; one run's noise (std) "
                     f"{noise if noise is None else round(noise, 4)}; mean |difference| "
                     f"{record['mean_abs_seed_difference']:.4f}; tau between seeds {_f(record['tau_between_seeds'])}; "
                     f"spread / noise {_f(record['spread_over_noise'], 1)}")
    for row in record["tau_to_final"]:
        lines.append(f"budget {row['budget']:>6} images: tau to final {_f(row['all'])}, top 20% {_f(row['top20'])}")
    return "\n".join(lines)
