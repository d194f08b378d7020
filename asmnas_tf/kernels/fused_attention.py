"""Build and load the fused attention kernels (`fused_attention.cc`): ASM's edge in two CPU ops.

On a CPU, ASM's step was ~1.2x the uniform-mixing step (docs/bench-log.md):
its extra passes over every edge's op outputs (eq.
4.3's means, the coefficients' gradient, the embedding's gradient added to
the mixing's), each a TensorFlow op writing a full-size temporary, and the
~35 small ops of T1..T4 and their gradient per edge, each an op dispatch.
The two kernels do each direction in one op.

`python -m asmnas_tf.kernels.fused_attention` (which `make setup` runs)
builds the library with the C++ compiler and TensorFlow's own compile and
link flags: next to this file, or, where this folder is not writable (a
package installed as root), in the user's cache folder under a name that
holds TensorFlow's version and the source's hash, so that a library built
for other code is never loaded. Where it is not built (no compiler, a
package installed without the build) or is older than its source, the
first `load()` of a process builds it (`use_fused_attention.build_if_missing`,
on by default). Where it cannot be built, or this CPU lacks the
instructions it is compiled for (x86-64-v3), `load()` returns
None and the edge keeps the TensorFlow-op path, which computes the same
numbers: it says so once per process. With a GPU visible the edge keeps
the TensorFlow ops too (these kernels are CPU only).
"""

import hashlib
import os
import platform
import subprocess
import sys

import gin

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fused_attention.cc")
LIBRARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_fused_attention.so")
BUILD_COMMAND = "python -m asmnas_tf.kernels.fused_attention"
_X86_64 = ("x86_64", "AMD64")
# x86-64-v3 (AVX2, FMA): every machine this project has run on (Intel with
# AVX-512, AMD Zen 5), without tying the library to the one that built it.
_ARCH_FLAGS = ["-march=x86-64-v3"] if platform.machine() in _X86_64 else []
# What x86-64-v3 lets the compiler emit, as /proc/cpuinfo names it ("abm" is
# LZCNT): the compiler uses BMI, LZCNT and MOVBE in scalar code as well, so
# AVX2 and FMA alone do not make the library safe to run.
_X86_64_V3 = frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe"})

_loaded = {}


def cpu_runs_library(cpu_flags, machine=None):
    """Whether a CPU with these /proc/cpuinfo flags (None: unknown) runs code built with _ARCH_FLAGS.

    An x86-64 CPU whose flags cannot be read counts as unable: an illegal
    instruction would kill the process, the TensorFlow ops only slow it.
    """
    if (machine or platform.machine()) not in _X86_64:
        return True
    return cpu_flags is not None and _X86_64_V3 <= set(cpu_flags.split())


def _cpu_flags():
    """The `flags` line of /proc/cpuinfo, or None where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return value
    except OSError:
        pass
    return None


def _writable(directory):
    return os.access(directory, os.W_OK)


def cache_dir():
    """The user's cache folder for built libraries: $XDG_CACHE_HOME/asmnas_tf, else ~/.cache/asmnas_tf."""
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "asmnas_tf")


def cached_library():
    """The library's path in `cache_dir()` for this TensorFlow and this source: another of either never matches."""
    import tensorflow as tf

    with open(SOURCE, "rb") as source:
        digest = hashlib.sha256(source.read()).hexdigest()[:16]
    return os.path.join(cache_dir(), f"_fused_attention-tf{tf.__version__}-{digest}.so")


def library_to_build():
    """LIBRARY where its folder is writable, else `cached_library()`."""
    return LIBRARY if _writable(os.path.dirname(LIBRARY)) else cached_library()


def build(compiler=None, library=None):
    """Compiles SOURCE to `library` (default: `library_to_build()`); returns its path.

    Raises CalledProcessError where the compiler fails.
    """
    import tensorflow as tf

    compiler = compiler or os.environ.get("CXX", "g++")
    library = library or library_to_build()
    os.makedirs(os.path.dirname(library), exist_ok=True)
    # Renamed when complete: a failed build leaves no library behind, and two
    # processes building at once each rename a whole library of their own.
    partial = f"{library}.{os.getpid()}.partial"
    command = [compiler, "-shared", "-fPIC", "-O3", *_ARCH_FLAGS, "-Wno-deprecated-declarations", SOURCE,
               "-o", partial, *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]
    try:
        # The compiler's warnings on TensorFlow's headers are not this build's: shown only if it fails.
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            print(done.stderr[-4000:], file=sys.stderr)
            raise subprocess.CalledProcessError(done.returncode, command)
        os.replace(partial, library)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return library


def _stale():
    return not os.path.exists(LIBRARY) or os.path.getmtime(LIBRARY) < os.path.getmtime(SOURCE)


def _library_to_load():
    """LIBRARY where it is not older than SOURCE, else `cached_library()` where built; None where neither."""
    if not _stale():
        return LIBRARY
    cached = cached_library()
    return cached if os.path.exists(cached) else None


@gin.configurable
def use_fused_attention(enabled=True, build_if_missing=True):
    """(enabled, build_if_missing): whether ASM's training edges use the fused kernels where they can,
    and whether the first use builds them where they are not built (gin: `use_fused_attention.*`)."""
    return enabled, build_if_missing


def load():
    """The kernels' op module, or None where they are off, not built (or stale), not for this CPU, or a GPU is visible."""
    enabled, build_if_missing = use_fused_attention()
    if not enabled:
        return None
    if "module" not in _loaded:
        _loaded["module"] = _load_library(build_if_missing)
    return _loaded["module"]


def why_not_loaded():
    """Why `load()` found no library in this process (its note's reason), or None."""
    return _loaded.get("why")


def _why_this_cpu_cannot(cpu_flags):
    """None where this CPU runs the library, else why not (the note's reason)."""
    if cpu_runs_library(cpu_flags):
        return None
    compiled_for = "AVX2/FMA (x86-64-v3, which the library is compiled for"
    if cpu_flags is None:
        return f"cannot tell whether this CPU has {compiled_for}): no flags in /proc/cpuinfo"
    return f"this CPU lacks {compiled_for}: no {', '.join(sorted(_X86_64_V3 - set(cpu_flags.split())))})"


def _build_on_first_use():
    """(library, None) once built here (a pip install has no `make setup`), else (None, why not)."""
    print("Note: building ASM's fused CPU kernels once (~10-30 s; "
          "use_fused_attention.build_if_missing = False skips it)", file=sys.stderr)
    try:
        return build(), None
    except (OSError, subprocess.CalledProcessError) as error:
        return None, f"{os.path.basename(LIBRARY)} is not built and did not build here ({error})"


def _load_library(build_if_missing=True):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return None  # the TensorFlow ops run on the GPU; these kernels are CPU only
    why = _why_this_cpu_cannot(_cpu_flags())  # checked first: running the library would kill the process
    library = None if why else _library_to_load()
    if library is None and why is None and build_if_missing:
        library, why = _build_on_first_use()
    if library is not None:
        try:
            return tf.load_op_library(library)
        except (tf.errors.OpError, OSError) as error:
            why = f"{library} did not load ({error})"
    elif why is None:
        why = f"{os.path.basename(LIBRARY)} is not built (or older than its source): `{BUILD_COMMAND}` builds it"
    _loaded["why"] = why
    print(f"Note: ASM's edges use TensorFlow ops, not the fused kernels: {why}", file=sys.stderr)
    return None


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        print(f"Built the fused attention kernels: {build()}")
    except (OSError, subprocess.CalledProcessError) as error:  # no compiler, or it failed (its output above)
        sys.exit(f"error: the fused attention kernels did not build: {error}")


if __name__ == "__main__":
    main()
