"""Build and load the fused attention kernels (`fused_attention.cc`): ASM's edge in two CPU ops.

On a CPU, ASM's step was ~1.2x the uniform-mixing step (bench/README.md):
its extra passes over every edge's op outputs (eq.
4.3's means, the coefficients' gradient, the embedding's gradient added to
the mixing's), each a TensorFlow op writing a full-size temporary, and the
~35 small ops of T1..T4 and their gradient per edge, each an op dispatch.
The two kernels do each direction in one op.

`make setup` builds the library next to this file with the C++ compiler and
TensorFlow's own compile and link flags (`python -m
asmnas_tf.kernels.fused_attention`). Where it is not built (no compiler, a
package installed without the set-up), `load()` returns None and the edge
keeps the TensorFlow-op path, which computes the same numbers: it says so
once per process. With a GPU visible the edge keeps the TensorFlow ops too
(these kernels are CPU only).
"""

import os
import platform
import subprocess
import sys

import gin

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fused_attention.cc")
LIBRARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_fused_attention.so")
# x86-64-v3 (AVX2, FMA): every machine this project has run on (Intel with
# AVX-512, AMD Zen 5), without tying the library to the one that built it.
_ARCH_FLAGS = ["-march=x86-64-v3"] if platform.machine() in ("x86_64", "AMD64") else []

_loaded = {}


def build(compiler=None):
    """Compiles the library (LIBRARY) from SOURCE; returns its path. Raises CalledProcessError on failure."""
    import tensorflow as tf

    compiler = compiler or os.environ.get("CXX", "g++")
    partial = LIBRARY + ".partial"  # renamed when complete: a failed build leaves no library behind
    command = [compiler, "-shared", "-fPIC", "-O3", *_ARCH_FLAGS, "-Wno-deprecated-declarations", SOURCE,
               "-o", partial, *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]
    try:
        # The compiler's warnings on TensorFlow's headers are not this build's: shown only if it fails.
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            print(done.stderr[-4000:], file=sys.stderr)
            raise subprocess.CalledProcessError(done.returncode, command)
        os.replace(partial, LIBRARY)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return LIBRARY


def _stale():
    return not os.path.exists(LIBRARY) or os.path.getmtime(LIBRARY) < os.path.getmtime(SOURCE)


@gin.configurable
def use_fused_attention(enabled=True):
    """Whether ASM's training edges use the fused kernels where they can (gin: `use_fused_attention.enabled`)."""
    return enabled


def load():
    """The kernels' op module, or None where they are off, not built (or older than their source), or a GPU is visible."""
    if not use_fused_attention():
        return None
    if "module" not in _loaded:
        _loaded["module"] = _load_library()
    return _loaded["module"]


def _load_library():
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return None  # the TensorFlow ops run on the GPU; these kernels are CPU only
    why = None
    if _stale():
        why = f"{os.path.basename(LIBRARY)} is not built (or older than its source): `make setup` builds it"
    else:
        try:
            return tf.load_op_library(LIBRARY)
        except (tf.errors.OpError, OSError) as error:
            why = f"{os.path.basename(LIBRARY)} did not load ({error})"
    print(f"Note: ASM's edges use TensorFlow ops, not the fused kernels: {why}", file=sys.stderr)
    return None


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        print(build())
    except (OSError, subprocess.CalledProcessError) as error:  # no compiler, or it failed (its output above)
        sys.exit(f"error: the fused attention kernels did not build: {error}")
