"""The candidate operations as data: one row per op (SPEC §2).

Every place that needs to know what an op is reads it from here: the
reference layers (`layers/ops.make_op`), the supernet's fused edge (its
weight pieces, BatchNorm slots, stages and output blocks), the fused
kernel's op map, selection, telemetry's parameter-free set and the tests.

An op is one of five kinds, with the sizes that make it:

- `zero`: no output (zeros), no weights;
- `pool`: a 3x3 max or average pool (stride s), BatchNorm(affine=False)
  after it in the supernet (DARTS MixedOp), none in the evaluation network;
- `skip`: identity at stride 1, FactorizedReduce (two 1x1 convs, BN) at 2;
- `sep_conv`: two stacked (ReLU, k x k depthwise, 1x1, BN), the first strided;
- `dil_conv`: ReLU, k x k depthwise with dilation d (stride s), 1x1, BN.

A new op of these kinds is a new row (`register_op`); the DARTS ops are
the rows below and the default space (`search_space.DARTS_PRIMITIVES`).
"""

import dataclasses
import re

from asmnas_tf.errors import UserError

KINDS = ("zero", "pool", "skip", "sep_conv", "dil_conv")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One candidate op: its kind and sizes.

    `short`: the prefix of the op's weight pieces and BatchNorm slots in
    the fused edge (`sep3_dw1`, `sep3_a`), unique in a space.
    """

    name: str
    kind: str
    short: str
    kernel_size: int = 0
    dilation: int = 1
    pool: str = ""

    @property
    def parameter_free(self):
        """No trainable weight at stride 1 (zero, skip, pools: the ops a weight-sharing supernet favours)."""
        return self.kind in ("zero", "pool", "skip")

    def conv_pieces(self, channels, stride):
        """(piece name, shape, fan_in) of the op's convolution kernels in the fused edge."""
        c, k, s = channels, self.kernel_size, self.short
        if self.kind == "sep_conv":
            return [(f"{s}_dw1", (k, k, c, 1), k * k), (f"{s}_pw1", (1, 1, c, c), c),
                    (f"{s}_dw2", (k, k, c, 1), k * k), (f"{s}_pw2", (1, 1, c, c), c)]
        if self.kind == "dil_conv":
            return [(f"{s}_dw", (k, k, c, 1), k * k), (f"{s}_pw", (1, 1, c, c), c)]
        if self.kind == "skip" and stride == 2:
            return [(f"{s}_even", (1, 1, c, c // 2), c), (f"{s}_odd", (1, 1, c, c // 2), c)]
        return []

    def bn_slots(self, stride):
        """The op's BatchNorm slots in the supernet (each C channels), in order."""
        if self.kind == "sep_conv":
            return (f"{self.short}_a", f"{self.short}_b")
        if self.kind in ("pool", "dil_conv") or (self.kind == "skip" and stride == 2):
            return (self.short,)
        return ()


def _darts_rows():
    return (
        OpSpec("zero", "zero", "zero"),
        OpSpec("max_pool_3x3", "pool", "max_pool", 3, pool="max"),
        OpSpec("avg_pool_3x3", "pool", "avg_pool", 3, pool="avg"),
        OpSpec("skip_connect", "skip", "skip"),
        OpSpec("sep_conv_3x3", "sep_conv", "sep3", 3),
        OpSpec("sep_conv_5x5", "sep_conv", "sep5", 5),
        OpSpec("dil_conv_3x3", "dil_conv", "dil3", 3, 2),
        OpSpec("dil_conv_5x5", "dil_conv", "dil5", 5, 2),
    )


OP_TABLE = {row.name: row for row in _darts_rows()}


def register_op(spec):
    """Adds `spec` to the table (a user's op of one of KINDS); returns it.

    Refused with one line: an unknown kind, a bad name, a name or short
    already taken by another op, a pool other than 3x3 max/avg, an even
    or < 1 kernel size.
    """
    if not isinstance(spec, OpSpec):
        raise UserError(f"register_op: expected an OpSpec; received {spec!r}")
    if spec.kind not in KINDS:
        raise UserError(f"register_op: kind={spec.kind!r} is not one of {', '.join(KINDS)}")
    for field in ("name", "short"):
        if not _NAME.match(getattr(spec, field)):
            raise UserError(f"register_op: {field}={getattr(spec, field)!r} is not a lower-case identifier")
    if spec.kind == "pool" and (spec.pool not in ("max", "avg") or spec.kernel_size != 3):
        raise UserError(f"register_op: a pool is 3x3 'max' or 'avg'; received pool={spec.pool!r}, "
                        f"kernel_size={spec.kernel_size}")
    if spec.kind in ("sep_conv", "dil_conv") and (spec.kernel_size < 1 or spec.kernel_size % 2 == 0
                                                   or spec.dilation < 1):
        raise UserError(f"register_op: {spec.name}: expected an odd kernel_size >= 1 and dilation >= 1; "
                        f"received kernel_size={spec.kernel_size}, dilation={spec.dilation}")
    existing = OP_TABLE.get(spec.name)
    if existing is not None and existing != spec:
        raise UserError(f"register_op: the op {spec.name!r} is already in the table as {existing}")
    taken = [row.name for row in OP_TABLE.values() if row.short == spec.short and row.name != spec.name]
    if taken:
        raise UserError(f"register_op: short={spec.short!r} is already the short of {taken[0]!r}")
    OP_TABLE[spec.name] = spec
    return spec


def unregister_op(name):
    """Removes a registered op (not a DARTS op); for tests and notebooks."""
    if name in {row.name for row in _darts_rows()}:
        raise UserError(f"unregister_op: {name!r} is a DARTS op and stays in the table")
    OP_TABLE.pop(name, None)


def op_spec(name, binding="op"):
    """The table's row for `name`; one line naming the binding and what is accepted otherwise."""
    row = OP_TABLE.get(name) if isinstance(name, str) else None
    if row is None:
        raise UserError(f"{binding}={name!r} is not an op of the op table (accepted: {', '.join(OP_TABLE)})")
    return row


def parameter_free(primitives):
    """The names in `primitives` whose op is parameter-free, in order."""
    return tuple(name for name in primitives if op_spec(name).parameter_free)
