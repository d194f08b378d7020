"""Where the set-up built ASM's fused kernels, a test of the fused path fails unless they ran.

`make setup` (and so `make test`) builds them; without this, a test of the
fused path on a machine where they did not load would compare the
TensorFlow ops with themselves and pass. Where a missing library is
legitimate (no C++ compiler), ASMNAS_TF_NO_KERNELS=1 skips those tests,
with that reason.
"""

import collections
import os

import pytest
import tensorflow as tf

from asmnas_tf.kernels import fused_attention

NO_KERNELS = "ASMNAS_TF_NO_KERNELS"


def require_kernels():
    """The kernels' op module; skips where they are legitimately absent, fails where the set-up builds them."""
    if os.environ.get(NO_KERNELS) == "1":
        pytest.skip(f"{NO_KERNELS}=1: the fused kernels are not built here")
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: the fused kernels are CPU only, the edge keeps TensorFlow ops")
    kernels = fused_attention.load()
    if kernels is None:
        why = fused_attention.why_not_loaded() or "use_fused_attention.enabled is False"
        pytest.fail(f"the fused attention kernels did not load: {why}. `make setup` builds them; "
                    f"set {NO_KERNELS}=1 where there is no C++ compiler", pytrace=False)
    return kernels


def count_kernel_calls(monkeypatch):
    """A Counter of the kernels' op calls by name, from now to the end of the test.

    Counts the Python calls: one per edge call or gradient in eager mode,
    one per trace in a tf.function.
    """
    kernels = require_kernels()
    calls = collections.Counter()

    class Counting:
        def __getattr__(self, name):
            op = getattr(kernels, name)

            def counted(*args, **kwargs):
                calls[name] += 1
                return op(*args, **kwargs)

            return counted

    counting = Counting()
    monkeypatch.setattr(fused_attention, "load", lambda: counting if fused_attention.use_fused_attention()[0] else None)
    return calls
