"""ImageNet (ILSVRC 2012) as a streaming tf.data pipeline (SPEC §6, §7).

The 1.28M training images cannot be held in memory like the small datasets
of `sources.py`: the JPEG bytes are read from a prepared TFDS copy of
`imagenet2012` (`data_dir`; never downloaded, the archives are manual) and
decoded in a parallel `map`, batch by batch.

Training (DARTS `train_imagenet.py`): random resized crop to 224 (area
8%-100% of the image, aspect ratio 3/4-4/3; only the crop is decoded),
random horizontal flip, optional colour jitter (brightness, contrast,
saturation by a factor in [1 - s, 1 + s], hue by up to `hue` of the circle;
DARTS uses s = 0.4, hue = 0.2), normalisation with the ImageNet mean/std.
Evaluation: resize the shorter side to 256, centre crop 224, normalise.
Randomness is stateless, one key per image, as in `pipeline.py`.
"""

import dataclasses

import gin
import numpy as np
import tensorflow as tf

from asmnas_tf.data.sources import prepared_builder, tfds_split

NAME = "imagenet2012"
NUM_CLASSES = 1000
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class StreamingData:
    """Train and eval pipelines of a dataset too large for memory."""

    train: tf.data.Dataset
    test: tf.data.Dataset
    num_train: int
    num_test: int
    image_shape: tuple
    num_classes: int
    mean: np.ndarray
    std: np.ndarray
    name: str


def _normalise(image_0_255):
    mean = tf.constant(MEAN, tf.float32) * 255.0
    std = tf.constant(STD, tf.float32) * 255.0
    return (image_0_255 - mean) / std


def _random_resized_crop(jpeg, image_size, key):
    """Decodes only a random crop (8%-100% area, aspect 3/4-4/3), resized."""
    shape = tf.image.extract_jpeg_shape(jpeg)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=key,
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    top, left, _ = tf.unstack(begin)
    height, width, _ = tf.unstack(size)
    crop = tf.image.decode_and_crop_jpeg(jpeg, tf.stack([top, left, height, width]), channels=3)
    return tf.image.resize(crop, [image_size, image_size], method="bilinear")


def _colour_jitter(image_0_255, strength, hue, key):
    keys = tf.unstack(tf.random.experimental.stateless_split(key, 4))
    image = image_0_255 / 255.0
    if strength > 0:
        lower, upper = 1.0 - strength, 1.0 + strength
        image = image * tf.random.stateless_uniform([], keys[0], lower, upper)
        image = tf.image.stateless_random_contrast(image, lower, upper, keys[1])
        image = tf.image.stateless_random_saturation(tf.clip_by_value(image, 0, 1), lower, upper, keys[2])
    if hue > 0:
        image = tf.image.stateless_random_hue(tf.clip_by_value(image, 0, 1), hue, keys[3])
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0


def preprocess_train(jpeg, key, image_size=224, color_jitter=0.4, hue=0.2):
    """One encoded JPEG -> float32 [size, size, 3], augmented and normalised."""
    crop_key, flip_key, jitter_key = tf.unstack(tf.random.experimental.stateless_split(key, 3))
    image = _random_resized_crop(jpeg, image_size, crop_key)
    image = tf.image.stateless_random_flip_left_right(image, flip_key)
    if color_jitter > 0 or hue > 0:
        image = _colour_jitter(image, color_jitter, hue, jitter_key)
    return _normalise(image)


def preprocess_eval(jpeg, image_size=224, resize_size=256):
    """One encoded JPEG -> shorter side to `resize_size`, centre crop, normalised."""
    image = tf.cast(tf.image.decode_jpeg(jpeg, channels=3), tf.float32)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = resize_size / tf.reduce_min(shape)
    new_size = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(image, new_size, method="bilinear")
    top = (new_size[0] - image_size) // 2
    left = (new_size[1] - image_size) // 2
    image = image[top : top + image_size, left : left + image_size, :]
    return _normalise(tf.ensure_shape(image, [image_size, image_size, 3]))


def imagenet_pipeline(ds, batch_size, *, training, image_size=224, resize_size=256,
                      color_jitter=0.4, hue=0.2, seed=None, shuffle_buffer=10_000):
    """(encoded JPEG, label) elements -> batches of (float32 images, int32 labels)."""
    ds = ds.map(lambda jpeg, label: (jpeg, tf.cast(label, tf.int32)))
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def augment(element, key):
            jpeg, label = element
            return preprocess_train(jpeg, key, image_size, color_jitter, hue), label

        ds = tf.data.Dataset.zip((ds, keys)).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(
            lambda jpeg, label: (preprocess_eval(jpeg, image_size, resize_size), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)


@gin.configurable(denylist=["batch_size", "eval_batch_size", "seed"])
def imagenet_datasets(batch_size, eval_batch_size, seed=None, data_dir=None, image_size=224,
                      resize_size=256, color_jitter=0.4, hue=0.2, train_subset=None,
                      validation_subset=None, shuffle_buffer=10_000):
    """Train ('train') and eval ('validation') pipelines of a prepared TFDS imagenet2012."""
    import tensorflow_datasets as tfds  # Slow to import; only needed here.

    builder = prepared_builder(
        NAME, data_dir,
        f"put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in <data_dir>/downloads/manual "
        f"and run `tfds build {NAME} --data_dir <data_dir>`, then bind imagenet_datasets.data_dir")

    splits = [tfds_split("train", train_subset), tfds_split("validation", validation_subset)]
    train, test = (
        builder.as_dataset(split=s, shuffle_files=s.startswith("train"), as_supervised=True,
                           decoders={"image": tfds.decode.SkipDecoding()})
        for s in splits)
    num_train, num_test = (int(builder.info.splits[s].num_examples) for s in splits)
    common = dict(image_size=image_size, resize_size=resize_size, color_jitter=color_jitter, hue=hue)
    return StreamingData(
        train=imagenet_pipeline(train, batch_size, training=True, seed=seed,
                                shuffle_buffer=shuffle_buffer, **common),
        test=imagenet_pipeline(test, eval_batch_size, training=False, **common),
        num_train=num_train,
        num_test=num_test,
        image_shape=(image_size, image_size, 3),
        num_classes=builder.info.features["label"].num_classes,
        mean=np.asarray(MEAN, np.float32),
        std=np.asarray(STD, np.float32),
        name=NAME,
    )
