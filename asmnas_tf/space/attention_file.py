"""attention.json: a search's mean attention coefficients per cell, edge and op, with their confidence.

Written by the search (`RunDir.write_attention`), read by the plots, the
diagnostics and the stability experiment (`RunDir.read_attention`).
"""

import collections
import json

import numpy as np

from asmnas_tf.errors import UserError
from asmnas_tf.space.primitives import reduction_indices
from asmnas_tf.space.search_space import search_space

# `coefficients` [L, |edges|, |O|]; `reductions` the reduction cells' indices;
# `confidence` [L, |edges|] each argmax's bootstrap confidence, or None.
AttentionRecord = collections.namedtuple("AttentionRecord", "coefficients reductions num_samples confidence primitives")


def attention_record(mean_coeffs, num_samples, confidence=None, space=None):
    """The content of attention.json: mean coefficients per cell, edge and op.

    With `confidence` (`confidence.selection_confidence`'s record) each cell
    also holds the standard error of every coefficient, the chosen op's
    margin over the runner-up and the bootstrap confidence of each edge's
    argmax (null where the coefficients have no per-sample spread: DARTS).
    """
    reductions = reduction_indices(len(mean_coeffs))
    cells = []
    for index, cell in enumerate(mean_coeffs):
        entry = {"reduction": index in reductions, "coefficients": np.round(cell, 8).tolist()}
        if confidence is not None:
            entry["stderr"] = np.round(confidence["stderr"][index], 8).tolist()
            entry["margin"] = np.round(confidence["margin"][index], 8).tolist()
            boot = confidence["argmax_confidence"]
            entry["argmax_confidence"] = None if boot is None else np.round(boot[index], 4).tolist()
            if confidence.get("top2_confidence") is not None:
                entry["top2_confidence"] = np.round(confidence["top2_confidence"][index], 4).tolist()
        cells.append(entry)
    space = search_space() if space is None else space
    record = {
        "primitives": list(space.primitives),
        "edges": [[source, target] for source, target in space.edges],
        "num_samples": int(num_samples),
        "cells": cells,
    }
    if confidence is not None:
        record["bootstrap_resamples"] = None if not confidence["per_sample"] else int(confidence["resamples"])
    return record


def read_attention(path):
    """The record at `path` as an AttentionRecord; one line if it is not one."""
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    try:
        cells = record["cells"]
        coeffs = np.array([cell["coefficients"] for cell in cells], dtype=np.float64)
        reductions = [i for i, cell in enumerate(cells) if cell.get("reduction")]
        boot = [cell.get("argmax_confidence") for cell in cells]
        confidence = None if any(b is None for b in boot) else np.array(boot, dtype=np.float64)
        primitives = tuple(record["primitives"])
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: not an attention.json record ({err})") from None
    return AttentionRecord(coeffs, reductions, record.get("num_samples"), confidence, primitives)
