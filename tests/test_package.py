"""The package as a user installs it: pip install, import, configs, the public
surface, the console scripts' flag handling, and the error split.

The installed copy is a `pip install --no-deps --target` of the checkout,
imported from another directory: what a wheel carries, not the source tree.
"""

import os
import subprocess
import sys
import tomllib

import numpy as np
import pytest

import asmnas_tf
from conftest import REPO_ROOT, needs_fashion_mnist

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
PUBLIC = {"__version__", "search", "SearchResult", "SearchConfig", "SupernetConfig", "EvalNetConfig", "SearchRemedies", "train", "TrainResult",
          "TrainConfig", "export", "build_supernet", "select_genotype", "build_eval_net", "Genotype", "Cell", "Edge", "read_genotype", "write_genotype",
          "named_genotype", "PRIMITIVES", "load_arrays", "as_image_arrays", "ImageArrays", "UserError"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    # --no-build-isolation: the venv's setuptools builds it, nothing is downloaded.
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), REPO_ROOT], check=True, env=ENV, capture_output=True, timeout=300)
    return target


def _python(code, target, cwd):
    env = dict(ENV, PYTHONPATH=str(target))
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_installed_package_imports_from_its_own_folder_with_its_configs(installed, tmp_path):
    code = ("import os, asmnas_tf; from asmnas_tf.commands import cli; "
            "print(asmnas_tf.__file__); print(cli.GIN_DIR); print(asmnas_tf.__version__); "
            "print(sorted(os.listdir(os.path.join(cli.GIN_DIR, 'search'))))")
    result = _python(code, installed, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    package_file, gin_dir, version, search_configs = result.stdout.splitlines()[-4:]
    assert package_file.startswith(str(installed)) and gin_dir.startswith(str(installed))
    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
        assert tomllib.load(f)["project"]["name"] == "asmnas-tf"
    assert version == asmnas_tf.__version__
    shipped = sorted(os.listdir(os.path.join(REPO_ROOT, "asmnas_tf", "configs", "search")))
    assert eval(search_configs) == shipped and "demo.gin" in shipped


def test_installed_search_space_imports_without_tensorflow(installed, tmp_path):
    code = ("import sys; from asmnas_tf.space.named_genotypes import named_genotype; "
            "g = named_genotype('DARTS_V2', 8); print(len(g.cells), 'tensorflow' in sys.modules, "
            "'keras' in sys.modules)")
    result = _python(code, installed, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["8", "False", "False"]


def test_public_surface_is_exactly_the_documented_names():
    assert set(asmnas_tf.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(asmnas_tf, name) is not None
    with pytest.raises(AttributeError):
        asmnas_tf.run_search  # noqa: B018  (the gin wrapper is not public)
    assert issubclass(asmnas_tf.UserError, ValueError)


def test_user_values_become_image_arrays_with_numpy_checks():
    import tensorflow as tf

    x = np.arange(6 * 4 * 4, dtype=np.float32).reshape(6, 4, 4) / (6 * 16 - 1)  # floats in [0, 1]
    y = np.array([0, 1, 2, 0, 1, 2])
    arrays = asmnas_tf.as_image_arrays(x, y)
    assert arrays.x_train.shape == (6, 4, 4, 1) and arrays.x_train.dtype == np.uint8
    np.testing.assert_array_equal(arrays.x_train[..., 0], np.round(x * 255).astype(np.uint8))
    assert arrays.num_classes == 3 and len(arrays.x_test) == 0
    # The same values through a batched tf.data pipeline.
    from_dataset = asmnas_tf.as_image_arrays(tf.data.Dataset.from_tensor_slices((arrays.x_train, y)).batch(4))
    np.testing.assert_array_equal(from_dataset.x_train, arrays.x_train)
    np.testing.assert_array_equal(from_dataset.y_train, y)
    with pytest.raises(asmnas_tf.UserError, match="y should be 6 integer labels"):
        asmnas_tf.as_image_arrays(x, y[:5])
    with pytest.raises(asmnas_tf.UserError, match=r"labels should lie in \[0, 2\)"):
        asmnas_tf.as_image_arrays(x, y, num_classes=2)


def test_search_refuses_bad_arguments_before_reading_the_data(tmp_path):
    for kwargs, message in (({"epochs": 0}, "run_search.epochs=0"), ({"rule": "top3"}, "run_search.rule='top3'"),
                            ({"method": "enas"}, "run_search.method='enas'")):
        with pytest.raises(asmnas_tf.UserError, match=message):
            asmnas_tf.search("not even data", model_dir=str(tmp_path / "run"), **kwargs)
    assert not (tmp_path / "run").exists()


def _command(*args):
    return subprocess.run([sys.executable, "-m", *args], env=ENV, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,message", [
    (("timingx", "--model_dir=x"), "expected one sub-command, one of timing, stability, compare, pipeline; got 'timingx'"),
    (("timing", "--bogus_flag=1", "--model_dir=x"), "Unknown command line flag 'bogus_flag'"),
    (("--model_dir=x",), "expected one sub-command"),
])
def test_experiment_command_flag_errors_are_one_line_exit_2(args, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "asmnas_tf.commands.experiment", *args], env=ENV, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert os.listdir(tmp_path) == []


_ERROR_SPLIT = """
import sys
from asmnas_tf.errors import UserError
from asmnas_tf.commands import cli
def fail():
    raise {cls}("{message}")
cli.run(fail)
"""


def test_user_error_is_one_line_exit_2_and_internal_error_keeps_its_traceback():
    user = subprocess.run([sys.executable, "-c", _ERROR_SPLIT.format(cls="UserError", message="bad x")],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert user.returncode == 2 and user.stderr.strip().splitlines() == ["error: bad x"]
    # A ValueError from inside Keras or TensorFlow is a bug, not the user's.
    internal = subprocess.run([sys.executable, "-c", _ERROR_SPLIT.format(cls="ValueError", message="a bug")],
                              env=ENV, capture_output=True, text=True, timeout=300)
    assert internal.returncode == 1
    assert "Traceback (most recent call last)" in internal.stderr and internal.stderr.strip().endswith(
        "ValueError: a bug")


def test_console_scripts_are_declared_for_every_command():
    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts == {f"asmnas-{name}": f"asmnas_tf.commands.{name}:main"
                       for name in ("search", "train", "export", "experiment", "demo", "benchmark")}


@pytest.mark.slow
@needs_fashion_mnist
def test_readme_python_example_runs_as_written(tmp_path):
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    start = readme.index("```python\nimport asmnas_tf as nas\n") + len("```python\n")
    example = readme[start:readme.index("```", start)]
    result = subprocess.run([sys.executable, "-c", example], env=ENV, cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "coefficients (2, 14, 8)" in lines
    accuracy = float(next(line for line in lines if line.startswith("test accuracy ")).split()[-1])
    assert 0.2 < accuracy <= 1.0  # one epoch of a tiny network on 1,000 images: well above chance (0.1)
    assert (tmp_path / "fmnist_saved_model" / "saved_model.pb").is_file()
    assert sorted(os.listdir(tmp_path)) == ["fmnist_saved_model"]  # no run directory without model_dir
