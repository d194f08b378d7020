"""How big a built network is: trainable parameters and multiply-adds per image.

Parameters are the trainable weights (BN's gamma and beta count, its moving
statistics do not, as in PyTorch's `count_parameters`). The auxiliary head
is reported on its own and left out of the network's count, as DARTS's
`utils.count_parameters_in_MB` does.

Multiply-adds are counted analytically from the weight shapes and the
output sizes the functional graph records: a convolution kernel
[kh, kw, C_in, C_out] (a depthwise one is [kh, kw, C, 1]) costs its size
times the H x W of the layer's output, a dense kernel its size. Every conv
inside one of our op layers runs at that layer's output resolution (the
strided part is the first), so this is exact. Pools, BN, additions and
ReLUs are not counted, as usual; the auxiliary head is excluded (it does
not run at inference). A dilated conv at stride 2 is counted at its output
resolution, as PyTorch runs it, although TensorFlow computes it at stride 1.
"""

import json
import math

from asmnas_tf.layers.aux_head import AuxiliaryHead


def _count(variables):
    return int(sum(math.prod(v.shape) for v in variables))


def _layer_macs(layer):
    kernels = [v for v in layer.trainable_weights if len(v.shape) in (2, 4)]
    if not kernels:
        return 0
    shape = layer.output.shape
    pixels = shape[1] * shape[2] if len(shape) == 4 else 1
    total = 0
    for kernel in kernels:
        total += math.prod(kernel.shape) * (pixels if len(kernel.shape) == 4 else 1)
    return int(total)


def size_report(model):
    """{"params", "aux_params", "total_params", "macs"} of a built functional model."""
    params = aux_params = macs = 0
    for layer in model.layers:
        count = _count(layer.trainable_weights)
        if isinstance(layer, AuxiliaryHead):
            aux_params += count
            continue
        params += count
        macs += _layer_macs(layer)
    return {
        "params": params,
        "aux_params": aux_params,
        "total_params": params + aux_params,
        "macs": macs,
    }


def describe_size(report):
    return (
        f"{report['params']:,} parameters ({report['params'] / 1e6:.2f} M) + "
        f"{report['aux_params']:,} in the auxiliary head; "
        f"{report['macs'] / 1e6:.1f} M multiply-adds per image"
    )


def size_json(report):
    return json.dumps(report, indent=1) + "\n"
