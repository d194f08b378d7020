"""RSPS selection: rank sampled architectures with the shared weights (Li & Talwalkar 2019).

After the one-path-per-step training (`layers/path_sampler.py`), `count`
architectures are sampled uniformly (one op per edge, zero included: the
distribution of `random_genotype`'s argmax rule), each is evaluated with the
supernet's shared weights on the same images of the selection split
(inference mode), and the most accurate is kept (the first on ties).
"""

import numpy as np
import tensorflow as tf

from asmnas_tf.space.search_space import search_space
from asmnas_tf.supernet.builder import PATH_SAMPLER
from asmnas_tf.supernet.model import LOGITS
from asmnas_tf.supernet.selection import select_genotype



def sample_candidates(num_cells, seed, count):
    """`count` architectures [L, 14] of op indices, deterministic per seed."""
    rng = np.random.default_rng([int(seed), 2019])
    space = search_space()
    return [rng.integers(0, len(space.primitives), (num_cells, len(space.edges))) for _ in range(count)]


def best_candidate(accuracies):
    """Index of the most accurate candidate; the first of equals."""
    return int(np.argmax(np.asarray(accuracies, np.float64)))


def as_genotype(ops, source):
    """The genotype of an architecture [L, 14]: one-hot 'coefficients' through the argmax rule."""
    return select_genotype(np.eye(len(search_space().primitives))[np.asarray(ops)], "argmax", source)


def rank_candidates(model, dataset, candidates):
    """The shared-weights accuracy of every candidate on `dataset` (one traced graph for all)."""
    sampler = model.get_layer(PATH_SAMPLER)

    @tf.function(reduce_retracing=True)
    def predict(x):
        return model(x, training=False)[LOGITS]

    accuracies = []
    for ops in candidates:
        sampler.architecture.assign(np.asarray(ops, np.int32))
        hits = count = 0
        for x, y in dataset:
            hits += int(np.sum(np.argmax(np.asarray(predict(x)), axis=-1) == np.asarray(y)))
            count += len(y)
        accuracies.append(hits / count)
    return accuracies


def rsps_select(model, dataset, num_cells, seed, count, source):
    """(genotype, record for rsps.json) of the best of `count` sampled architectures."""
    candidates = sample_candidates(num_cells, seed, count)
    accuracies = rank_candidates(model, dataset, candidates)
    best = best_candidate(accuracies)
    record = {"candidates": count, "best": best, "best_accuracy": accuracies[best],
              "accuracies": [round(a, 6) for a in accuracies],
              "architectures": [np.asarray(c).tolist() for c in candidates]}
    return as_genotype(candidates[best], source), record
