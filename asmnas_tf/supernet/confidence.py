"""How confident is a selection? Bootstrap over the selection samples.

Selection averages per-sample coefficients [N, L, 14, |O|] over the
selection split (paper §4.3). Per edge this module gives the mean of each op
with its standard error, the margin between the chosen op and the runner-up,
and the share of bootstrap resamples of the N samples (with replacement) in
which the chosen op is still the argmax; for the `top2` rule, the share in
which each node keeps the same two edges with the same ops.

DARTS's coefficients are one softmax(alpha) for every sample: no per-sample
spread, so no standard error or bootstrap figure (`per_sample` is False and
the confidences are None rather than a meaningless 1.0).
"""

import numpy as np

from asmnas_tf.names import CONFIDENT
from asmnas_tf.space.search_space import search_space
from asmnas_tf.supernet import selection



def _bootstrap_means(samples, resamples, seed, chunk=50):
    """[resamples, ...] means of `samples` [N, ...] over resampled rows (multinomial counts)."""
    n = samples.shape[0]
    flat = samples.reshape(n, -1).astype(np.float32)
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, chunk):
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, resamples - start)).astype(np.float32)
        means.append(counts @ flat / n)
    return np.concatenate(means).reshape(resamples, *samples.shape[1:])


def _top2_choice(cell_coefficients):
    """{target node: frozenset of (source, op)} of the top2 rule on one cell."""
    chosen = {}
    for edge in selection.select_genotype(cell_coefficients[None], "top2").cells[0].edges:
        chosen.setdefault(edge.target, set()).add((edge.source, edge.op))
    return {target: frozenset(pairs) for target, pairs in chosen.items()}


def selection_confidence(per_sample, resamples=1000, seed=0, rule="argmax"):
    """The confidence record of per-sample coefficients [N, L, 14, |O|].

    Returns a dict of numpy arrays: `mean`, `stderr` [L, 14, |O|]; `margin`
    [L, 14] (chosen minus runner-up mean coefficient); `argmax_confidence`
    [L, 14] (None without per-sample spread); with rule 'top2' also
    `top2_confidence` [L, 4] per intermediate node; and `per_sample`,
    `resamples`, `num_samples`.
    """
    samples = np.asarray(per_sample, np.float64)
    n = samples.shape[0]
    mean = samples.mean(axis=0)
    ordered = np.sort(mean, axis=-1)
    record = {
        "mean": mean,
        "stderr": samples.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(mean),
        "margin": ordered[..., -1] - ordered[..., -2],
        "per_sample": bool(n > 1 and np.any(np.ptp(samples, axis=0) > 0)),
        "resamples": resamples,
        "num_samples": n,
        "argmax_confidence": None,
        "top2_confidence": None,
    }
    if not record["per_sample"]:
        return record
    boot = _bootstrap_means(samples, resamples, seed)
    # A resample where the chosen op ties with others counts 1/(number tied):
    # two ops equal in every sample give 0.5, not the 1.0 of np.argmax's first index.
    is_max = boot >= boot.max(axis=-1, keepdims=True)
    chosen = np.argmax(mean, axis=-1)[None, ..., None]
    credit = np.take_along_axis(is_max, np.broadcast_to(chosen, is_max.shape[:-1] + (1,)), axis=-1)[..., 0]
    record["argmax_confidence"] = np.mean(credit / is_max.sum(axis=-1), axis=0)
    if rule == "top2":
        chosen = [_top2_choice(cell) for cell in mean]
        hits = np.zeros((mean.shape[0], len(search_space().intermediate_nodes)))
        for b in boot:
            for index, cell in enumerate(b):
                again = _top2_choice(cell)
                hits[index] += [again[t] == chosen[index][t] for t in search_space().intermediate_nodes]
        record["top2_confidence"] = hits / resamples
    return record


def summary_line(record, rule="argmax"):
    """One line for the end of a search: how many choices are >= 95% confident."""
    if not record["per_sample"]:
        return ("Selection confidence: not defined (one coefficient vector for every sample, as DARTS's "
                "softmax(alpha): no per-sample spread to resample)")
    values = record["top2_confidence"] if rule == "top2" else record["argmax_confidence"]
    what = "nodes' top2 choices" if rule == "top2" else "edges"
    confident = int(np.sum(values >= CONFIDENT))
    return (f"Selection confidence: {confident} of {values.size} {what} chosen with >= {CONFIDENT:.0%} bootstrap "
            f"confidence ({record['resamples']} resamples of {record['num_samples']} selection images; "
            f"median margin {np.median(record['margin']):.4f})")


def confidence_json(record):
    """The record as JSON-ready lists (rounded)."""
    out = {}
    for key, value in record.items():
        out[key] = np.round(value, 6).tolist() if isinstance(value, np.ndarray) else value
    return out
