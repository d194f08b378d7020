"""ASM's fused CPU kernels (`kernels/fused_attention.cc`) against the TensorFlow-op path of the edge.

The same edge, weights and batch through both paths: outputs, coefficients
and every gradient (the edge input, the flat kernel: the ops' weights and
T1..T4) to 1e-5. `tests/test_mixed_edge.py` holds both paths to the
reference op layers as well. Where the set-up built the kernels, the
fused-path tests fail unless the kernels ran (`fused_kernels.py`).
"""

import hashlib
import os
import platform
import subprocess

import numpy as np
import pytest
import tensorflow as tf

import gin

from asmnas_tf.kernels import fused_attention
from asmnas_tf.layers import mixed_edge
from asmnas_tf.layers.mixed_edge import MixedEdge
from asmnas_tf.space.primitives import PRIMITIVES
from fused_kernels import count_kernel_calls, require_kernels

C = 8


def _with_kernels(enabled, fn):
    gin.bind_parameter("use_fused_attention.enabled", enabled)
    try:
        return fn()
    finally:
        gin.clear_config()


def _edge_results(edge, x, target, weights):
    with tf.GradientTape() as tape:
        tape.watch(x)
        mixed, coeffs = edge(x, training=True)
        loss = tf.reduce_mean((mixed - target) ** 2) + tf.reduce_sum(coeffs * weights)
    return [np.asarray(t) for t in (mixed, coeffs, *tape.gradient(loss, [x, edge.kernel]))]


def test_the_set_up_built_the_kernels_and_they_load():
    """`make setup` builds them (g++ and TensorFlow's flags): the suite runs the fused path."""
    require_kernels()
    assert not fused_attention._stale()


@pytest.mark.parametrize("size", [7, 8])
@pytest.mark.parametrize("stride", [1, 2])
def test_fused_kernels_equal_the_tensorflow_ops(stride, size, monkeypatch):
    calls = count_kernel_calls(monkeypatch)
    rng = np.random.default_rng(stride * 10 + size)
    x = tf.constant(rng.normal(size=(3, size, size, C)).astype("float32"))
    edge = MixedEdge(C, stride, hidden_units=8)
    edge(x)
    # Larger T1..T4 weights than their init: coefficients far from uniform, ReLUs both ways.
    start = rng.normal(size=edge.kernel.shape).astype("float32")
    edge.kernel.assign(start)
    out = -(-size // stride)
    target = tf.constant(rng.normal(size=(3, out, out, C)).astype("float32"))
    weights = tf.constant(rng.normal(size=(3, len(PRIMITIVES))).astype("float32"))
    fused = _with_kernels(True, lambda: _edge_results(edge, x, target, weights))
    edge.kernel.assign(start)
    reference = _with_kernels(False, lambda: _edge_results(edge, x, target, weights))
    assert calls == {"asm_attend_forward": 1, "asm_attend_backward": 1}  # the fused run's, the reference's none
    assert fused[1].std(axis=1).min() > 1e-3  # the coefficients do differ between ops
    for got, want in zip(fused, reference):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_the_kernel_names_a_shape_it_cannot_take():
    kernels = require_kernels()
    ys = [tf.zeros([2, 4, 4, 3 * C]), tf.zeros([2, 4, 4, C])]
    widths = [8, 16, 16, 16, 8]
    params = [t for i in range(4) for t in (tf.zeros([widths[i], widths[i + 1]]), tf.zeros([widths[i + 1]]))]
    with pytest.raises(tf.errors.InvalidArgumentError, match="4 op output blocks but 3 primitive indices"):
        kernels.asm_attend_forward(ys=ys, params=params, channels=C, num_primitives=8, primitive_of_block=[1, 2, 3])
    with pytest.raises(tf.errors.InvalidArgumentError, match="op output group 1 has shape"):
        kernels.asm_attend_forward(ys=[ys[0], tf.zeros([2, 4, 4, C + 1])], params=params, channels=C,
                                   num_primitives=8, primitive_of_block=[1, 2, 3, 4])


def test_a_training_step_graph_holds_the_kernels_ops(monkeypatch):
    """Traced (as `fit` runs it), ASM's training step is the two kernels; on TensorFlow ops, neither."""
    require_kernels()
    monkeypatch.setattr(mixed_edge, "_mode", ["inline"])  # the edge in the step's own graph, traced afresh
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 6, 6, C)).astype("float32"))
    edge = MixedEdge(C, 1, hidden_units=8)
    edge(x)

    def op_types(enabled):
        def step(t):
            with tf.GradientTape() as tape:
                mixed, coeffs = edge(t, training=True)
                loss = tf.reduce_sum(mixed * mixed) + tf.reduce_sum(coeffs[:, 2])
            return tape.gradient(loss, edge.kernel)

        graph = _with_kernels(enabled, lambda: tf.function(step).get_concrete_function(x).graph.as_graph_def())
        return {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}

    kernel_ops = {"AsmAttendForward", "AsmAttendBackward"}
    assert kernel_ops <= op_types(True)
    assert not kernel_ops & op_types(False)


def _no_library(monkeypatch, tmp_path, build_if_missing=False):
    """LIBRARY and the user's cache in tmp_path, neither built; load() starts afresh."""
    monkeypatch.setattr(fused_attention, "LIBRARY", str(tmp_path / "_fused_attention.so"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(fused_attention, "_loaded", {})
    monkeypatch.setattr(fused_attention, "use_fused_attention", lambda: (True, build_if_missing))


def _fake_compiler(tmp_path, fails=False):
    compiler = tmp_path / "fake-g++"
    compiler.write_text("#!/bin/sh\nexit 1\n" if fails else
                        '#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && echo built > "$2"; shift; done\n')
    compiler.chmod(0o755)
    return str(compiler)


def test_the_first_use_builds_a_missing_library_once(monkeypatch, tmp_path, capfd):
    """No library: load() runs the compiler once, then loads what it wrote (here not a library: it says so)."""
    _no_library(monkeypatch, tmp_path, build_if_missing=True)
    if not fused_attention.cpu_runs_library(fused_attention._cpu_flags()):
        pytest.skip("this CPU cannot run the library: nothing is built for it")
    monkeypatch.setenv("CXX", _fake_compiler(tmp_path))
    loaded = []
    monkeypatch.setattr(tf, "load_op_library", lambda path: loaded.append(path) or pytest.fail("not a library"))
    with pytest.raises(pytest.fail.Exception):
        fused_attention.load()
    assert loaded == [str(tmp_path / "_fused_attention.so")]
    assert (tmp_path / "_fused_attention.so").read_text() == "built\n"
    assert capfd.readouterr().err.count("building ASM's fused CPU kernels once") == 1


def test_a_first_use_build_that_fails_keeps_tensorflow_ops(monkeypatch, tmp_path, capfd):
    _no_library(monkeypatch, tmp_path, build_if_missing=True)
    if not fused_attention.cpu_runs_library(fused_attention._cpu_flags()):
        pytest.skip("this CPU cannot run the library: nothing is built for it")
    monkeypatch.setenv("CXX", _fake_compiler(tmp_path, fails=True))
    assert fused_attention.load() is None
    assert fused_attention.load() is None  # tried once a process
    assert fused_attention.why_not_loaded().startswith("_fused_attention.so is not built and did not build here")
    assert list(tmp_path.glob("*.so*")) == []
    err = capfd.readouterr().err
    assert err.count("building ASM's fused CPU kernels once") == 1
    assert err.count("Note: ASM's edges use TensorFlow ops, not the fused kernels") == 1


def test_without_the_library_the_edge_keeps_tensorflow_ops_and_says_so(monkeypatch, tmp_path, capfd):
    _no_library(monkeypatch, tmp_path)
    assert fused_attention.load() is None
    assert fused_attention.load() is None  # once
    err = capfd.readouterr().err
    assert err.count("Note: ASM's edges use TensorFlow ops, not the fused kernels") == 1
    # A command that an installed package has (it has no Makefile).
    assert "`python -m asmnas_tf.kernels.fused_attention` builds it" in err
    assert "make setup" not in err


def test_a_library_older_than_its_source_is_not_loaded(monkeypatch, tmp_path, capfd):
    _no_library(monkeypatch, tmp_path)
    library = tmp_path / "_fused_attention.so"
    library.write_bytes(b"not a library")
    before = os.path.getmtime(fused_attention.SOURCE) - 10
    os.utime(library, (before, before))
    assert fused_attention._stale()
    assert fused_attention.load() is None
    assert "is not built (or older than its source)" in capfd.readouterr().err


def _flags_line(*missing):
    """A Haswell's /proc/cpuinfo flags (x86-64-v3), less those named."""
    flags = ("fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 "
             "ht syscall nx pdpe1gb rdtscp lm constant_tsc pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 "
             "x2apic movbe popcnt aes xsave avx f16c rdrand lahf_lm abm fsgsbase bmi1 avx2 smep bmi2 erms invpcid")
    return " ".join(flag for flag in flags.split() if flag not in missing)


def test_the_library_runs_only_on_a_cpu_with_what_it_is_compiled_for():
    """x86-64-v3: AVX2 and FMA (and the rest of the level); unknown flags on x86-64 count as missing."""
    assert fused_attention.cpu_runs_library(_flags_line(), "x86_64")
    assert not fused_attention.cpu_runs_library(_flags_line("avx2"), "x86_64")
    assert not fused_attention.cpu_runs_library(_flags_line("fma"), "x86_64")
    assert not fused_attention.cpu_runs_library(_flags_line("avx2", "fma"), "AMD64")
    assert not fused_attention.cpu_runs_library(_flags_line("bmi2"), "x86_64")
    assert not fused_attention.cpu_runs_library(None, "x86_64")
    assert fused_attention.cpu_runs_library(None, "aarch64")  # built without -march there


def test_on_a_cpu_without_avx2_the_library_is_not_loaded(monkeypatch, capfd):
    """The check comes before loading: an illegal instruction would kill the process."""
    monkeypatch.setattr(fused_attention, "_cpu_flags", lambda: _flags_line("avx2", "fma"))
    monkeypatch.setattr(fused_attention, "_loaded", {})
    monkeypatch.setattr(tf, "load_op_library", lambda path: pytest.fail(f"loaded {path}"))
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("built without -march off x86-64: no instruction set to check")
    assert fused_attention.load() is None
    assert fused_attention.load() is None
    err = capfd.readouterr().err
    assert err.count("this CPU lacks AVX2/FMA (x86-64-v3, which the library is compiled for: no avx2, fma)") == 1
    assert fused_attention.why_not_loaded().startswith("this CPU lacks AVX2/FMA")


def test_a_read_only_package_builds_into_the_users_cache(monkeypatch, tmp_path):
    with open(fused_attention.SOURCE, "rb") as source:
        digest = hashlib.sha256(source.read()).hexdigest()[:16]
    name = f"_fused_attention-tf{tf.__version__}-{digest}.so"
    assert fused_attention.library_to_build() == fused_attention.LIBRARY  # the checkout: next to the source
    monkeypatch.setattr(fused_attention, "_writable", lambda directory: False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fused_attention.library_to_build() == str(tmp_path / "xdg" / "asmnas_tf" / name)
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert fused_attention.library_to_build() == str(tmp_path / "home" / ".cache" / "asmnas_tf" / name)


def test_the_command_builds_into_the_cache_and_load_looks_there(monkeypatch, tmp_path, capsys):
    """`python -m asmnas_tf.kernels.fused_attention` with a read-only package: a "compiler" that writes its -o."""
    compiler = tmp_path / "fake-g++"
    compiler.write_text('#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && echo built > "$2"; shift; done\n')
    compiler.chmod(0o755)
    monkeypatch.setattr(fused_attention, "LIBRARY", str(tmp_path / "package" / "_fused_attention.so"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setattr(fused_attention, "_writable", lambda directory: False)
    assert fused_attention._library_to_load() is None
    fused_attention.main()
    cached = fused_attention.cached_library()
    assert cached.startswith(str(tmp_path / "cache" / "asmnas_tf" / "_fused_attention-tf"))
    assert capsys.readouterr().out == f"Built the fused attention kernels: {cached}\n"
    assert open(cached).read() == "built\n"
    assert not (tmp_path / "package").exists()
    assert fused_attention._library_to_load() == cached


def test_a_failed_build_leaves_no_library(monkeypatch, tmp_path):
    library = tmp_path / "_fused_attention.so"
    monkeypatch.setattr(fused_attention, "LIBRARY", str(library))
    with pytest.raises(subprocess.CalledProcessError):
        fused_attention.build(compiler="false")  # a "compiler" that fails
    assert list(tmp_path.iterdir()) == []
