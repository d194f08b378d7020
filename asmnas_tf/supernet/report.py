"""The end-of-search report: did the attention learn, and how sure is the choice.

Written as `diagnostics.json` in the run directory and printed as a few
lines: the argmax at initialisation (selection on the untrained supernet,
same split) against the final one, the coefficients' mean drift, the final
entropy and parameter-free share, and the selection's bootstrap confidence.
"""

import numpy as np

from asmnas_tf.supernet import diagnostics
from asmnas_tf.supernet.confidence import CONFIDENT, confidence_json, summary_line



def search_report(initial, final, confidence, rule):
    """{figures..., "confidence": {...}, "lines": [printable lines]} of one search."""
    # An edge whose initial coefficients tie (attention_init='zero_output':
    # all exactly 1/8) had no initial choice: left out of the agreement.
    ordered = np.sort(np.asarray(initial), axis=-1)
    decided = (ordered[..., -1] - ordered[..., -2]) > 0
    agreement = None
    if decided.any():
        agreement = float(np.mean((diagnostics.argmax_ops(initial) == diagnostics.argmax_ops(final))[decided]))
    drift = diagnostics.mean_abs_drift(initial, final)
    report = {
        "initial_final_agreement": agreement,
        "mean_abs_drift": drift,
        "initial_spread": float(np.ptp(initial)),
        "final_spread": float(np.ptp(final)),
        "coefficient_entropy": diagnostics.normalized_entropy(final),
        "parameter_free_share": diagnostics.parameter_free_share(final),
        "num_edges": int(np.prod(np.shape(final)[:2])),
    }
    per_sample = confidence["per_sample"]
    boot = confidence["top2_confidence"] if rule == "top2" else confidence["argmax_confidence"]
    report["confident_choices"] = None if not per_sample else int(np.sum(boot >= CONFIDENT))
    report["choices"] = None if not per_sample else int(np.size(boot))
    report["median_margin"] = float(np.median(confidence["margin"]))
    report["confidence"] = confidence_json(confidence)
    kept = ("no initial choice (uniform coefficients at initialisation)" if agreement is None else
            f"argmax kept on {agreement:.1%} of {int(decided.sum())} edges")
    report["initial_ties"] = int((~decided).sum())
    report["lines"] = [
        f"Attention vs initialisation: {kept}; "
        f"mean |coefficient drift| {drift:.4f}; coefficient range {report['initial_spread']:.4f} -> "
        f"{report['final_spread']:.4f}; parameter-free argmax share {report['parameter_free_share']:.1%}",
        summary_line(confidence, rule),
    ]
    return report
