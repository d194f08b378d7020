"""tf.data input pipelines: the search split, normalisation, DARTS augmentation.

The uint8 arrays stay in memory (`from_tensor_slices`); each image is cast,
augmented and normalised in a parallel `map`, then batched and prefetched.

Augmentation follows DARTS (`utils._data_transforms_cifar10`): random crop
after zero padding, random horizontal flip, normalisation, then cutout (a
square set to 0 after normalisation). Randomness is stateless: each element
gets its own (seed pair) from `tf.data.Dataset.random(seed)`, which gives a
new, reproducible stream for every pass over the data, so one `seed` yields
the same batches in any process with the same TF global seed (TF derives op
seeds from both; runs set it from the same seed), and different epochs see
different crops.

Under `tf.distribute`, callers pass the global batch size and let the
strategy split batches; nothing here is strategy-aware.
"""

import gin
import numpy as np
import tensorflow as tf
from asmnas_tf.errors import UserError


def split_halves(x, y):
    """Splits a training set in two (SPEC §4), in order, with no shuffling.

    The first N // 2 examples train the weights; the rest are the selection
    split. Returns ((x_a, y_a), (x_b, y_b)).
    """
    if len(x) != len(y):
        raise UserError(f"Expected as many labels as images. Received: "
                         f"len(x)={len(x)}, len(y)={len(y)}")
    if len(x) < 2:
        raise UserError(f"Expected at least 2 examples to split. "
                         f"Received: len(x)={len(x)}")
    half = len(x) // 2
    return (x[:half], y[:half]), (x[half:], y[half:])


def channel_stats(x_uint8):
    """Per-channel mean and (population) std of uint8 images on the [0, 1] scale.

    Computed from a 256-bin histogram per channel, so it is exact and needs
    no float copy of the dataset. Returns two float32 arrays of shape [C].
    """
    x = np.asarray(x_uint8)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise UserError(f"Expected uint8 images [N, H, W, C]. Received: "
                         f"dtype={x.dtype}, shape={x.shape}")
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[-1]):
        counts = np.bincount(x[..., c].ravel(), minlength=256).astype(np.float64)
        total = counts.sum()
        mean = (counts * values).sum() / total
        means.append(mean)
        stds.append(np.sqrt((counts * (values - mean) ** 2).sum() / total))
    return np.asarray(means, np.float32), np.asarray(stds, np.float32)


def _cutout_square(height, width, size, seed):
    """Boolean [H, W, 1]: a size x size square (clipped) centred at a random pixel.

    DARTS `Cutout`: the centre is uniform over all pixels, so the square may
    hang over the border and be clipped. Rows [cy - size // 2, +size).
    """
    row_key, col_key = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    centre_row = tf.random.stateless_uniform([], row_key, 0, height, tf.int32)
    centre_col = tf.random.stateless_uniform([], col_key, 0, width, tf.int32)
    top = centre_row - size // 2
    left = centre_col - size // 2
    rows = tf.range(height)
    cols = tf.range(width)
    in_rows = (rows >= top) & (rows < top + size)
    in_cols = (cols >= left) & (cols < left + size)
    inside = in_rows[:, None] & in_cols[None, :]
    return inside[:, :, None]


def _check_inputs(x, y, batch_size, mean, std, crop_padding, cutout):
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
        raise UserError(f"Expected x to be uint8 numpy images [N, H, W, C]. "
                         f"Received: x of type {type(x).__name__}, "
                         f"dtype={getattr(x, 'dtype', None)}, "
                         f"shape={getattr(x, 'shape', None)}")
    if np.ndim(y) != 1 or len(y) != len(x):
        raise UserError(f"Expected y to be {len(x)} labels [N]. "
                         f"Received: y shape={np.shape(y)}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise UserError(f"Expected batch_size to be a positive integer. "
                         f"Received: batch_size={batch_size!r}")
    channels = x.shape[-1]
    mean = np.asarray(mean, np.float32).reshape(-1)
    std = np.asarray(std, np.float32).reshape(-1)
    if mean.shape != (channels,) or std.shape != (channels,) or np.any(std <= 0):
        raise UserError(f"Expected mean and std of shape [{channels}] with "
                         f"std > 0. Received: mean={mean}, std={std}")
    if crop_padding < 0 or cutout < 0:
        raise UserError(f"Expected crop_padding >= 0 and cutout >= 0. Received: "
                         f"crop_padding={crop_padding}, cutout={cutout}")
    return mean, std


# Datasets whose images keep their class when mirrored left-right: `flip='auto'`
# flips these only. A user's dataset (npz, folder, arrays) may be digits,
# text or a medical scan, which a mirror turns into another class or none.
MIRROR_INVARIANT = ("fashion_mnist", "cifar10", "cifar100", "imagenet2012")
FLIPS = (True, False, "auto")


def flips(flip, dataset):
    """Whether training flips the images of `dataset` (its name) under `make_dataset.flip`."""
    if flip not in FLIPS or (flip != "auto" and not isinstance(flip, bool)):
        raise UserError(f"make_dataset.flip={flip!r}: expected True, False or 'auto' "
                        f"(flips {', '.join(MIRROR_INVARIANT)} only)")
    return dataset in MIRROR_INVARIANT if flip == "auto" else flip


@gin.configurable(denylist=["x", "y", "batch_size", "training", "mean", "std", "dataset"])
def make_dataset(x, y, batch_size, *, training, mean, std, augment=True,
                 crop_padding=4, flip="auto", cutout=0, seed=None,
                 shuffle_buffer=None, drop_remainder=None, repeat=False, dataset=None):
    """A tf.data pipeline of (float32 [B, H, W, C] images, int32 [B] labels).

    Images are normalised as (x / 255 - mean) / std per channel. When
    `training`: shuffled (buffer `shuffle_buffer`, default the whole set) and,
    if `augment`, randomly cropped after `crop_padding` pixels of zero padding,
    flipped left-right if `flip` (True, False, or 'auto': only a dataset
    named in MIRROR_INVARIANT, `dataset` being its name), and cut out with a `cutout`-pixel square if
    cutout > 0. Not training: neither shuffled nor augmented. The same `seed`
    gives the same batches. `drop_remainder` defaults to `training`; `repeat`
    repeats forever (reshuffling and re-drawing augmentations each pass).
    """
    mean, std = _check_inputs(x, y, batch_size, mean, std, crop_padding, cutout)
    flip = flips(flip, dataset)
    height, width, channels = x.shape[1:]
    if drop_remainder is None:
        drop_remainder = training
    augmenting = training and augment and (crop_padding > 0 or flip or cutout > 0)

    ds = tf.data.Dataset.from_tensor_slices((x, np.asarray(y, np.int32)))
    if training:
        buffer = len(x) if shuffle_buffer is None else int(shuffle_buffer)
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    mean_t = tf.constant(mean)
    std_t = tf.constant(std)

    def normalise(image):
        return (tf.cast(image, tf.float32) / 255.0 - mean_t) / std_t

    def plain(image, label):
        return normalise(image), label

    def augmented(element, key):
        image, label = element
        crop_key, flip_key, cutout_key = tf.unstack(
            tf.random.experimental.stateless_split(key, num=3))
        if crop_padding > 0:
            # Pad with uint8 zeros before normalising, as torchvision's
            # RandomCrop(padding=4) on the PIL image does in DARTS.
            image = tf.pad(image, [[crop_padding, crop_padding],
                                   [crop_padding, crop_padding], [0, 0]])
            image = tf.image.stateless_random_crop(
                image, [height, width, channels], seed=crop_key)
        if flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=flip_key)
        image = normalise(image)
        if cutout > 0:
            square = _cutout_square(height, width, cutout, cutout_key)
            image = tf.where(square, tf.zeros_like(image), image)
        return image, label

    deterministic = True if (seed is not None or not training) else None
    if augmenting:
        # Two int64 per element: the key of its stateless random ops.
        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, keys.batch(2)))
        ds = ds.map(augmented, num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=deterministic)
    else:
        ds = ds.map(plain, num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=deterministic)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)
