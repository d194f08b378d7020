"""Tests for the streaming ImageNet pipeline on a tiny real TFDS imagenet2012."""

import numpy as np
import pytest
import tensorflow as tf

from asmnas_tf.data import DataError
from asmnas_tf.data.imagenet import MEAN, STD, imagenet_datasets, preprocess_eval, preprocess_train


def _store_imagenet(data_dir, splits):
    """A real TFDS imagenet2012 (official name, version and features)."""
    import tensorflow_datasets as tfds

    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(encoding_format="jpeg"),
        "label": tfds.features.ClassLabel(num_classes=1000),
        "file_name": tfds.features.Text(),
    })
    examples = {
        split: [(i, {"image": image, "label": label, "file_name": f"{split}_{i}.JPEG"})
                for i, (image, label) in enumerate(items)]
        for split, items in splits.items()}
    tfds.dataset_builders.store_as_tfds_dataset(
        name="imagenet2012", version=tfds.builder_cls("imagenet2012").VERSION, features=features,
        split_datasets=examples, data_dir=data_dir)


def _constant(h, w, rgb):
    return np.broadcast_to(np.asarray(rgb, np.uint8), (h, w, 3)).copy()


def _normalised(rgb):
    return (np.asarray(rgb, np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)


def test_tiny_imagenet2012_train_and_validation(tmp_path):
    rng = np.random.default_rng(0)
    train = [(rng.integers(0, 256, (250 + 10 * i, 300, 3), dtype=np.uint8), 100 * i) for i in range(5)]
    colours = [(200, 40, 90), (10, 250, 128), (77, 77, 77)]
    validation = [(_constant(280 + 20 * i, 320, c), 999 - i) for i, c in enumerate(colours)]
    data_dir = str(tmp_path / "tfds")
    _store_imagenet(data_dir, {"train": train, "validation": validation})

    data = imagenet_datasets(2, 2, seed=1, data_dir=data_dir, color_jitter=0.4, hue=0.2)
    assert (data.num_train, data.num_test, data.num_classes) == (5, 3, 1000)
    assert data.image_shape == (224, 224, 3)
    batches = list(data.train)
    assert [tuple(x.shape) for x, _ in batches] == [(2, 224, 224, 3)] * 2  # drops the 5th
    labels = np.concatenate([y.numpy() for _, y in batches])
    assert set(labels) <= {0, 100, 200, 300, 400} and len(set(labels)) == 4
    assert all(x.dtype == tf.float32 for x, _ in batches)
    # Evaluation: all kept (TFDS stores them in its own order); a constant
    # colour stays that colour (up to JPEG rounding) after resize 256 /
    # centre crop 224 / normalise.
    test = list(data.test)
    assert [tuple(x.shape) for x, _ in test] == [(2, 224, 224, 3), (1, 224, 224, 3)]
    images = np.concatenate([x.numpy() for x, _ in test])
    labels = np.concatenate([y.numpy() for _, y in test])
    assert sorted(labels) == [997, 998, 999]
    for image, label in zip(images, labels):
        colour = colours[999 - label]
        np.testing.assert_allclose(image, np.broadcast_to(_normalised(colour), image.shape), atol=0.05)

    subset = imagenet_datasets(1, 1, data_dir=data_dir, train_subset=2, validation_subset=1)
    assert (subset.num_train, subset.num_test) == (2, 1)
    assert len(list(subset.test)) == 1


def test_random_resized_crop_and_flip_of_a_ramp():
    # A horizontal ramp: a crop + flip keeps each row monotone (up or down),
    # and the random crop changes from key to key.
    ramp = np.tile(np.linspace(0, 255, 400).astype(np.uint8)[None, :, None], (300, 1, 3))
    jpeg = tf.io.encode_jpeg(ramp, quality=100)
    outs = [preprocess_train(jpeg, tf.constant([k, 0], tf.int64), color_jitter=0.0, hue=0.0).numpy()
            for k in range(6)]
    assert all(o.shape == (224, 224, 3) for o in outs)
    directions = set()
    for out in outs:
        row = out[112, :, 0]
        assert row[0] != pytest.approx(row[-1], abs=0.05)
        directions.add(bool(row[-1] > row[0]))
        # Rows are identical (no vertical structure in a horizontal ramp).
        np.testing.assert_allclose(out[0], out[-1], atol=0.05)
    assert directions == {True, False}  # both flipped and unflipped seen
    assert len({round(float(o[112, 0, 0]), 3) for o in outs}) > 2  # crops differ


def test_eval_centre_crop_geometry():
    # 256 x 512 after resize (shorter side 256): the centre crop takes
    # columns 144..367 of the resized ramp.
    ramp = np.tile(np.arange(512, dtype=np.float32)[None, :, None] / 2, (256, 1, 3)).astype(np.uint8)
    out = preprocess_eval(tf.io.encode_jpeg(ramp, quality=100)).numpy()
    assert out.shape == (224, 224, 3)
    pixels = out[100, :, 0] * STD[0] * 255 + MEAN[0] * 255
    np.testing.assert_allclose(pixels[[0, -1]], [144 / 2, 367 / 2], atol=2.0)


def test_missing_imagenet_is_a_clear_error(tmp_path):
    with pytest.raises(DataError) as info:
        imagenet_datasets(2, 2, data_dir=str(tmp_path))
    message = info.value.message
    assert "imagenet2012 is not prepared" in message and str(tmp_path) in message
    assert "downloads/manual" in message and "\n" not in message
