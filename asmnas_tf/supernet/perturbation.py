"""Perturbation-based selection (DARTS-PT, Wang et al. 2021, "Rethinking architecture selection").

Per edge of the trained supernet, each of its `top_k` ops by mean
coefficient is removed in turn (its coefficient set to 0, the other edges
mixed as trained) and the supernet's accuracy on the selection images is
measured. An op's score is the accuracy its removal costs: the op the
supernet needs most scores highest. Ops outside the top k score -inf, so
that the usual rules (`selection.select_genotype`: argmax, top2, and the
remedies' exclusions) pick from the scores as they would from coefficients.
"""

import numpy as np
import tensorflow as tf

from asmnas_tf.layers.mixed_edge import MixedEdge
from asmnas_tf.training.inference import accuracy
from asmnas_tf.space.primitives import cell_name, edge_name
from asmnas_tf.supernet.model import LOGITS


def _edge_layers(model, num_cells, space):
    return [[model.get_layer(f"{cell_name(cell)}_{edge_name(s, t)}") for s, t in space.edges]
            for cell in range(num_cells)]


def perturbation_scores(model, images, labels, mean_coeffs, space, top_k=3, excluded=(), log=None):
    """(scores [L, |edges|, |O|], baseline accuracy): the accuracy that removing each top-k op costs.

    `excluded`: op indices never scored (selection will not pick them: `zero`
    under `search_remedies.exclude_zero`), so the top k are k candidates.
    """
    mean_coeffs = np.asarray(mean_coeffs, np.float64).copy()
    mean_coeffs[..., list(excluded)] = -np.inf
    added = [layer for layer in model.layers if isinstance(layer, MixedEdge) and layer.replacement is None]
    for layer in added:
        layer.replacement = tf.Variable(-1, dtype=tf.int32, trainable=False)  # before the trace
    try:
        return _scores(model, images, labels, mean_coeffs, space, top_k, log)
    finally:
        for layer in added:  # the model's later traces keep the fused training edge
            layer.replacement = None


def _scores(model, images, labels, mean_coeffs, space, top_k, log):

    @tf.function(reduce_retracing=True)
    def logits(batch):
        return model(batch, training=False)[LOGITS]

    def measure():
        out = np.concatenate([logits(images[i:i + 256]).numpy() for i in range(0, len(images), 256)])
        return accuracy(out, labels)

    baseline = measure()
    scores = np.full(mean_coeffs.shape, -np.inf)
    layers = _edge_layers(model, mean_coeffs.shape[0], space)
    for cell, row in enumerate(layers):
        for index, layer in enumerate(row):
            for k in np.argsort(-mean_coeffs[cell, index], kind="stable")[:top_k]:
                layer.replacement.assign(-int(k) - 2)
                scores[cell, index, k] = baseline - measure()
            layer.replacement.assign(-1)
        if log:
            log(f"perturbation selection: cell {cell} done")
    return scores, baseline
