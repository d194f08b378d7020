"""The evaluation network: a genotype turned into a trainable model (SPEC §6).

A functional Keras model, read top to bottom: stem, one cell per genotype
cell, global pool, classifier; the auxiliary head hangs off the second
reduction cell. As DARTS `model.py` (`NetworkCIFAR`, `NetworkImageNet`):

* cell i is built from genotype cell i; its inputs are preprocessed by a
  1x1 ReLU-Conv-BN, or FactorizedReduce for c_{k-2} after a reduction;
  channels double at the reduction cells, whose edges leaving nodes 0 and 1
  have stride 2; BatchNorm is affine; pools have no BN (DARTS eval OPS);
* `zero` edges are left out; a node sums its kept edges; a node with none is
  zeros of the node's shape; the output concatenates the cell's `concat`;
* every kept edge except the identity is followed by drop-path (left out
  when the training drops no path: at rate 0 its mask is a full-tensor
  multiply forward and backward on every edge for nothing).

Stems: 'cifar' is a 3x3 conv to 3C and BN. 'imagenet' is DARTS's pair for
224x224 images (three 3x3 stride-2 convs, 224 -> 28), after which the first
cell sees a reduction behind it. Padding is symmetric, as in PyTorch.

Layer names say where a weight lives: `cell04_edge1to3_sep_conv_3x3`.
"""

import dataclasses
import difflib
import numbers
import os

import gin
import keras

from asmnas_tf.layers import op_math
from asmnas_tf.layers.batch_norm import batch_norm
from asmnas_tf.layers.aux_head import AuxiliaryHead
from asmnas_tf.layers.drop_path import DropPath
from asmnas_tf.evaluation.model import AUX_LOGITS, LOGITS, EvalModel
from asmnas_tf.space.genotype import GenotypeError, read_genotype
from asmnas_tf.space.named_genotypes import NAMES, named_genotype
from asmnas_tf.layers.ops import Identity, Zero, cell_preprocessing, make_op
from asmnas_tf.space.primitives import cell_name, edge_name
from asmnas_tf.space.search_space import search_space
from asmnas_tf.errors import UserError
from asmnas_tf.training.run_skeleton import config_with
from asmnas_tf.names import STEMS

# A named genotype is a (normal, reduce) pair, which fits any depth; this is
# the depth it gets when none is asked for (the paper's evaluation, SPEC §6).
DEFAULT_NAMED_CELLS = 15


def resolve_genotype(genotype, num_cells=None, space=None):
    """A Genotype from a value, a named genotype ('DARTS_V2') or a genotype.json path.

    `num_cells`, when given, is the depth asked for: a file with another
    number of cells is refused (GenotypeError naming the file and the field).
    `space`, when given, is the network's SearchSpace: a genotype of another
    space is refused in one line.
    """
    resolved = _resolve(genotype, num_cells, space)
    if space is not None:
        check_genotype_space(resolved, space)
    return resolved


def check_genotype_space(genotype, space, where="genotype"):
    """One line (GenotypeError) when `genotype`'s space is not the network's `space`."""
    if genotype.space != space:
        raise GenotypeError(f"{where}: primitives: a genotype of the space {genotype.space.describe()} "
                            f"(expected the network's space, {space.describe()}; bind search_space.primitives "
                            f"and search_space.nodes to the genotype's)")


def _resolve(genotype, num_cells, space):
    if hasattr(genotype, "cells"):
        if num_cells is not None and len(genotype.cells) != num_cells:
            raise GenotypeError(
                f"genotype: cells: {len(genotype.cells)} cells, the network asks for {num_cells} "
                f"(expected {num_cells} cells)"
            )
        return genotype
    if not isinstance(genotype, str) or not genotype:
        raise GenotypeError(
            f"genotype: expected a genotype.json path or one of {', '.join(NAMES)}; received {genotype!r}"
        )
    if genotype in NAMES:
        return named_genotype(genotype, num_cells or DEFAULT_NAMED_CELLS)
    if not os.path.exists(genotype) and _looks_like_a_name(genotype):
        close = difflib.get_close_matches(genotype.upper(), NAMES, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise GenotypeError(f"genotype {genotype!r} is neither a named genotype ({', '.join(NAMES)}) "
                            f"nor a genotype.json file{hint}")
    return read_genotype(genotype, num_cells=num_cells, space=space)


def _looks_like_a_name(text):
    """No folder and no extension: meant as a named genotype, not as a path."""
    return os.sep not in text and "." not in text


def _conv(filters, kernel, stride, fan_in, name):
    return keras.layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="valid",
        use_bias=False,
        kernel_initializer=op_math.torch_uniform(kernel * kernel * fan_in),
        name=name,
    )


def _conv_bn(x, filters, stride, name):
    """3x3 conv, padding 1 on each side (PyTorch's), no bias; then BN."""
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    x = _conv(filters, 3, stride, x.shape[-1], f"{name}_conv")(x)
    return batch_norm(f"{name}_bn")(x)


def _stem(inputs, channels, kind, stem_multiplier):
    """Returns (s0, s1, reduction_prev) for the first cell."""
    if kind == "cifar":
        s = _conv_bn(inputs, stem_multiplier * channels, 1, "stem")
        return s, s, False
    half = _conv_bn(inputs, channels // 2, 2, "stem0_a")
    half = keras.layers.ReLU(name="stem0_relu")(half)
    s0 = _conv_bn(half, channels, 2, "stem0_b")
    s1 = _conv_bn(keras.layers.ReLU(name="stem1_relu")(s0), channels, 2, "stem1")
    return s0, s1, True


def _cell(index, s0, s1, cell, channels, reduction_prev, drop_path, space):
    """One evaluation cell from genotype cell `cell`."""
    name = cell_name(index)
    pre0, pre1 = cell_preprocessing(channels, True, reduction_prev, name)
    states = {0: pre0(s0), 1: pre1(s1)}
    for target in space.intermediate_nodes:
        incoming = []
        for edge in cell.edges:
            if edge.target != target or edge.op == "zero":
                continue
            stride = 2 if cell.reduction and edge.source < 2 else 1
            where = f"{name}_{edge_name(edge.source, target)}"
            op = make_op(edge.op, channels, stride, affine=True, pool_batch_norm=False, name=f"{where}_{edge.op}")
            h = op(states[edge.source])
            if drop_path and not isinstance(op, Identity):
                h = DropPath(name=f"{where}_drop_path")(h)
            incoming.append(h)
        if not incoming:
            # No kept edge: the node is zeros of a node's shape (C channels,
            # the cell's output resolution).
            states[target] = Zero(2 if cell.reduction else 1, name=f"{name}_node{target}_zero")(states[1])
        elif len(incoming) == 1:
            states[target] = incoming[0]
        else:
            states[target] = keras.layers.Add(name=f"{name}_node{target}")(incoming)
    outputs = [states[node] for node in cell.concat]
    if len(outputs) == 1:
        return outputs[0]
    return keras.layers.Concatenate(name=f"{name}_output")(outputs)


@gin.configurable("build_eval_net")
@dataclasses.dataclass(frozen=True)
class EvalNetConfig:
    """The evaluation network's options, checked once (`check`); its gin name is `build_eval_net`.

    `build_eval_net.channels = 16` binds a field; fields not given keep gin's
    binding, else these defaults (DARTS's CIFAR network: C = 36, the
    auxiliary head at 0.4). `bn_momentum`: every BatchNorm's (Keras's sense:
    moving = m * moving + (1 - m) * batch); None keeps PyTorch's 0.1, i.e.
    0.9 here.
    """

    channels: int = 36
    stem: str = "cifar"
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    clipnorm: float = 5.0
    label_smoothing: float = 0.0
    stem_multiplier: int = 3
    bn_momentum: float = None

    def check(self):
        """One line naming the first bad `build_eval_net` binding and what it accepts; returns self."""
        _check_network_arguments(self.channels, self.stem, self.auxiliary, self.auxiliary_weight, self.clipnorm,
                                 self.label_smoothing, self.bn_momentum)
        return self


def eval_net_config(config=None, **fields):
    """`config` (or the bound EvalNetConfig) with `fields` replaced, checked; an unknown field is one line."""
    return config_with(EvalNetConfig, config, fields, "build_eval_net").check()


def build_eval_net(genotype, input_shape, num_classes, config=None, *, drop_path=True, name="asm_eval_net",
                   space=None, **fields):
    """The evaluation network of `genotype` (a Genotype: one cell per network cell).

    Of `config` (an `EvalNetConfig`) with `fields` replaced. Outputs
    `{"logits"}` and, when `auxiliary`, `{"aux_logits"}` in training (see
    `eval_model.EvalModel`). Drop-path layers start at rate 0; the training
    run schedules them (`drop_path.DropPathSchedule`). `drop_path`: False
    builds no DropPath layer (a training with `run_train.drop_path = 0`,
    which would only multiply by ones). `space`: the network's SearchSpace
    (None: the bound `search_space()`); a genotype of another space is
    refused in one line.
    """
    config = eval_net_config(config, **fields)
    channels, stem = config.channels, config.stem
    space = search_space() if space is None else space
    check_genotype_space(genotype, space)
    if len(input_shape) != 3:
        raise UserError(f"Expected input_shape (H, W, C). Received: input_shape={input_shape}")
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    s0, s1, reduction_prev = _stem(inputs, channels, stem, config.stem_multiplier)
    reductions = [i for i, cell in enumerate(genotype.cells) if cell.reduction]
    aux_after = reductions[-1] if reductions else None

    cell_channels = channels
    aux_logits = None
    for index, cell in enumerate(genotype.cells):
        if cell.reduction:
            cell_channels *= 2
        output = _cell(index, s0, s1, cell, cell_channels, reduction_prev, drop_path, genotype.space)
        s0, s1 = s1, output
        reduction_prev = cell.reduction
        if config.auxiliary and index == aux_after:
            aux_logits = AuxiliaryHead(num_classes, kind=stem, name="auxiliary_head")(output)

    pooled = keras.layers.GlobalAveragePooling2D(name="global_pool")(s1)
    logits = keras.layers.Dense(
        num_classes,
        kernel_initializer=op_math.torch_uniform(pooled.shape[-1]),
        bias_initializer=op_math.torch_uniform(pooled.shape[-1]),
        dtype="float32",
        name="classifier",
    )(pooled)
    outputs = {LOGITS: logits}
    if aux_logits is not None:
        outputs[AUX_LOGITS] = aux_logits
    model = EvalModel(
        inputs=inputs,
        outputs=outputs,
        auxiliary_weight=config.auxiliary_weight,
        clipnorm=config.clipnorm,
        label_smoothing=config.label_smoothing,
        name=name,
    )
    if config.bn_momentum is not None:
        # Set on the built layers (the ops make their own BatchNorms); Keras
        # reads `momentum` when the step is traced, and saves it in model.keras.
        for layer in model._flatten_layers(include_self=False):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = float(config.bn_momentum)
    return model


def _check_network_arguments(channels, stem, auxiliary, auxiliary_weight, clipnorm, label_smoothing, bn_momentum):
    """One line naming the first bad `build_eval_net` binding and what it accepts."""
    def number(value):
        return isinstance(value, numbers.Real) and not isinstance(value, bool)

    if stem not in STEMS:
        raise UserError(f"Expected build_eval_net.stem in {STEMS}. Received: stem={stem!r}")
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 2 or channels % 2:
        raise UserError(f"Expected an even build_eval_net.channels >= 2. Received: channels={channels!r}")
    if not isinstance(auxiliary, bool):
        raise UserError(f"build_eval_net.auxiliary={auxiliary!r}: expected True or False")
    if not number(auxiliary_weight) or auxiliary_weight < 0:
        raise UserError(f"build_eval_net.auxiliary_weight={auxiliary_weight!r}: expected a number in [0, inf)")
    if not number(clipnorm) or clipnorm <= 0:
        raise UserError(f"build_eval_net.clipnorm={clipnorm!r}: expected a number in (0, inf)")
    if not number(label_smoothing) or not 0 <= label_smoothing < 1:
        raise UserError(f"build_eval_net.label_smoothing={label_smoothing!r}: expected a number in [0, 1)")
    if bn_momentum is not None and (not number(bn_momentum) or not 0 < bn_momentum < 1):
        raise UserError(f"build_eval_net.bn_momentum={bn_momentum!r}: expected a number in (0, 1) "
                        f"(Keras's momentum; PyTorch's 0.1 is 0.9), or None")
