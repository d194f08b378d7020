"""The ASM-NAS supernet: L cells of mixed edges with self-attention (paper §5.1).

A functional Keras model, read top to bottom: stem, L cells, classifier.
Cells follow DARTS (SPEC §2): 7 nodes, 14 edges, inputs preprocessed by a
1x1 ReLU-Conv-BN (or FactorizedReduce after a reduction), channels doubled
at the reduction cells `reduction_indices(L)`. Every edge of every cell has
its own attention module: no sharing, so all L cells can differ.

Layer names say where a weight lives: `cell04_edge1to3`, `cell04_pre0`.

With `mixing="alpha"` the same supernet is DARTS's (paper eq. 3.1): the edges
mix by softmax(alpha), the alphas live in one `ArchitectureParameters` layer
named `architecture`, and the model is a `DartsModel` (bi-level step).
"""

import dataclasses

import gin
import keras
from keras import ops

from asmnas_tf.layers import op_math
from asmnas_tf.layers.batch_norm import batch_norm
from asmnas_tf.layers.alphas import ArchitectureParameters
from asmnas_tf.layers.path_sampler import PathSampler
from asmnas_tf.supernet.darts import ARCHITECTURE, DartsModel
from asmnas_tf.layers.mixed_edge import MIXINGS, MixedEdge, check_attention_options
from asmnas_tf.layers.ops import cell_preprocessing
from asmnas_tf.space.primitives import cell_name, edge_name, reduction_indices
from asmnas_tf.space.search_space import search_space
from asmnas_tf.supernet.model import COEFFICIENTS, LOGITS, SupernetModel
from asmnas_tf.errors import UserError
from asmnas_tf.training.run_skeleton import config_with

PATH_SAMPLER = "path_sampler"  # the RSPS supernet's PathSampler layer


def _stem(inputs, channels):
    """3x3 conv to 3C, BN (DARTS search stem, affine BN)."""
    conv = keras.layers.Conv2D(
        channels,
        3,
        padding="same",  # stride 1 with an odd kernel: symmetric, as PyTorch
        use_bias=False,
        kernel_initializer=op_math.torch_uniform(9 * inputs.shape[-1]),
        name="stem_conv",
    )
    return batch_norm("stem_bn")(conv(inputs))


def _cell(index, s0, s1, channels, reduction, reduction_prev, hidden_units, mixing, space, alpha=None,
          attention_options=None, skip_dropout=0.0):
    """One search cell; returns (output, coefficients [B, |edges|, |O|]).

    `alpha`: this cell's architecture parameters [|edges|, |O|] when mixing="alpha".
    """
    name = cell_name(index)
    pre0, pre1 = cell_preprocessing(channels, False, reduction_prev, name)
    states = [pre0(s0), pre1(s1)]
    coefficients = []
    for target in space.intermediate_nodes:
        incoming = []
        for edge_index, (source, edge_target) in enumerate(space.edges):
            if edge_target != target:
                continue
            stride = 2 if reduction and source < 2 else 1
            edge = MixedEdge(
                channels, stride, hidden_units, mixing, name=f"{name}_{edge_name(source, target)}",
                primitives=space.primitives, skip_dropout=skip_dropout, **(attention_options or {}),
            )
            if alpha is None:
                mixed, coeffs = edge(states[source])
            else:
                mixed, coeffs = edge(states[source], alpha[edge_index])
            incoming.append(mixed)
            coefficients.append(coeffs)
        # eq. 3.2: a node sums its incoming mixed edges.
        states.append(keras.layers.Add(name=f"{name}_node{target}")(incoming))
    # eq. 3.3: the output node concatenates the intermediate nodes.
    output = keras.layers.Concatenate(name=f"{name}_output")(states[2:])
    return output, ops.stack(coefficients, axis=1)


@gin.configurable("build_supernet")
@dataclasses.dataclass(frozen=True)
class SupernetConfig:
    """The supernet's options, checked once (`check`); its gin name is `build_supernet`.

    `build_supernet.channels = 8` binds a field; fields not given keep gin's
    binding, else these defaults (the paper's §5.1: L = 15, C = 16).

    `mixing`: 'attention' (ASM-NAS), 'uniform' (fixed 1/|O|), or 'alpha'
    (DARTS, eq. 3.1: a `DartsModel` whose coefficients are softmax(alpha) for
    every sample; `alpha_sharing` 'darts' or 'per_cell', see `alphas.py`), or
    'path' (RSPS: one uniformly sampled op per edge per training step, drawn
    from `path_seed`; `path_sampler.py`).

    The attention options (the paper's form is the default):
    `attention_embedding` 'post_bn' (eq. 4.3 on the op's output) or 'pre_bn'
    (the mean before the op's last BatchNorm, which BatchNorm cannot cancel);
    `attention_init` 'torch' or 'zero_output' (T4 at 0: uniform coefficients
    at initialisation); `attention_lr_multiplier` (T1..T4's learning rate
    over the ops'). See `mixed_edge.py`. `skip_dropout`: the rate of dropout
    on skip_connect's output in training (`search_remedies`).
    """

    num_cells: int = 15
    channels: int = 16
    attention_hidden_units: int = 16
    stem_multiplier: int = 3
    mixing: str = "attention"
    alpha_sharing: str = "darts"
    clipnorm: float = 5.0
    attention_embedding: str = "post_bn"
    attention_init: str = "torch"
    attention_lr_multiplier: float = 1.0
    path_seed: int = 0
    skip_dropout: float = 0.0

    def check(self):
        """One line naming the binding, the value and what is accepted; returns self."""
        check_attention_options(self.attention_embedding, self.attention_init, self.attention_lr_multiplier,
                                [f"build_supernet.attention_{n}" for n in ("embedding", "init", "lr_multiplier")])
        if self.mixing not in MIXINGS:
            raise UserError(f"build_supernet.mixing={self.mixing!r} is not one of {', '.join(MIXINGS)}")
        if self.num_cells < 1 or self.channels < 2 or self.channels % 2:
            raise UserError(
                f"Expected num_cells >= 1 and an even channels >= 2. "
                f"Received: num_cells={self.num_cells}, channels={self.channels}"
            )
        return self

    @property
    def attention_options(self):
        """The MixedEdge arguments of the attention (None unless mixing is 'attention')."""
        if self.mixing != "attention":
            return None
        return dict(embedding=self.attention_embedding, attention_init=self.attention_init,
                    attention_lr_multiplier=self.attention_lr_multiplier)


def supernet_config(config=None, **fields):
    """`config` (or the bound SupernetConfig) with `fields` replaced, checked; an unknown field is one line."""
    return config_with(SupernetConfig, config, fields, "build_supernet").check()


def build_supernet(input_shape, num_classes, config=None, *, space=None, name="asm_supernet", **fields):
    """The search network of paper §5.1, of `config` (a `SupernetConfig`) with `fields` replaced.

    Outputs `{"logits": [B, classes], "coefficients": [B, L, 14, |O|]}`: the
    attention coefficients of every edge, read by selection (Algorithm 1,
    steps 6-13) from the trained model itself.

    `space`: the SearchSpace (op set, nodes per cell); None: the bound
    `search_space()`, the DARTS space by default.
    """
    config = supernet_config(config, **fields)
    space = search_space() if space is None else space
    num_cells, channels, mixing = config.num_cells, config.channels, config.mixing
    reductions = reduction_indices(num_cells)
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    s0 = s1 = _stem(inputs, config.stem_multiplier * channels)
    alphas = None
    if mixing == "alpha":
        alphas = ArchitectureParameters(num_cells, config.alpha_sharing, space.primitives, space.nodes,
                                        name=ARCHITECTURE)(inputs)
    elif mixing == "path":
        alphas = PathSampler(num_cells, config.path_seed, space.primitives, space.nodes, name=PATH_SAMPLER)(inputs)

    cell_channels = channels
    reduction_prev = False
    all_coefficients = []
    for index in range(num_cells):
        reduction = index in reductions
        if reduction:
            cell_channels *= 2
        output, coefficients = _cell(
            index, s0, s1, cell_channels, reduction, reduction_prev, config.attention_hidden_units, mixing, space,
            None if alphas is None else alphas[index], config.attention_options, config.skip_dropout,
        )
        all_coefficients.append(coefficients)
        s0, s1 = s1, output
        reduction_prev = reduction

    pooled = keras.layers.GlobalAveragePooling2D(name="global_pool")(s1)
    logits = keras.layers.Dense(
        num_classes,
        kernel_initializer=op_math.torch_uniform(pooled.shape[-1]),
        bias_initializer=op_math.torch_uniform(pooled.shape[-1]),
        dtype="float32",  # the loss stays in float32 under mixed precision
        name="classifier",
    )(pooled)
    coefficients = ops.stack(all_coefficients, axis=1)
    model_class = DartsModel if mixing == "alpha" else SupernetModel
    return model_class(
        inputs=inputs,
        outputs={LOGITS: logits, COEFFICIENTS: coefficients},
        clipnorm=config.clipnorm,
        name=name,
    )


def count_attention_modules(model):
    """Number of mixed edges with an attention module (210 at the paper's size)."""
    return sum(1 for layer in model.layers if isinstance(layer, MixedEdge) and layer.mixing == "attention")
