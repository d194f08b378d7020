"""The compiled supernet of each search method, built inside the strategy's scope by the caller."""

from asmnas_tf.errors import UserError
from asmnas_tf.supernet.builder import build_supernet
from asmnas_tf.supernet.darts import DartsModel, architecture_optimizer, compile_darts
from asmnas_tf.supernet.model import compile_supernet
from asmnas_tf.training.optim import search_optimizer


def build_search_model(method, arrays, supernet_kwargs, remedies, seed, total_steps):
    """ASM's attention supernet (eq. 4.3-4.5), RSPS's path-sampling one, or DARTS's alpha one, compiled.

    The weights' optimizer is built here, before the first trace (Keras 3
    traces `train_step` twice when SGD makes its slots inside it).
    """
    weight_optimizer = search_optimizer(total_steps=total_steps)
    shape, classes = arrays.image_shape, arrays.num_classes
    if method == "asm":
        model = build_supernet(shape, classes, **{**supernet_kwargs, "skip_dropout": remedies.skip_dropout})
        if isinstance(model, DartsModel):
            raise UserError("build_supernet.mixing='alpha' is DARTS: set run_search.method to darts1 or darts2")
        model.attention_warmup_steps = remedies.warmup_steps(total_steps)  # before the trace
        compile_supernet(model, weight_optimizer)
    elif method == "rsps":
        model = build_supernet(shape, classes, **{**supernet_kwargs, "mixing": "path", "path_seed": seed})
        compile_supernet(model, weight_optimizer)
    else:
        model = build_supernet(shape, classes,
                               **{**supernet_kwargs, "mixing": "alpha", "skip_dropout": remedies.skip_dropout})
        compile_darts(model, weight_optimizer, architecture_optimizer(), second_order=method == "darts2")
    return model
