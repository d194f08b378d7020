"""Data: image arrays from TFDS, IDX, npz or folders, and tf.data pipelines (SPEC §7)."""

from asmnas_tf.data.pipeline import channel_stats
from asmnas_tf.data.pipeline import make_dataset
from asmnas_tf.data.pipeline import split_halves
from asmnas_tf.data.sources import DATASETS
from asmnas_tf.data.sources import DEFAULT_IDX_DIR
from asmnas_tf.data.sources import DataError
from asmnas_tf.data.sources import ImageArrays
from asmnas_tf.data.sources import as_image_arrays
from asmnas_tf.data.sources import load_arrays
from asmnas_tf.data.sources import read_idx

__all__ = [
    "DATASETS",
    "DEFAULT_IDX_DIR",
    "DataError",
    "ImageArrays",
    "as_image_arrays",
    "channel_stats",
    "load_arrays",
    "make_dataset",
    "read_idx",
    "split_halves",
]
