"""Does the attention learn? Figures on mean coefficients [L, 14, |O|].

Pure numpy, so a run directory can be read again anywhere. The figures:

- agreement: the share of edges whose argmax op is the same in two sets of
  coefficients (init vs final, seed vs seed; 1/|O| = 0.125 is chance);
- drift: the mean absolute change of the coefficients (init vs final);
- normalised entropy: the coefficients' entropy over the ops / log |O|, the
  mean over edges (1.0: uniform; eq. 4.5's sigmoid bounds a coefficient
  to [0.050, 0.280] for 8 ops, so it cannot go far below 0.9);
- parameter-free share: the share of edges whose argmax is zero, a pool or
  skip_connect, DARTS's collapse indicator (Zela et al. 2020).
"""

import numpy as np

from asmnas_tf.space.op_table import parameter_free
from asmnas_tf.space.search_space import DARTS_PRIMITIVES, search_space

# The DARTS space's parameter-free ops (the op table's `parameter_free`).
PARAMETER_FREE = parameter_free(DARTS_PRIMITIVES)


def argmax_ops(mean_coeffs):
    """The argmax op index of every edge: [L, 14] ints."""
    return np.argmax(np.asarray(mean_coeffs), axis=-1)


def argmax_agreement(coeffs_a, coeffs_b):
    """Share of edges with the same argmax op in both."""
    return float(np.mean(argmax_ops(coeffs_a) == argmax_ops(coeffs_b)))


def changed_edges(coeffs_a, coeffs_b):
    """How many edges changed their argmax op from a to b."""
    return int(np.sum(argmax_ops(coeffs_a) != argmax_ops(coeffs_b)))


def mean_abs_drift(initial, final):
    """Mean |a_final - a_initial| over every (cell, edge, op)."""
    return float(np.mean(np.abs(np.asarray(final, np.float64) - np.asarray(initial, np.float64))))


def normalized_entropy(mean_coeffs):
    """Mean over edges of H(a) / log |O|, with 0 log 0 = 0."""
    p = np.asarray(mean_coeffs, np.float64)
    p = p / p.sum(axis=-1, keepdims=True)
    terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return float(np.mean(terms.sum(axis=-1) / np.log(p.shape[-1])))


def parameter_free_share(mean_coeffs, space=None):
    """Share of edges whose argmax op has no parameters (zero, pools, skip: the op table's rows)."""
    space = search_space() if space is None else space
    return float(np.mean(np.isin(argmax_ops(mean_coeffs), space.parameter_free_indices())))


def pairwise_agreement(coefficient_sets):
    """Mean over pairs of runs of `argmax_agreement` (their coefficients, or argmax arrays via ops)."""
    sets = list(coefficient_sets)
    values = [argmax_agreement(sets[i], sets[j]) for i in range(len(sets)) for j in range(i + 1, len(sets))]
    return float(np.mean(values)) if values else None


def epoch_figures(mean_coeffs, previous, space=None):
    """The per-epoch telemetry of one selection (history.csv columns)."""
    return {
        "coefficient_entropy": normalized_entropy(mean_coeffs),
        "parameter_free_share": parameter_free_share(mean_coeffs, space),
        "argmax_changes": changed_edges(previous, mean_coeffs) if previous is not None else 0,
    }
