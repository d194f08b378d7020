"""Property-based fuzzing: the readers of user files and the binding checks.

Hypothesis generates inputs (bytes, mutated valid files, JSON values, gin
literals) for a bounded number of examples each; the property is the same
everywhere: the reader returns its value or raises the project's own error
(`UserError`: one line), never anything else. `database=None`: nothing is
written into the checkout. Each test counts its examples and checks that
hypothesis ran at least the bound's share of them, so a test that stopped
generating would fail, not pass silently.
"""

import io
import json
import os
import struct
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asmnas_tf.data.sources import load_folder, load_npz, read_idx
from asmnas_tf.errors import UserError
from asmnas_tf.space.genotype import from_dict, read_genotype, to_dict
from asmnas_tf.space.named_genotypes import named_genotype

EXAMPLES = 1000
# derandomize: the same examples on every run, so that the suite's outcome
# never depends on the draw; a new find comes from changing EXAMPLES or the
# strategies, and is then kept in test_genotype_error_with_a_newline_key_is_one_line.
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
COUNTS = {}


def _count(name):
    COUNTS[name] = COUNTS.get(name, 0) + 1


def _scratch(suffix, data):
    fd, path = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _only_user_errors(read, *args, **kwargs):
    """`read(*args)`'s value, or None if it refused with a one-line UserError; anything else fails."""
    try:
        return read(*args, **kwargs)
    except UserError as error:
        assert "\n" not in str(error), str(error)
        return None


# ---------------------------------------------------------------- genotype.json

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 20) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20)
VALID = to_dict(named_genotype("DARTS_V2", 3))


def _paths(value, prefix=()):
    """Every (path, value) inside a JSON value, depth first."""
    yield prefix, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _paths(child, (*prefix, key))


def _replaced(data, path, new):
    data = json.loads(json.dumps(data))
    if not path:
        return new
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = new
    return data


@FUZZ
@given(st.binary(max_size=2000))
def test_genotype_reader_on_arbitrary_bytes(raw):
    _count("genotype bytes")
    path = _scratch(".json", raw)
    try:
        _only_user_errors(read_genotype, path)
    finally:
        os.remove(path)


@FUZZ
@given(st.data())
def test_genotype_reader_on_a_valid_file_with_one_field_changed(data):
    _count("genotype mutations")
    paths = list(_paths(VALID))
    path, _ = data.draw(st.sampled_from(paths))
    changed = _replaced(VALID, path, data.draw(JSON_VALUES))
    _only_user_errors(from_dict, changed, where="fuzz.json", num_cells=data.draw(st.sampled_from([None, 3, 5])))
    text = json.dumps(changed, allow_nan=True)
    file = _scratch(".json", text.encode("utf-8"))
    try:
        _only_user_errors(read_genotype, file)
    finally:
        os.remove(file)


def test_genotype_error_with_a_newline_key_is_one_line():
    """The fuzzer's first find: an edge with a key "\n" made a two-line error."""
    changed = _replaced(VALID, ("cells", 0, "edges", 0), {"\n": None})
    with pytest.raises(UserError) as caught:
        from_dict(changed, where="fuzz.json")
    assert str(caught.value) == ("fuzz.json: cells[0].edges[0].\\n: unknown key "
                                 "(expected keys from, to, op, weight)")


# ---------------------------------------------------------------- IDX

IDX_DTYPES = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]


@st.composite
def idx_files(draw):
    """A header that may or may not fit its body: valid-looking type codes, small dims, then cuts and flips."""
    code = draw(st.sampled_from(IDX_DTYPES + [0x00, 0x07, 0xFF]))
    dims = draw(st.lists(st.integers(0, 6), max_size=4))
    itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(code, 1)
    body = draw(st.binary(min_size=0, max_size=int(np.prod(dims or [1])) * itemsize + 8))
    raw = bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + body
    if draw(st.booleans()):
        raw = raw[:draw(st.integers(0, len(raw)))]
    return raw


@FUZZ
@given(st.one_of(idx_files(), st.binary(max_size=300)), st.booleans())
def test_idx_reader(raw, gzipped):
    import gzip

    _count("idx")
    path = _scratch(".idx", gzip.compress(raw) if gzipped else raw)
    try:
        value = _only_user_errors(read_idx, path)
        if value is not None:
            assert isinstance(value, np.ndarray) and value.ndim == raw[3]
    finally:
        os.remove(path)


@FUZZ
@given(st.binary(min_size=2, max_size=200))
def test_idx_reader_on_broken_gzip(raw):
    _count("idx gzip")
    path = _scratch(".idx.gz", b"\x1f\x8b" + raw)
    try:
        _only_user_errors(read_idx, path)
    finally:
        os.remove(path)


# ---------------------------------------------------------------- npz

NPZ_KEYS = ["x_train", "y_train", "x_test", "y_test", "num_classes", "other"]
def _filled(shape, dtype, fill):
    with np.errstate(all="ignore"):  # NaN or 300 cast to uint8 is the point, not a warning
        return np.full(shape, fill).astype(dtype)


ARRAYS = st.one_of(
    st.builds(_filled,
              st.lists(st.integers(0, 4), max_size=4).map(tuple),
              st.sampled_from(["uint8", "int64", "float32", "float64", "bool", "int8", "complex64"]),
              st.one_of(st.integers(-300, 300), st.floats(allow_nan=True, allow_infinity=True))),
    st.text(max_size=5).map(np.array),
)


@FUZZ
@given(st.dictionaries(st.sampled_from(NPZ_KEYS), ARRAYS, max_size=6))
def test_npz_reader_on_any_arrays(contents):
    _count("npz arrays")
    buffer = io.BytesIO()
    np.savez(buffer, **contents)
    path = _scratch(".npz", buffer.getvalue())
    try:
        with np.errstate(all="ignore"):
            arrays = _only_user_errors(load_npz, path)
        if arrays is not None:
            assert arrays.x_train.dtype == np.uint8 and len(arrays.x_train) == len(arrays.y_train)
    finally:
        os.remove(path)


@FUZZ
@given(st.binary(max_size=400))
def test_npz_reader_on_arbitrary_bytes(raw):
    _count("npz bytes")
    path = _scratch(".npz", b"PK\x03\x04" + raw if raw[:1] == b"\x00" else raw)
    try:
        _only_user_errors(load_npz, path)
    finally:
        os.remove(path)


# ---------------------------------------------------------------- image folders

PNG_1x1 = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010800000000"
                        "3a7e9b550000000a49444154789c63600000000200015ddb6e070000000049454e44ae426082")


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(st.dictionaries(st.sampled_from(["train", "test"]),
                       st.dictionaries(st.sampled_from(["cat", "dog", "x.png"]),
                                       st.lists(st.one_of(st.just(PNG_1x1), st.binary(max_size=60)), max_size=3),
                                       max_size=2),
                       max_size=2))
def test_folder_reader(tree):
    _count("folder")
    with tempfile.TemporaryDirectory() as root:
        for split, classes in tree.items():
            for name, images in classes.items():
                folder = os.path.join(root, split, name)
                os.makedirs(folder, exist_ok=True)
                for index, data in enumerate(images):
                    with open(os.path.join(folder, f"{index}.png"), "wb") as f:
                        f.write(data)
        _only_user_errors(load_folder, root)


# ---------------------------------------------------------------- gin values

GIN_LITERALS = st.one_of(st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False, width=32),
                         st.booleans(), st.none(), st.text("abc_'", max_size=6).map(repr),
                         st.lists(st.integers(-2, 3), max_size=3))
SEARCH_PARAMS = ["epochs", "batch_size", "selection_batch_size", "rule", "method", "seed", "save_every_steps",
                 "telemetry_samples", "rsps_candidates", "rsps_images", "verbose", "deterministic"]
TRAIN_PARAMS = ["epochs", "batch_size", "eval_batch_size", "drop_path", "seed", "save_every_steps", "verbose"]


@pytest.fixture(scope="module")
def gin_checks():
    import gin

    from asmnas_tf.evaluation import runner as train_runner
    from asmnas_tf.commands import cli
    from asmnas_tf.supernet import runner as search_runner

    yield gin, cli, search_runner, train_runner
    gin.clear_config()


def _literal(value):
    return value if isinstance(value, str) else repr(value)


@FUZZ
@given(st.sampled_from(SEARCH_PARAMS), st.sampled_from(TRAIN_PARAMS), GIN_LITERALS, GIN_LITERALS)
def test_binding_checks_refuse_with_one_line(gin_checks, search_param, train_param, search_value, train_value):
    """Any literal bound to any checked parameter: parsed, then the runners' checks; only UserError."""
    _count("gin values")
    gin, cli, search_runner, train_runner = gin_checks
    gin.clear_config()
    bindings = [f"run_search.{search_param} = {_literal(search_value)}",
                f"run_train.{train_param} = {_literal(train_value)}"]
    if _only_user_errors(cli.parse_gin, [], bindings) is None:
        return
    _only_user_errors(lambda: search_runner.SearchConfig().check())  # the config object gin builds
    _only_user_errors(lambda: train_runner.TrainConfig().check())


def test_every_fuzzer_ran_its_examples():
    """Runs last in this file (pytest keeps file order): each property above generated its examples."""
    expected = {"genotype bytes": EXAMPLES, "genotype mutations": EXAMPLES, "idx": EXAMPLES,
                "idx gzip": EXAMPLES, "npz arrays": EXAMPLES, "npz bytes": EXAMPLES, "folder": 200,
                "gin values": EXAMPLES}
    ran = {name: COUNTS.get(name, 0) for name in expected}
    if not all(ran.values()):
        pytest.skip(f"run with the whole file to count every fuzzer: {ran}")
    for name, bound in expected.items():
        assert ran[name] >= 0.5 * bound, (name, ran[name])
    print(f"fuzz examples: {ran}")
