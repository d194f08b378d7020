"""asmnas_tf: ASM-NAS (architecture self-attention NAS) on Keras 3 / TensorFlow.

The public surface (everything else is private by convention)::

    import asmnas_tf as nas
    found = nas.search(x, y, epochs=3, num_cells=4, channels=8)   # -> SearchResult
    trained = nas.train(found.genotype, x, y, x_test, y_test, epochs=2)  # -> TrainResult
    nas.export(trained, "saved_model")

The names load lazily (PEP 562), so that `asmnas_tf.space` (the search space
as data) stays importable without TensorFlow.
"""

import importlib

from asmnas_tf._version import __version__

# Public name -> the module that holds it.
_EXPORTS = {
    "search": "asmnas_tf.supernet.runner",
    "SearchResult": "asmnas_tf.supernet.search_config",
    "SearchConfig": "asmnas_tf.supernet.search_config",
    "SearchRemedies": "asmnas_tf.supernet.remedies",
    "train": "asmnas_tf.evaluation.runner",
    "TrainResult": "asmnas_tf.evaluation.runner",
    "TrainConfig": "asmnas_tf.evaluation.runner",
    "export": "asmnas_tf.evaluation.export",
    "build_supernet": "asmnas_tf.supernet.builder",
    "SupernetConfig": "asmnas_tf.supernet.builder",
    "select_genotype": "asmnas_tf.supernet.selection",
    "build_eval_net": "asmnas_tf.evaluation.builder",
    "EvalNetConfig": "asmnas_tf.evaluation.builder",
    "Genotype": "asmnas_tf.space.genotype",
    "Cell": "asmnas_tf.space.genotype",
    "Edge": "asmnas_tf.space.genotype",
    "read_genotype": "asmnas_tf.space.genotype",
    "write_genotype": "asmnas_tf.space.genotype",
    "named_genotype": "asmnas_tf.space.named_genotypes",
    "PRIMITIVES": "asmnas_tf.space.primitives",
    "load_arrays": "asmnas_tf.data.sources",
    "as_image_arrays": "asmnas_tf.data.sources",
    "ImageArrays": "asmnas_tf.data.sources",
    "UserError": "asmnas_tf.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'asmnas_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once: later lookups skip this function
    return value


def __dir__():
    return sorted(__all__)
