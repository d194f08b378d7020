"""One supernet edge: all candidate ops of its space and their mixing, in one layer.

A supernet built one Keras layer per op has ~4,000 small weight tensors at
the paper's size, and tracing the optimizer update of each of them dominates
the first training step. Here every trainable weight of an edge (its
convolutions and its attention module T1..T4) lives in ONE flat variable,
sliced in `call`, and the BatchNorm statistics of all its ops in one pair of
variables: ~250 trainable tensors for the whole paper-size supernet.

The graph of an edge is kept small too (its node count, times 210 edges, is
what tracing and Grappler spend the first step on; docs/bench-log.md,
"Start-up levers"): the ops' pre-BN outputs are concatenated on the channel
axis and normalised by one fused BatchNorm per stage, and the attention
embedding and the weighted sum work on those concatenations, one block per op.

The maths is the reference op layers' (`op_math.py`, `attention.py`); the
tests check equal outputs and gradients on the same weights.
"""

import collections
import math
import zlib

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from asmnas_tf.kernels import fused_attention
from asmnas_tf.layers import attention
from asmnas_tf.layers.batch_norm import biased_over_unbiased

from asmnas_tf.layers import op_math
from asmnas_tf.space.search_space import DARTS_PRIMITIVES, make_space
from asmnas_tf.errors import UserError

_register = keras.saving.register_keras_serializable(package="asmnas_tf")

MIXINGS = ("attention", "uniform", "alpha", "path")
# Where eq. 4.3's mean is taken. "post_bn" is the paper: the op's
# output. Every op but skip and zero ends in BatchNorm(affine=False), whose
# output has zero mean per channel over the batch, so the per-sample mean is
# ~0 for every op and T1..T4 see an almost constant E. "pre_bn": the same
# mean of the op's output before its last BatchNorm (the pools' and the
# convolutions' raw outputs; skip is x at stride 1 and FactorizedReduce
# before its BN at stride 2), which BatchNorm does not cancel.
EMBEDDINGS = ("post_bn", "pre_bn")
# How T1..T4 start. "torch": PyTorch's default Linear init (the paper says
# nothing more). "zero_output": T4's kernel and bias at 0, so z = sigmoid(0)
# for every op and the coefficients start exactly uniform: the initial
# argmax is a tie and only training can break it (as DARTS's alphas start at
# 1e-3 N(0, 1)).
ATTENTION_INITS = ("torch", "zero_output")

class EdgeLayout:
    """Where each op of a space lives in the fused edge, derived from the op table.

    The edge normalises its ops in two concatenations (stage 1: from the
    edge input; stage 2: the second halves of the separable convolutions),
    each op's BatchNorm slot a C-channel block of one of them:

    - `pieces`: the convolution kernels in the flat weight vector: the
      separable convolutions, the dilated ones, then FactorizedReduce's
      (skip at stride 2), each in the space's op order;
    - `stage1`: the separable convolutions' first halves, then the pools
      and dilated convolutions (and skip at stride 2): `stage1_rest` those
      after the separable halves, normalised as one concatenation;
    - `stage2`: the separable convolutions' second halves;
    - `bn_slots`: the order of the moving statistics (op order, skip last);
    - `order`: the op of each output block, over the groups (stage 1's
      rest, stage 2[, x for skip at stride 1]); zero has no block.

    In the DARTS space this is the layout the edge always had.
    """

    def __init__(self, primitives, stride):
        self.primitives = tuple(primitives)
        self.stride = stride
        specs = make_space(self.primitives, 1, binding="MixedEdge").specs
        self.seps = tuple(op for op in specs if op.kind == "sep_conv")
        self.dils = tuple(op for op in specs if op.kind == "dil_conv")
        self.rest = tuple(op for op in specs if op.kind in ("pool", "dil_conv"))  # stage 1 after the separable halves
        skip = [op for op in specs if op.kind == "skip"]
        self.skip = skip[0] if skip else None
        self.strided_skip = self.skip if stride == 2 else None
        tail = (self.strided_skip,) if self.strided_skip is not None else ()
        self.stage1_rest = tuple(op.short for op in self.rest + tail)
        self.stage1 = tuple(f"{op.short}_a" for op in self.seps) + self.stage1_rest
        self.stage2 = tuple(f"{op.short}_b" for op in self.seps)
        self.bn_slots = tuple(slot for op in specs if op.kind != "skip" for slot in op.bn_slots(stride)) + \
            tuple(op.short for op in tail)
        self.order = tuple(op.name for op in self.rest + tail + self.seps) + \
            ((self.skip.name,) if self.skip is not None and stride == 1 else ())

    def conv_piece_shapes(self, channels):
        """(name, shape, fan_in) of every convolution kernel of the edge's ops, at `channels`."""
        return [piece for op in self.seps + self.dils for piece in op.conv_pieces(channels, self.stride)] + (
            self.strided_skip.conv_pieces(channels, 2) if self.strided_skip is not None else [])


_LAYOUTS = {}


def edge_layout(primitives, stride):
    """The (cached) EdgeLayout of `primitives` at `stride`."""
    key = (tuple(primitives), stride)
    if key not in _LAYOUTS:
        _LAYOUTS[key] = EdgeLayout(*key)
    return _LAYOUTS[key]


def _conv_piece_shapes(channels, stride, primitives=DARTS_PRIMITIVES):
    """(name, shape, fan_in) of every convolution kernel of the edge's ops."""
    return edge_layout(primitives, stride).conv_piece_shapes(channels)


def _bn_slots(stride, primitives=DARTS_PRIMITIVES):
    """The edge's BatchNorm slots, in the order of its moving statistics."""
    return edge_layout(primitives, stride).bn_slots


def _batch_norm_train(y):
    """Normalised y, and its per-channel mean and variance over N, H, W.

    TensorFlow's fused BatchNorm is one op forward and one backward (against
    ~20 for moments + normalisation). It normalises with the biased variance
    but returns the unbiased one (for PyTorch-style moving averages; see
    `_new_moving_stats`). float64 has no fused kernel: moments, biased.
    """
    if y.dtype == tf.float64:
        mean, variance = op_math.batch_moments(y)
        return op_math.normalize(y, mean, variance), mean, variance
    channels = y.shape[-1]
    out, mean, variance = tf.compat.v1.nn.fused_batch_norm(
        y, tf.ones([channels]), tf.zeros([channels]), epsilon=op_math.BN_EPSILON, is_training=True
    )
    return out, mean, variance


def _biased(variance, y):
    """The biased variance of y's channels from `_batch_norm_train`'s (the fused op's is unbiased)."""
    if y.dtype == tf.float64:
        return variance
    return variance * biased_over_unbiased(y)  # a Python number for a static batch


def _inverse_std(y, variance):
    """1 / sqrt(biased variance + eps) per channel: what the training BN divided y by."""
    return tf.math.rsqrt(_biased(variance, y) + op_math.BN_EPSILON)


@tf.custom_gradient
def _mix_normalized(y, raw, mean, inverse_std, a):
    """Eq. 4.2 over the C-channel blocks of y = BN(raw): sum_k a_k y_k, y not kept for the backward.

    The coefficients' gradient is sum_{h,w,c} g y_k per sample; autodiff
    would keep every y_k (each op's output after its BatchNorm) of every
    edge alive until the backward: at the paper's size ~1 GB that uniform
    mixing does not hold. Here it is computed from the BatchNorm's input
    `raw`, which BN's own gradient keeps anyway, and the batch statistics:
    sum_c inverse_std_kc (sum_hw g raw_k - mean_kc sum_hw g). `raw`, `mean`
    and `inverse_std` only rebuild y: their gradient goes through y's
    (a_k g), into BN's backward.
    """
    blocks = a.shape[3]
    channels = y.shape[-1] // blocks
    mixed = tf.reduce_sum(_blocks(y, channels) * a, axis=3)
    y_shape = tf.shape(y)  # taken here: a Shape op in the backward would keep y alive

    def gradient(g):
        g_blocks = tf.expand_dims(g, 3)
        total = tf.expand_dims(tf.reduce_sum(g, axis=[1, 2]), 1)
        grad_a = _sums_with_normalized(g_blocks, total, raw, mean, inverse_std, channels)
        grad_y = tf.reshape(g_blocks * a, y_shape)
        return grad_y, None, None, None, tf.reshape(grad_a, [-1, 1, 1, blocks, 1])

    return mixed, gradient


def _sums_with_normalized(g_blocks, total, raw, mean, inverse_std, channels):
    """sum_{h,w,c} g y_k per sample [B, blocks], y = BN(raw), from raw.

    y_kc = (raw_kc - mean_kc) inverse_std_kc, so the sum is sum_c
    inverse_std_kc (sum_hw g raw_kc - mean_kc sum_hw g): y need not be kept
    for the backward (BN's own gradient keeps raw). `g_blocks` is g
    [B, H, W, 1, C], `total` its sums over H, W [B, 1, C].
    """
    blocks = raw.shape[-1] // channels
    sums = tf.reduce_sum(_blocks(raw, channels) * g_blocks, axis=[1, 2])  # [B, blocks, C]
    centred = sums - tf.reshape(mean, [blocks, channels]) * total
    return tf.reduce_sum(tf.reshape(inverse_std, [blocks, channels]) * centred, axis=-1)


def _attend_and_mix_fused(kernels, spec, groups, sources, w, order):
    """`_attend_and_mix` as the two fused CPU kernels (`kernels/fused_attention.cc`): the same numbers.

    The unnormalised group (the skip op's x) is its own source, with mean 0
    and inverse std 1.
    """
    c = spec.channels
    primitives = spec.primitives
    names = [name for name, _, _ in attention.attention_param_shapes(len(primitives), spec.hidden_units)]
    group_sources = [source or (y, tf.zeros([y.shape[-1]]), tf.ones([y.shape[-1]]))
                     for y, source in zip(groups, sources)]
    attrs = dict(channels=c, num_primitives=len(primitives),
                 primitive_of_block=[primitives.index(name) for name in order])
    source_args = [t for source in group_sources for t in source]

    @tf.custom_gradient
    def attend(*args):
        ys = list(args[:len(groups)])
        rest = args[len(groups):len(groups) + len(source_args)]
        params = list(args[len(groups) + len(source_args):])
        mixed, coeffs, embedding, activations = kernels.asm_attend_forward(ys=ys, params=params, **attrs)

        def gradient(g, grad_coeffs):
            if grad_coeffs is None:
                grad_coeffs = tf.zeros_like(coeffs)
            raw, mean, inverse_std = (list(rest[i::3]) for i in range(3))  # (raw, mean, inverse std) per group
            grad_ys, grad_params = kernels.asm_attend_backward(
                grad_mixed=g, grad_coeffs=grad_coeffs, sources=raw, means=mean, inverse_stds=inverse_std,
                coeffs=coeffs, embedding=embedding, activations=activations, kernels=params[::2], **attrs)
            return (*grad_ys, *[None] * len(source_args), *grad_params)

        return (mixed, coeffs), gradient

    return attend(*groups, *source_args, *[w[name] for name in names])


def _attend_and_mix(spec, groups, sources, w, order):
    """Eq. 4.2-4.5 in training, post-BN embedding: (mixed, coeffs), one hand-written gradient.

    Autodiff took each group's embedding gradient (eq. 4.3's mean: a Tile
    and a RealDiv the size of the op outputs) and added it to the mixing's
    with an AddN: three full-tensor passes per group and ~50 graph nodes per
    edge. Here the gradient into group k is g a_k + dL/de_k / (H W C), one
    broadcast expression; the coefficients' gradient comes from the BN inputs
    as in `_mix_normalized` (y not kept), T1..T4's from
    `attention.coefficients_gradient`.
    """
    c = spec.channels
    widths = [y.shape[-1] // c for y in groups]
    primitives = spec.primitives
    names = [name for name, _, _ in attention.attention_param_shapes(len(primitives), spec.hidden_units)]
    normalised = [source is not None for source in sources]
    source_args = [t for source in sources if source is not None for t in source]
    dtype = groups[0].dtype
    to_primitives = _permutation(order, primitives, True, dtype)  # [n, |O|]; `from_primitives` is its transpose
    from_primitives = _permutation(order, primitives, False, dtype)

    @tf.custom_gradient
    def attend(*args):
        ys = args[:len(groups)]
        rest = list(args[len(groups):len(groups) + len(source_args)])
        params = dict(zip(names, args[len(groups) + len(source_args):]))
        group_sources = [tuple(rest.pop(0) for _ in range(3)) if n else None for n in normalised]
        embedding = _embedding(spec, ys, None, order)  # eq. 4.3 (post-BN: from the y's)
        activations = []
        coeffs = attention.coefficients(embedding, params, activations)  # eq. 4.4-4.5
        a_groups = _block_coefficients(coeffs, order, primitives, ys, c)
        mixed = tf.add_n([tf.reduce_sum(_blocks(y, c) * a_k, axis=3) for y, a_k in zip(ys, a_groups)])  # eq. 4.2
        # Taken here: a Shape op in the backward would keep the y's alive. x
        # (the skip group) is the edge's input, kept anyway.
        shapes = [y.shape if y.shape.is_fully_defined() else tf.shape(y) for y in ys]
        unnormalised = [None if n else y for y, n in zip(ys, normalised)]

        def gradient(g, grad_coeffs):
            g_blocks = tf.expand_dims(g, 3)
            total = tf.expand_dims(tf.reduce_sum(g, axis=[1, 2]), 1)  # [B, 1, C]
            grad_a = []
            for source, y in zip(group_sources, unnormalised):
                if source is None:
                    grad_a.append(tf.reduce_sum(_blocks(y, c) * g_blocks, axis=[1, 2, 4]))
                    continue
                grad_a.append(_sums_with_normalized(g_blocks, total, *source, c))
            grad_from_a = tf.cast(tf.matmul(tf.concat(grad_a, axis=1), to_primitives), "float32")
            grad_coeffs = grad_from_a if grad_coeffs is None else grad_coeffs + grad_from_a
            grad_embedding, grad_params = attention.coefficients_gradient(
                grad_coeffs, coeffs, embedding, params, activations)
            # dL/de_k / (H W C) for every block at once: the groups share H, W and C.
            size = shapes[0][1] * shapes[0][2] * c  # the mean's count, eq. 4.3
            if isinstance(size, tf.Tensor):
                per_element = tf.matmul(grad_embedding, from_primitives) / tf.cast(size, dtype)
            else:
                per_element = tf.matmul(grad_embedding, _permutation(order, primitives, False, dtype, scale=1.0 / size))
            per_element = tf.split(tf.reshape(per_element, [-1, 1, 1, sum(widths), 1]), widths, axis=3)
            grad_ys = [tf.reshape(g_blocks * a_k + per_block, shape)
                       for per_block, a_k, shape in zip(per_element, a_groups, shapes)]
            return (*grad_ys, *[None] * len(source_args), *[grad_params[name] for name in names])

        return (mixed, coeffs), gradient

    return attend(*groups, *source_args, *[w[name] for name in names])


def _blocks(y, channels):
    """[B, H, W, n * C] -> [B, H, W, n, C]: one block per op."""
    spatial = [tf.shape(y)[i] if y.shape[i] is None else y.shape[i] for i in (1, 2)]
    return tf.reshape(y, [-1, *spatial, y.shape[-1] // channels, channels])


def _permutation(order, primitives, to_primitives, dtype, scale=1.0):
    """0/1 matrix (times `scale`) that maps columns in `order` to `primitives` order (or back).

    A product with it is exact (one 1 per column) and costs one MatMul
    forward and one backward, against a gather's transposes.
    """
    matrix = np.zeros((len(order), len(primitives)), dtype=tf.as_dtype(dtype).as_numpy_dtype)
    matrix[np.arange(len(order)), [primitives.index(name) for name in order]] = scale
    return tf.constant(matrix if to_primitives else matrix.T)


EdgeSpec = collections.namedtuple(
    "EdgeSpec", "channels stride hidden_units mixing training embedding primitives skip_dropout",
    defaults=("post_bn", DARTS_PRIMITIVES, 0.0))
EdgeSpec.__doc__ = "What shapes an edge's graph: equal specs (and input shapes) share one traced function."


def _unpack(flat, pieces):
    """The flat weight vector split into its pieces, by name, in their shapes.

    One split (and one concat in the gradient) instead of a slice per
    piece, whose gradients would each be a full-size scatter. By sizes, not
    keras's split points (which it turns into sizes with ~15 graph nodes).
    """
    sizes = [math.prod(shape) for _, shape, _ in pieces]
    parts = tf.split(flat, sizes)
    # A vector piece (a bias) is its part as split: no Reshape each way.
    return {name: part if len(shape) == 1 else ops.reshape(part, shape)
            for (name, shape, _), part in zip(pieces, parts)}


def _op_outputs(spec, x, w, moving_mean, moving_variance, dropout_seed=None):
    """The edge's op outputs as channel blocks: (groups, pre_bn_groups, order, stats, sources).

    `groups`: [final1, final2(, x)] (a group without ops left out), whose
    C-channel blocks are the outputs of the ops `order` (`EdgeLayout`);
    `pre_bn_groups`: the same blocks before their last BatchNorm; `stats`:
    the BN stages' batch statistics (training only); `sources`: what
    rebuilds each group from its BN input (training only).
    """
    s = spec.stride
    training = spec.training
    layout = edge_layout(spec.primitives, s)
    bn_slots = layout.bn_slots
    relu_x = ops.relu(x)  # shared by every conv op of the edge

    def conv(inp, dw, pw, stride, dilation):  # depthwise, then 1x1 (DilConv without its BN)
        return op_math.pointwise_conv(op_math.depthwise_conv(inp, w[dw], stride, dilation), w[pw])

    def batch_norm(y, slots):  # BatchNorm(affine=False) of y, whose channel blocks are `slots`
        if training:
            normed, mean, variance = _batch_norm_train(y)
            stats.append((mean, variance))
            recompute.append((y, mean, _inverse_std(y, variance)))
            return normed
        index = [bn_slots.index(slot) for slot in slots]
        mean = tf.reshape(tf.gather(moving_mean, index), [-1])
        variance = tf.reshape(tf.gather(moving_variance, index), [-1])
        return op_math.normalize(y, tf.cast(mean, y.dtype), tf.cast(variance, y.dtype))

    # Stage 1: every op up to its (first) BatchNorm, all from x, as the
    # channel blocks `layout.stage1`. BN is per channel, so the BN of a
    # concatenation is the BN of each (one fused op each way). Two
    # concatenations, the separable convolutions' first halves and the rest
    # (`final1`): one would need a split of its output, a copy each way.
    stats = []
    recompute = []  # (raw, mean, inverse std) of each BN, in training
    groups, pre_bn_groups, sources = [], [], []
    if layout.seps:
        sep_raw = tf.concat([conv(relu_x, f"{op.short}_dw1", f"{op.short}_pw1", s, 1) for op in layout.seps], axis=-1)
        sep_a = batch_norm(sep_raw, layout.stage1[:len(layout.seps)])
    first = []
    for op in layout.rest:
        if op.kind == "pool":
            first.append((op_math.max_pool_3x3 if op.pool == "max" else op_math.avg_pool_3x3)(x, s))
        else:
            first.append(conv(relu_x, f"{op.short}_dw", f"{op.short}_pw", s, op.dilation))
    if layout.strided_skip is not None:
        short = layout.strided_skip.short
        first += op_math.factorized_reduce_halves(relu_x, w[f"{short}_even"], w[f"{short}_odd"])
    if first:
        raw1 = tf.concat(first, axis=-1)
        groups.append(batch_norm(raw1, layout.stage1_rest))
        pre_bn_groups.append(raw1)
        sources.append(recompute[-1] if training else None)
    # Stage 2: the second halves of the separable convolutions.
    # ReLU after the split: each half's ReLU output is what its depthwise
    # convolution's backward keeps; a ReLU before it kept both its output and the split's copies.
    if layout.seps:
        halves = [ops.relu(half) for half in tf.split(sep_a, len(layout.seps), axis=-1)]
        raw2 = tf.concat([conv(half, f"{op.short}_dw2", f"{op.short}_pw2", 1, 1)
                          for op, half in zip(layout.seps, halves)], axis=-1)
        groups.append(batch_norm(raw2, layout.stage2))
        pre_bn_groups.append(raw2)
        sources.append(recompute[-1] if training else None)
    # At stride 1, skip's output is x itself, not normalised; in training,
    # with `spec.skip_dropout`, x dropped out elementwise (P-DARTS's dropout
    # on skip connections: the parameter-free op cannot win the early race on
    # the signal it passes for free). The mask is a stateless draw from
    # `dropout_seed`, so a resumed search draws the masks it would have drawn.
    if layout.skip is not None and s == 1:
        skip = x
        if training and spec.skip_dropout > 0 and dropout_seed is not None:
            skip = tf.nn.experimental.stateless_dropout(x, spec.skip_dropout, dropout_seed)
        groups.append(skip)
        pre_bn_groups.append(skip)
        sources.append(None)
    return groups, pre_bn_groups, layout.order, stats, sources if training else None


def _block_coefficients(coeffs, order, primitives, groups, channels):
    """coeffs [B, |O|] (`primitives` order) as one [B, 1, 1, n, 1] tensor per group, n its blocks (`order`)."""
    dtype = groups[0].dtype
    a = tf.matmul(tf.cast(coeffs, dtype), _permutation(order, primitives, False, dtype))
    return tf.split(tf.reshape(a, [-1, 1, 1, len(order), 1]), [y.shape[-1] // channels for y in groups], axis=3)


def _embedding(spec, groups, pre_bn_groups, order):
    """Eq. 4.3: E [B, |O|] in the space's op order (zero's e_k is 0), from `spec.embedding`."""
    source = groups if spec.embedding == "post_bn" else pre_bn_groups
    blocks = sum(y.shape[-1] for y in source) // spec.channels
    # Over H, W first, then each block's C: one mean over axes (1, 2, 4) of
    # the 5-D view transposed first (2-3x the time at 32 x 32, docs/bench-log.md).
    spatial = tf.concat([tf.reduce_mean(y, axis=[1, 2]) for y in source], axis=1)  # [B, blocks C]
    means = tf.reduce_mean(tf.reshape(spatial, [-1, blocks, spec.channels]), axis=2)
    return tf.matmul(means, _permutation(order, spec.primitives, True, means.dtype))


def _edge_forward(spec, x, kernel, moving_mean, moving_variance, alpha, replacement, dropout_seed=None):
    """One edge, eq. 4.2 (+ 4.3-4.5 or 3.1): (mixed, coefficients[, stats]).

    A function of the edge's static `spec` and tensors only, so that the
    edges of one shape can share one traced graph function (`_edge_graph`).
    In training it also returns the new moving mean and variance (the layer
    assigns them: the function is shared, the variables are per edge).
    """
    w = _unpack(kernel, _pieces(spec))
    c = spec.channels
    num_ops = len(spec.primitives)
    groups, pre_bn_groups, order, stats, sources = _op_outputs(spec, x, w, moving_mean, moving_variance, dropout_seed)

    # ASM's training step: the attention and the mixing as one custom gradient.
    # Mixed precision keeps autodiff (`_mix_normalized`'s note below); so do
    # the pre-BN embedding and the stability experiment's replacement.
    if (spec.training and spec.mixing == "attention" and spec.embedding == "post_bn" and replacement is None
            and x.dtype in (tf.float32, tf.float64)):
        # XLA cannot compile a custom op: a `jit_compile` step keeps TensorFlow's ops.
        kernels = fused_attention.load() if x.dtype == tf.float32 and not _in_xla_context() else None
        if kernels is not None:
            mixed, coeffs = _attend_and_mix_fused(kernels, spec, groups, sources, w, order)
        else:
            mixed, coeffs = _attend_and_mix(spec, groups, sources, w, order)
        return (mixed, coeffs, *_new_moving_stats(stats, spec, moving_mean, moving_variance, sources))
    if spec.mixing == "attention":
        coeffs = attention.coefficients(_embedding(spec, groups, pre_bn_groups, order), w)
    elif spec.mixing == "path":
        # RSPS (`path_sampler.py`): the row is the one-hot coefficients themselves.
        coeffs = ops.broadcast_to(tf.cast(alpha, "float32")[None, :], (tf.shape(x)[0], num_ops))
    elif spec.mixing == "alpha":
        # eq. 3.1: the same softmax(alpha) for every sample, so selection
        # reads it per sample. In alpha's dtype: float32 variables even
        # under mixed precision (`alphas.py`).
        probabilities = ops.softmax(alpha, axis=-1)
        coeffs = ops.broadcast_to(probabilities[None, :], (tf.shape(x)[0], num_ops))
    else:
        coeffs = ops.full((tf.shape(x)[0], num_ops), 1.0 / num_ops, dtype="float32")
    if replacement is not None:
        # One-hot coefficients of op `replacement` where it is >= 0; op
        # -replacement - 2 removed (its coefficient 0) where it is <= -2
        # (MixedEdge.replacement).
        one_hot = ops.one_hot(ops.maximum(replacement, 0), num_ops, dtype=coeffs.dtype)
        coeffs = ops.where(replacement >= 0, ops.broadcast_to(one_hot[None, :], ops.shape(coeffs)), coeffs)
        removed = ops.one_hot(ops.maximum(-replacement - 2, 0), num_ops, dtype=coeffs.dtype)
        coeffs = ops.where(replacement <= -2, coeffs * (1.0 - removed[None, :]), coeffs)
    # eq. 4.2, per block: sum_k a_k y_k.
    a = _block_coefficients(coeffs, order, spec.primitives, groups, c)
    # The attention's coefficients take their gradient from the BN inputs
    # (`_mix_normalized`: ASM's step at L = 15 -8%, docs/bench-log.md); fixed
    # ones (uniform, path) need none; DARTS's alpha keeps autodiff (its
    # second-order step was ~10% slower this way). In float16 / bfloat16 the
    # difference of two sums it takes would lose digits: autodiff there too.
    trained = spec.training and spec.mixing == "attention" and x.dtype in (tf.float32, tf.float64)
    mixed = None
    for y, a_y, source in zip(groups, a, sources or [None] * len(groups)):
        if trained and source is not None:
            term = _mix_normalized(y, *source, a_y)
        else:
            term = tf.reduce_sum(_blocks(y, c) * a_y, axis=3)
        mixed = term if mixed is None else mixed + term
    if not spec.training:
        return mixed, coeffs
    return (mixed, coeffs, *_new_moving_stats(stats, spec, moving_mean, moving_variance, sources))


def _new_moving_stats(stats, spec, moving_mean, moving_variance, sources):
    """The moving averages after this batch, in bn_slots order.

    `stats`: (mean, variance) of the BN stages (`EdgeLayout.stage1`, then
    `stage2`). Keras's BN (the reference) averages the biased variance: the
    fused BN's unbiased one times (n - 1) / n, n = B H W of a normalised
    output (every BN of the edge is at its output resolution). Computed
    inside the edge's graph function, so the layer only assigns (the outer
    graph spent 18 ms of tracing per edge on this arithmetic).
    """
    if not stats:  # an edge without BatchNorm (zero and skip at stride 1)
        return moving_mean, moving_variance
    layout = edge_layout(spec.primitives, spec.stride)
    y = next(source[0] for source in sources if source is not None)
    dtype = moving_mean.dtype  # float32, or float64 in a float64 layer
    slots = layout.stage1 + layout.stage2
    index = [slots.index(slot) for slot in layout.bn_slots]
    mean, variance = (
        tf.gather(tf.reshape(tf.cast(tf.concat(values, axis=0), dtype), [len(slots), -1]), index)
        for values in zip(*stats)
    )
    variance = _biased(variance, y)
    # Statistics, not a path of the loss: without the stops, the edge's
    # backward graph carried ~50 nodes of gradient from these outputs, through
    # the gather, to the BN's statistics, where the fused BN's gradient drops it.
    return (tf.stop_gradient(op_math.moving_average(moving_mean, mean)),
            tf.stop_gradient(op_math.moving_average(moving_variance, variance)))


def _pieces(spec):
    pieces = _conv_piece_shapes(spec.channels, spec.stride, spec.primitives)
    if spec.mixing == "attention":
        pieces += attention.attention_param_shapes(len(spec.primitives), spec.hidden_units)
    return pieces


# How the edges enter the step's graph (docs/bench-log.md, "Edge functions"):
# "inline": each edge's ops traced into the graph (210 copies at paper size);
# "function": one tf.function per EdgeSpec and input shape, called by every
# edge of that shape (traced once; TensorFlow inlines the calls again before
# Grappler); "noinline": the same, kept as calls, so Grappler and kernel
# creation also see each edge graph once.
EDGE_GRAPH_MODES = ("inline", "function", "noinline")
_EDGE_FUNCTIONS = {
    "function": tf.function(_edge_forward, autograph=False),
    "noinline": tf.function(_edge_forward, autograph=False, experimental_attributes={"_noinline": True}),
}
_mode = ["function"]


def set_edge_graph_mode(mode):
    """One of EDGE_GRAPH_MODES for the edges called from now on."""
    if mode not in EDGE_GRAPH_MODES:
        raise UserError(f"Expected an edge graph mode in {EDGE_GRAPH_MODES}. Received: {mode!r}")
    _mode[0] = mode


def _in_xla_context():
    """Whether the graph being traced is XLA-compiled (`jit_compile=True`).

    XLA compiled a step that calls the shared edge functions anew at every
    call (a 1-cell supernet: 12-20 s a step against 0.05 s inline), so
    under XLA the edges are traced inline. A private TensorFlow helper: if
    it moves, the edges stay functions.
    """
    try:
        from tensorflow.python.ops import control_flow_util

        return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
    except (ImportError, AttributeError):
        return False


def _edge_graph(spec, *args):
    if _mode[0] == "inline" or not tf.inside_function() or _in_xla_context():
        return _edge_forward(spec, *args)
    return _EDGE_FUNCTIONS[_mode[0]](spec, *args)


@_register
class MixedEdge(keras.layers.Layer):
    """Edge (i, j) of a supernet cell: o_bar(x) = sum_k a_k o_k(x) (eq. 4.2).

    `mixing="attention"`: a from the architecture self-attention module
    (eq. 4.3-4.5); `mixing="uniform"`: fixed a_k = 1/|O| (the plain supernet
    of the timing benchmark); `mixing="alpha"`: a = softmax(alpha), DARTS's
    eq. 3.1, from this edge's row of architecture parameters `alpha` [|O|]
    passed to `call` (they live in `alphas.ArchitectureParameters`, shared
    between cells or not); `mixing="path"`: a is the one-hot row passed to
    `call` (RSPS, `path_sampler.py`). Returns `(mixed, coefficients [B, |O|])`.
    """

    def __init__(self, channels, stride=1, hidden_units=16, mixing="attention", embedding="post_bn",
                 attention_init="torch", attention_lr_multiplier=1.0, primitives=None, skip_dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if stride not in (1, 2):
            raise UserError(f"Expected stride 1 or 2. Received: stride={stride}")
        if mixing not in MIXINGS:
            raise UserError(f"Expected mixing in {MIXINGS}. Received: mixing={mixing!r}")
        if channels < 2 or channels % 2:
            raise UserError(f"Expected an even channels >= 2. Received: channels={channels}")
        check_attention_options(embedding, attention_init, attention_lr_multiplier)
        if isinstance(skip_dropout, bool) or not isinstance(skip_dropout, (int, float)) or not 0 <= skip_dropout < 1:
            raise UserError(f"Expected a skip_dropout rate in [0, 1). Received: skip_dropout={skip_dropout!r}")
        self.skip_dropout = float(skip_dropout)
        self.channels = channels
        self.stride = stride
        self.hidden_units = hidden_units
        self.mixing = mixing
        self.embedding = embedding
        self.attention_init = attention_init
        self.attention_lr_multiplier = float(attention_lr_multiplier)
        self.primitives = edge_layout(DARTS_PRIMITIVES if primitives is None else primitives, stride).primitives
        self.pieces = _pieces(EdgeSpec(channels, stride, hidden_units, mixing, False, embedding, self.primitives))
        self.bn_slots = _bn_slots(stride, self.primitives)
        # The stability experiment (paper §5.3.1, Fig. 3) replaces one mixed
        # edge at a time by its selected op. It sets this to an int32
        # tf.Variable before the model is traced: k >= 0 makes the edge output
        # o_k(x) alone (coefficient 1), -1 leaves it mixed, -k - 2 removes op
        # k (its coefficient 0: perturbation selection). One trace serves
        # every edge of the sweep. Not a weight, not saved.
        self.replacement = None

    def build(self, input_shape):
        if input_shape[-1] != self.channels:
            raise UserError(
                f"Expected {self.channels} input channels. Received: input_shape={input_shape}"
            )
        size = sum(math.prod(shape) for _, shape, _ in self.pieces)
        self.kernel = self.add_weight(shape=(size,), initializer=self._initializer, name="kernel")
        stats_shape = (len(self.bn_slots), self.channels)
        self.moving_mean = self.add_weight(
            shape=stats_shape, initializer="zeros", trainable=False, autocast=False, name="moving_mean"
        )
        self.moving_variance = self.add_weight(
            shape=stats_shape, initializer="ones", trainable=False, autocast=False, name="moving_variance"
        )

    def _initializer(self, shape, dtype=None):
        # Each piece gets PyTorch's default init for its own fan-in,
        # U(-1/sqrt(fan_in), 1/sqrt(fan_in)): one U(-1, 1) draw for the whole
        # vector times each piece's bound (one random op per edge, not one per
        # piece: building the paper-size supernet spent 4 of its 7 s here).
        bounds = np.concatenate([
            np.full(math.prod(piece_shape), 1.0 / math.sqrt(fan_in)) for _, piece_shape, fan_in in self.pieces
        ])
        unit = keras.initializers.RandomUniform(-1.0, 1.0)(shape, dtype=dtype)
        if self.attention_init == "zero_output":
            zero = np.concatenate([np.full(math.prod(shape), name in ("t4_kernel", "t4_bias"))
                                   for name, shape, _ in self.pieces])
            bounds = np.where(zero, 0.0, bounds)
        return unit * ops.convert_to_tensor(bounds, dtype=unit.dtype)

    def attention_start(self):
        """Where T1..T4 begin in the flat kernel (they are its last pieces); None without attention."""
        if self.mixing != "attention":
            return None
        return sum(math.prod(shape) for _, shape, _ in
                   _conv_piece_shapes(self.channels, self.stride, self.primitives))

    def scale_gradient(self, gradient, frozen=None, frozen_gradient=None):
        """This edge's kernel gradient with T1..T4's part times `attention_lr_multiplier`.

        `frozen` (a bool tensor, the warm-up): where true, T1..T4's part is
        `frozen_gradient()` instead, the gradient that leaves them unchanged.

        The multiplier m gives T1..T4 m times the learning rate of the ops;
        the train step applies it after the global-norm clip, so the clip
        still sees the loss's own gradient (coupled weight decay is added by
        the optimizer afterwards, unscaled).
        """
        start = self.attention_start()
        if start is None or (self.attention_lr_multiplier == 1.0 and frozen is None):
            return gradient
        ops_part, attention_part = tf.split(gradient, [start, gradient.shape[0] - start])
        if self.attention_lr_multiplier != 1.0:
            attention_part = attention_part * self.attention_lr_multiplier
        if frozen is not None:
            # The warm-up: T1..T4's part replaced by `frozen_gradient()`, which
            # cancels the optimizer's weight decay (`model._frozen_gradient`).
            attention_part = tf.where(frozen, frozen_gradient(), attention_part)
        return tf.concat([ops_part, attention_part], axis=0)

    def unpack(self, flat):
        """The flat weight vector split into its pieces, by name, in their shapes."""
        return _unpack(flat, self.pieces)

    def call(self, x, alpha=None, training=None):
        if (alpha is None) != (self.mixing not in ("alpha", "path")):
            raise UserError(
                f"Expected an alpha row (or a path row) exactly when mixing is 'alpha' (or 'path'). "
                f"Received: mixing={self.mixing!r}, alpha={'None' if alpha is None else 'a tensor'}"
            )
        spec = self._spec(training)
        x = tf.convert_to_tensor(x)
        replacement = None if self.replacement is None else tf.convert_to_tensor(self.replacement)
        result = _edge_graph(
            spec, x, ops.cast(self.kernel, self.compute_dtype),
            tf.convert_to_tensor(self.moving_mean), tf.convert_to_tensor(self.moving_variance), alpha, replacement,
            self._dropout_seed(x) if spec.skip_dropout > 0 and spec.training else None,
        )
        mixed, coeffs = result[:2]
        if training:
            self.moving_mean.assign(result[2])
            self.moving_variance.assign(result[3])
        return mixed, coeffs

    def _spec(self, training):
        return EdgeSpec(self.channels, self.stride, self.hidden_units, self.mixing, bool(training), self.embedding,
                        self.primitives, self.skip_dropout if self.stride == 1 else 0.0)

    def _dropout_seed(self, x):
        """The skip dropout's seed [2]: this edge's name, and a value of the batch it sees.

        A function of the inputs, not a random state: the same batch at the
        same edge draws the same mask, after a resume too; edges fed the same
        node draw different ones.
        """
        edge = zlib.crc32(self.name.encode()) & 0x7FFFFFFF
        batch = tf.bitcast(tf.reduce_sum(tf.cast(x[:, 0, 0, :], tf.float32)), tf.int32)
        return tf.stack([tf.constant(edge, tf.int32), batch])

    def embeddings(self, x, training=False):
        """E [B, |O|] of eq. 4.3 for the edge input `x`, as the module sees it (diagnostics).

        Both sources, whichever the edge uses: {"post_bn": E, "pre_bn": E}.
        In training mode the BatchNorms use the batch's statistics and the
        moving ones are not touched.
        """
        spec = self._spec(training)
        w = _unpack(ops.cast(self.kernel, self.compute_dtype), self.pieces)
        groups, pre_bn_groups, order, _, _ = _op_outputs(
            spec, tf.convert_to_tensor(x), w, tf.convert_to_tensor(self.moving_mean),
            tf.convert_to_tensor(self.moving_variance))
        return {source: _embedding(spec._replace(embedding=source), groups, pre_bn_groups, order)
                for source in EMBEDDINGS}

    def compute_output_spec(self, x, alpha=None, training=None):
        out_shape = list(x.shape)
        if self.stride == 2:
            out_shape[1:3] = [None if d is None else -(-d // 2) for d in out_shape[1:3]]
        return (
            keras.KerasTensor(out_shape, dtype=self.compute_dtype),
            keras.KerasTensor((x.shape[0], len(self.primitives)), dtype="float32" if alpha is None or self.mixing == "path" else alpha.dtype),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "stride": self.stride,
            "hidden_units": self.hidden_units,
            "mixing": self.mixing,
            "embedding": self.embedding,
            "attention_init": self.attention_init,
            "attention_lr_multiplier": self.attention_lr_multiplier,
            "primitives": list(self.primitives),
            "skip_dropout": self.skip_dropout,
        }


def check_attention_options(embedding, attention_init, attention_lr_multiplier,
                            names=("embedding", "attention_init", "attention_lr_multiplier")):
    """The attention options' values, checked: one line naming the bad one (as `names` call them)."""
    if embedding not in EMBEDDINGS:
        raise UserError(f"{names[0]}={embedding!r} is not one of {', '.join(EMBEDDINGS)}")
    if attention_init not in ATTENTION_INITS:
        raise UserError(f"{names[1]}={attention_init!r} is not one of {', '.join(ATTENTION_INITS)}")
    if isinstance(attention_lr_multiplier, bool) or not isinstance(attention_lr_multiplier, (int, float)) \
            or not math.isfinite(attention_lr_multiplier) or attention_lr_multiplier <= 0:
        raise UserError(f"{names[2]}={attention_lr_multiplier!r} is not a number > 0")
