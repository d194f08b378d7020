"""Tests for asmnas_tf.data: every source, and the tf.data pipeline."""

import gzip
import hashlib
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from asmnas_tf.data import (DataError, channel_stats, load_arrays, make_dataset,
                            read_idx, split_halves)
from asmnas_tf.data import sources
from asmnas_tf.errors import UserError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_idx(path, array, compress=False):
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += np.asarray(array.shape, ">u4").tobytes()
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    with open(path, "wb") as f:
        f.write(gzip.compress(raw) if compress else raw)
    return raw


def _write_fashion_idx_dir(directory, x_train, y_train, x_test, y_test):
    os.makedirs(directory, exist_ok=True)
    _write_idx(os.path.join(directory, "train-images-idx3-ubyte.gz"), x_train, True)
    _write_idx(os.path.join(directory, "train-labels-idx1-ubyte"), y_train)
    _write_idx(os.path.join(directory, "t10k-images-idx3-ubyte"), x_test)
    _write_idx(os.path.join(directory, "t10k-labels-idx1-ubyte.gz"), y_test, True)


# ----------------------------------------------------------------- sources


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR),
                    reason=f"{FASHION_MNIST_DIR} absent (apt-get install "
                           "dataset-fashion-mnist)")
def test_real_fashion_mnist_idx():
    data = load_arrays("fashion_mnist", idx_dir=FASHION_MNIST_DIR)
    assert data.x_train.shape == (60000, 28, 28, 1)
    assert data.x_test.shape == (10000, 28, 28, 1)
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64
    assert data.image_shape == (28, 28, 1)
    assert data.num_classes == 10 and data.name == "fashion_mnist"
    np.testing.assert_array_equal(np.bincount(data.y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(data.y_test), [1000] * 10)
    # First training label of Fashion-MNIST is 9 (ankle boot), second 0.
    assert data.y_train[:2].tolist() == [9, 0]
    assert data.x_train.min() == 0 and data.x_train.max() == 255


def test_idx_round_trip_and_truncation(tmp_path):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    for compress in (False, True):
        path = str(tmp_path / f"a{int(compress)}-idx3-ubyte")
        raw = _write_idx(path, array, compress)
        back = read_idx(path)
        assert back.dtype == np.uint8
        np.testing.assert_array_equal(back, array)
    # Header bytes by hand: magic 0x00000803, dims 2, 3, 5 big-endian.
    assert raw[:16] == bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 5])
    ints = np.array([[-1, 70000], [3, 4]], np.int32)
    _write_idx(str(tmp_path / "ints"), ints)
    np.testing.assert_array_equal(read_idx(str(tmp_path / "ints")), ints)

    truncated = tmp_path / "short-idx3-ubyte"
    truncated.write_bytes(raw[:-3])
    with pytest.raises(DataError, match="short-idx3-ubyte.*truncated"):
        read_idx(str(truncated))
    bad_gzip = tmp_path / "cut.gz"
    bad_gzip.write_bytes(gzip.compress(raw)[:20])
    with pytest.raises(DataError, match="cut.gz"):
        read_idx(str(bad_gzip))
    not_idx = tmp_path / "text"
    not_idx.write_bytes(b"hello world")
    with pytest.raises(DataError, match="text is not an IDX file"):
        read_idx(str(not_idx))


def test_fashion_idx_dir_tiny_and_subsets(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    y_train = np.array([0, 1, 2, 3, 4, 5, 9], np.uint8)
    y_test = np.array([9, 8, 7], np.uint8)
    _write_fashion_idx_dir(str(tmp_path), x_train, y_train, x_test, y_test)
    data = load_arrays("fashion_mnist", idx_dir=str(tmp_path),
                       train_subset=5, test_subset=2)
    np.testing.assert_array_equal(data.x_train, x_train[:5, :, :, None])
    np.testing.assert_array_equal(data.y_train, y_train[:5])
    np.testing.assert_array_equal(data.x_test, x_test[:2, :, :, None])
    np.testing.assert_array_equal(data.y_test, y_test[:2])
    assert data.y_test.dtype == np.int64


def test_missing_data_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=f"{empty}.*dataset-fashion-mnist"):
        load_arrays("fashion_mnist", idx_dir=str(empty))
    with pytest.raises(DataError) as info:
        load_arrays("cifar10", data_dir=str(empty))
    message = info.value.message  # One line; str() also has gin's call site.
    assert str(empty) in message and "tfds" in message and "\n" not in message
    with pytest.raises(DataError, match="cifar100.*tfds build cifar100"):
        load_arrays("cifar100", data_dir=str(empty))
    with pytest.raises(DataError, match="'mnist'.*fashion_mnist, cifar10"):
        load_arrays("mnist")
    with pytest.raises(DataError, match="train_subset"):
        load_arrays("npz", path="x.npz", train_subset=0)


def test_fashion_mnist_fallback_message(tmp_path, monkeypatch):
    # Point the default IDX directory at an empty folder: a real (not mocked)
    # lookup that finds nothing anywhere must list every place it looked.
    monkeypatch.setattr(sources, "DEFAULT_IDX_DIR", str(tmp_path / "no_idx"))
    with pytest.raises(DataError) as info:
        load_arrays("fashion_mnist", data_dir=str(tmp_path / "no_tfds"))
    message = info.value.message
    assert "\n" not in message
    for needle in ("no_tfds", "no_idx", "apt-get install dataset-fashion-mnist",
                   "tfds build fashion_mnist"):
        assert needle in message


def _store_tfds(name, data_dir, splits, num_classes, shape):
    """Writes a real TFDS dataset under the official name, version and features."""
    import tensorflow_datasets as tfds

    features = tfds.features.FeaturesDict({
        "id": tfds.features.Text(),
        "image": tfds.features.Image(shape=shape),
        "label": tfds.features.ClassLabel(num_classes=num_classes),
    })
    version = tfds.builder_cls(name).VERSION
    split_examples = {
        split: [(i, {"id": f"{split}_{i}", "image": x[i], "label": int(y[i])})
                for i in range(len(x))]
        for split, (x, y) in splits.items()}
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version=version, features=features,
        split_datasets=split_examples, data_dir=data_dir,
        disable_shuffling=True)


def test_tfds_cifar10_and_fashion_mnist(tmp_path):
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    y_train = np.array([3, 1, 4, 1, 5, 9])
    x_test = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    y_test = np.array([2, 6])
    data_dir = str(tmp_path / "tfds")
    _store_tfds("cifar10", data_dir, {"train": (x_train, y_train),
                                      "test": (x_test, y_test)}, 10, (32, 32, 3))
    data = load_arrays("cifar10", data_dir=data_dir)
    np.testing.assert_array_equal(data.x_train, x_train)
    np.testing.assert_array_equal(data.y_train, y_train)
    np.testing.assert_array_equal(data.x_test, x_test)
    np.testing.assert_array_equal(data.y_test, y_test)
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64
    assert (data.num_classes, data.name, data.image_shape) == (10, "cifar10", (32, 32, 3))
    data = load_arrays("cifar10", data_dir=data_dir, train_subset=4, test_subset=1)
    np.testing.assert_array_equal(data.x_train, x_train[:4])
    np.testing.assert_array_equal(data.y_test, y_test[:1])

    # A prepared TFDS Fashion-MNIST in data_dir wins over the IDX fallback.
    fx = rng.integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    _store_tfds("fashion_mnist", data_dir, {"train": (fx, np.array([7, 8, 9])),
                                            "test": (fx[:1], np.array([0]))},
                10, (28, 28, 1))
    data = load_arrays("fashion_mnist", data_dir=data_dir)
    np.testing.assert_array_equal(data.x_train, fx)
    np.testing.assert_array_equal(data.y_train, [7, 8, 9])
    assert data.x_test.shape == (1, 28, 28, 1)


def test_npz_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(2)
    x_train = rng.integers(0, 256, (5, 6, 7), dtype=np.uint8)
    x_test = rng.integers(0, 256, (2, 6, 7), dtype=np.uint8)
    y_train = np.array([0, 1, 2, 1, 0], np.int32)
    y_test = np.array([[2], [0]], np.int64)
    good = tmp_path / "good.npz"
    np.savez(good, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    data = load_arrays("npz", path=str(good))
    np.testing.assert_array_equal(data.x_train, x_train[..., None])
    np.testing.assert_array_equal(data.x_test, x_test[..., None])
    np.testing.assert_array_equal(data.y_train, y_train)
    np.testing.assert_array_equal(data.y_test, [2, 0])
    assert (data.num_classes, data.name, data.image_shape) == (3, "good", (6, 7, 1))
    assert data.y_train.dtype == np.int64

    # Floats on the [0, 1] scale, explicit num_classes.
    floats = tmp_path / "floats.npz"
    np.savez(floats, x_train=x_train[..., None] / 255.0, y_train=y_train,
             x_test=x_test[..., None].astype(np.float32), y_test=y_test,
             num_classes=5)
    data = load_arrays("npz", path=str(floats))
    np.testing.assert_array_equal(data.x_train, x_train[..., None])
    np.testing.assert_array_equal(data.x_test, x_test[..., None])
    assert data.num_classes == 5 and data.x_test.dtype == np.uint8

    def bad(name, **arrays):
        path = tmp_path / f"{name}.npz"
        kwargs = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        kwargs.update(arrays)
        np.savez(path, **{k: v for k, v in kwargs.items() if v is not None})
        return str(path)

    with pytest.raises(DataError, match="lacks key 'y_test'"):
        load_arrays("npz", path=bad("nokey", y_test=None))
    with pytest.raises(DataError, match=r"x_train should be images.*\(5, 6\)"):
        load_arrays("npz", path=bad("shape", x_train=np.zeros((5, 6), np.uint8)))
    with pytest.raises(DataError, match=r"y_test labels should lie in \[0, 3\)"):
        load_arrays("npz", path=bad("range", y_test=np.array([0, 3]),
                                    num_classes=3))
    with pytest.raises(DataError, match=r"y_train should be 5 integer labels"):
        load_arrays("npz", path=bad("count", y_train=np.array([0, 1])))
    with pytest.raises(DataError, match="float x_test should lie in"):
        load_arrays("npz", path=bad("floatrange", x_test=np.full((2, 6, 7), 300.0)))
    with pytest.raises(DataError, match="does not exist"):
        load_arrays("npz", path=str(tmp_path / "absent.npz"))


def test_folder_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    written = {}
    for split, per_class in (("train", 2), ("test", 1)):
        for class_name in ("zebra", "ant"):  # Sorted: ant -> 0, zebra -> 1.
            folder = tmp_path / split / class_name
            folder.mkdir(parents=True)
            for i in range(per_class):
                image = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
                tf.io.write_file(str(folder / f"img{i}.png"),
                                 tf.io.encode_png(image))
                written[(split, class_name, i)] = image
            (folder / "notes.txt").write_text("ignored")
    data = load_arrays("folder", path=str(tmp_path))
    assert data.num_classes == 2 and data.image_shape == (5, 4, 3)
    expected_train = [written[("train", c, i)] for c in ("ant", "zebra") for i in (0, 1)]
    np.testing.assert_array_equal(data.x_train, np.stack(expected_train))
    np.testing.assert_array_equal(data.y_train, [0, 0, 1, 1])
    np.testing.assert_array_equal(
        data.x_test, np.stack([written[("test", "ant", 0)], written[("test", "zebra", 0)]]))
    np.testing.assert_array_equal(data.y_test, [0, 1])

    odd = tmp_path / "test" / "ant" / "odd.png"
    tf.io.write_file(str(odd), tf.io.encode_png(np.zeros((6, 4, 3), np.uint8)))
    with pytest.raises(DataError, match="odd.png is"):
        load_arrays("folder", path=str(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        load_arrays("folder", path=str(tmp_path / "nowhere"))


# ---------------------------------------------------------------- pipeline


def _images(n=10, h=8, w=8, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, 256, (n, h, w, c), dtype=np.uint8), np.arange(n)


def test_split_halves():
    x, y = _images(n=11)
    (xa, ya), (xb, yb) = split_halves(x, y)
    assert len(xa) == 5 and len(xb) == 6
    np.testing.assert_array_equal(xa, x[:5])
    np.testing.assert_array_equal(xb, x[5:])
    np.testing.assert_array_equal(np.concatenate([ya, yb]), y)


def test_channel_stats_matches_numpy():
    x, _ = _images(n=20, c=3, seed=4)
    mean, std = channel_stats(x)
    assert mean.shape == (3,) and mean.dtype == np.float32 and std.dtype == np.float32
    scaled = x.astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, scaled.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(std, scaled.std(axis=(0, 1, 2)), rtol=1e-6)


def test_eval_pipeline_normalises_in_order():
    x, y = _images(n=10)
    mean, std = np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.3, 0.4])
    batches = list(make_dataset(x, y, 4, training=False, mean=mean, std=std))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]  # No drop_remainder.
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert images.dtype == np.float32 and labels.dtype == np.int32
    expected = (x.astype(np.float32) / 255.0 - mean.astype(np.float32)) / std.astype(np.float32)
    np.testing.assert_allclose(images, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(labels, y)


def test_training_batches_shapes_and_crop_windows():
    x, y = _images(n=10, h=8, w=6, c=3)
    ds = make_dataset(x, y, 4, training=True, mean=[0, 0, 0], std=[1, 1, 1],
                      crop_padding=4, flip=False, seed=5)
    batches = list(ds)
    assert [tuple(b[0].shape) for b in batches] == [(4, 8, 6, 3)] * 2  # Drops 2.
    padded = np.pad(x, [(0, 0), (4, 4), (4, 4), (0, 0)])
    shifted = 0
    for images, labels in batches:
        for image, label in zip(images.numpy(), labels.numpy()):
            pixels = np.round(image * 255.0).astype(np.uint8)
            windows = [(dy, dx) for dy in range(9) for dx in range(9)
                       if np.array_equal(padded[label, dy:dy + 8, dx:dx + 6], pixels)]
            assert windows, f"image {label} is not a window of its padded input"
            shifted += windows[0] != (4, 4)
    assert shifted > 0  # Crops actually move.


def test_flip_only_is_identity_or_mirror():
    x, y = _images(n=16)
    ds = make_dataset(x, y, 16, training=True, mean=[0, 0, 0], std=[1, 1, 1],
                      crop_padding=0, flip=True, seed=1)
    images, labels = next(iter(ds))
    flips = 0
    for image, label in zip(images.numpy(), labels.numpy()):
        pixels = np.round(image * 255.0).astype(np.uint8)
        if np.array_equal(pixels, x[label][:, ::-1]):
            flips += 1
        else:
            np.testing.assert_array_equal(pixels, x[label])
    assert 0 < flips < 16


@pytest.mark.parametrize("flip, dataset, flipped", [
    ("auto", "fashion_mnist", True), ("auto", "cifar10", True), ("auto", "my_digits", False),
    ("auto", None, False), (True, "my_digits", True), (False, "fashion_mnist", False)])
def test_auto_flips_only_the_mirror_invariant_datasets(flip, dataset, flipped):
    x, y = _images(n=16)
    ds = make_dataset(x, y, 16, training=True, mean=[0, 0, 0], std=[1, 1, 1], crop_padding=0, flip=flip,
                      seed=1, dataset=dataset)
    images, labels = next(iter(ds))
    mirrored = sum(np.array_equal(np.round(image * 255.0).astype(np.uint8), x[label][:, ::-1])
                   for image, label in zip(images.numpy(), labels.numpy()))
    assert (mirrored > 0) is flipped  # seed 1 mirrors 0 < k < 16 of them when it flips (the test above)
    with pytest.raises(UserError, match=r"^make_dataset.flip='yes': expected True, False or 'auto'"):
        make_dataset(x, y, 16, training=True, mean=[0, 0, 0], std=[1, 1, 1], flip="yes")


def test_cutout_zeroes_one_clipped_square():
    x, y = _images(n=12, h=10, w=10, c=2)
    mean, std = np.array([0.1234, 0.4321]), np.array([0.3, 0.2])
    k = 4
    ds = make_dataset(x, y, 12, training=True, mean=mean, std=std,
                      crop_padding=0, flip=False, cutout=k, seed=3)
    images, labels = next(iter(ds))
    clean = (x.astype(np.float32) / 255.0 - mean.astype(np.float32)) / std.astype(np.float32)
    for image, label in zip(images.numpy(), labels.numpy()):
        changed = np.any(image != clean[label], axis=-1)
        rows, cols = np.nonzero(changed)
        assert 1 <= changed.sum() <= k * k
        # The changed pixels are a full rectangle of zeros, sides <= k.
        box = changed[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all() and box.shape[0] <= k and box.shape[1] <= k
        assert np.all(image[changed] == 0.0)
        np.testing.assert_allclose(image[~changed], clean[label][~changed], rtol=1e-6)


def _first_batch(seed):
    x, y = _images(n=20)
    ds = make_dataset(x, y, 8, training=True, mean=[0.5] * 3, std=[0.25] * 3,
                      cutout=3, seed=seed)
    images, labels = next(iter(ds))
    return images.numpy(), labels.numpy()


def test_seeded_batches_repeat_in_process_and_across_processes():
    # TF derives op seeds from (global seed, op seed): a run seeds both
    # (run_skeleton.seed_everything), and so does each side of this comparison,
    # whatever earlier tests in this process did to the global seed.
    keras.utils.set_random_seed(5)
    a, b = _first_batch(11), _first_batch(11)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = _first_batch(12)
    assert not np.array_equal(a[0], c[0])

    # A fresh process (fresh TF runtime) must draw the very same batch.
    script = ("import hashlib; "
              "import keras; keras.utils.set_random_seed(5); "
              "import tests.test_data as t; i, l = t._first_batch(11); "
              "print(hashlib.md5(i.tobytes() + l.tobytes()).hexdigest())")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True, timeout=120)
    here = hashlib.md5(a[0].tobytes() + a[1].tobytes()).hexdigest()
    assert out.stdout.strip().splitlines()[-1] == here


def test_epochs_reshuffle_and_repeat():
    x, y = _images(n=8)
    ds = make_dataset(x, y, 8, training=True, mean=[0.5] * 3, std=[0.25] * 3, seed=2)
    first, second = [next(iter(ds))[1].numpy() for _ in range(2)]
    assert sorted(first) == list(range(8)) and sorted(second) == list(range(8))
    assert not np.array_equal(first, second)  # Each pass reshuffles.
    repeated = make_dataset(x, y, 6, training=True, mean=[0.5] * 3, std=[0.25] * 3,
                            seed=2, repeat=True)
    labels = np.concatenate([b[1].numpy() for b in repeated.take(4)])
    assert labels.shape == (24,)
    np.testing.assert_array_equal(np.bincount(labels), [3] * 8)


def test_gin_bindings_by_module_qualified_name(tmp_path):
    import gin

    x, y = _images(n=4)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    gin.parse_config(
        "asmnas_tf.data.sources.load_arrays.train_subset = 3\n"
        "asmnas_tf.data.pipeline.make_dataset.drop_remainder = True",
        skip_unknown=False)
    try:
        data = load_arrays("npz", path=str(path))
        assert data.x_train.shape == (3, 8, 8, 3) and data.x_test.shape == (4, 8, 8, 3)
        ds = make_dataset(data.x_test, data.y_test, 3, training=False,
                          mean=[0.5] * 3, std=[0.5] * 3)
        assert [int(b[1].shape[0]) for b in ds] == [3]
        with pytest.raises(ValueError, match="denylisted kwarg 'batch_size'"):
            gin.parse_config("make_dataset.batch_size = 3")
    finally:
        gin.clear_config()
