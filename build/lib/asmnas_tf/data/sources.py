"""Image arrays from every supported source (SPEC §7), as uint8 numpy arrays.

`load_arrays(dataset, ...)` is the one entry point; it returns an
`ImageArrays` with x uint8 [N, H, W, C] and y int64 [N]. Nothing here ever
downloads: this project must run with no network, so missing data is a
`DataError` (one line: what is missing, where it looked, how to get it).

Sources, by `dataset`:

* ``'fashion_mnist'`` -- the raw IDX files in `idx_dir` when it is given.
  Otherwise a prepared TFDS copy in `data_dir` (TFDS's default data dir when
  None), then the IDX files of the Debian package `dataset-fashion-mnist` in
  `/usr/share/datasets/fashion-mnist`. IDX files may be plain or gzipped and
  are named ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (optionally ``.gz``;
  the ``train-images.idx3-ubyte`` spelling is accepted too).
* ``'cifar10'`` / ``'cifar100'`` -- a prepared TFDS copy in `data_dir` only.
  To prepare one: ``tfds build cifar10 --data_dir DIR`` on a machine with
  network, then copy ``DIR/cifar10/`` here.
* ``'npz'`` -- `path` to an ``.npz`` with keys ``x_train``, ``y_train``,
  ``x_test``, ``y_test`` and optionally ``num_classes``. Images are rank 3
  [N, H, W] (a channel axis is added) or rank 4 [N, H, W, C]. uint8 is kept
  as is; other integer types must lie in [0, 255]; floats whose maximum is
  <= 1 are taken as the [0, 1] scale and become round(255 x), other floats
  must lie in [0, 255] and become round(x). Labels are integers, [N] or
  [N, 1], in [0, num_classes); num_classes defaults to max label + 1.
* ``'folder'`` -- one sub-folder per class under `path`::

      path/train/<class_name>/*.png|*.jpg|*.jpeg
      path/test/<class_name>/*.png|*.jpg|*.jpeg

  Class ids are the sorted class names of ``path/train`` (``test`` may hold a
  subset of them). Files are read in sorted order, class by class, and
  decoded with `tf.io.decode_image`; every image must have the same height,
  width and channel count. Other files are ignored.

`train_subset` / `test_subset` keep the first n examples (small demos, tests).
"""

import dataclasses
import gzip
import os
from typing import Tuple

import gin
import numpy as np
import tensorflow as tf
from asmnas_tf.errors import UserError

DATASETS = ("fashion_mnist", "cifar10", "cifar100", "npz", "folder")
DEFAULT_IDX_DIR = "/usr/share/datasets/fashion-mnist"
_TFDS_CLASSES = {"fashion_mnist": 10, "cifar10": 10, "cifar100": 100}
_IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# IDX type codes (http://yann.lecun.com/exdb/mnist/): data is big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4",
               0x0D: ">f4", 0x0E: ">f8"}
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


class DataError(UserError):
    """Data missing or malformed; the message is one line saying how to fix it.

    `load_arrays` is gin-configurable, and gin appends "In call to
    configurable ..." lines to `str()` of anything raised through it; the
    one-line message alone stays in `.message` (gin's proxy forwards it), which
    is what entry points should print.
    """

    def __init__(self, message):
        super().__init__(message)
        self.message = message


@dataclasses.dataclass(frozen=True)
class ImageArrays:
    """A train/test image classification dataset held in memory."""

    x_train: np.ndarray  # uint8 [N, H, W, C]
    y_train: np.ndarray  # int64 [N]
    x_test: np.ndarray  # uint8 [M, H, W, C]
    y_test: np.ndarray  # int64 [M]
    num_classes: int
    name: str

    @property
    def image_shape(self) -> Tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])


@gin.configurable(denylist=[])
def load_arrays(dataset, data_dir=None, idx_dir=None, path=None,
                train_subset=None, test_subset=None) -> ImageArrays:
    """Loads `dataset` (one of `DATASETS`) as uint8 images and int64 labels.

    See the module docstring for what each source expects. Raises DataError
    when the data is missing or malformed.
    """
    if dataset not in DATASETS:
        raise DataError(
            f"Unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}.")
    for name, n in (("train_subset", train_subset), ("test_subset", test_subset)):
        if n is not None and (not isinstance(n, (int, np.integer)) or n < 1):
            raise DataError(f"Expected {name} to be a positive integer or None. "
                            f"Received: {name}={n!r}")
    if dataset in ("npz", "folder") and not path:
        raise DataError(f"dataset={dataset!r} needs path=<the {dataset} "
                        "location>; none was given.")

    if dataset == "fashion_mnist":
        arrays = _load_fashion_mnist(data_dir, idx_dir, train_subset, test_subset)
    elif dataset in ("cifar10", "cifar100"):
        arrays = load_tfds(dataset, data_dir, train_subset, test_subset)
    elif dataset == "npz":
        arrays = load_npz(path)
    else:
        arrays = load_folder(path)
    return _take_first(arrays, train_subset, test_subset)


def _take_first(arrays, train_subset, test_subset):
    return dataclasses.replace(
        arrays,
        x_train=arrays.x_train[:train_subset], y_train=arrays.y_train[:train_subset],
        x_test=arrays.x_test[:test_subset], y_test=arrays.y_test[:test_subset])


# --------------------------------------------------------------------- IDX


def read_idx(filename) -> np.ndarray:
    """Reads one IDX file (plain or gzipped) into a numpy array of its dims."""
    try:
        with open(filename, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError.
        raise DataError(f"Cannot read IDX file {filename}: {e}; "
                        "re-download or reinstall it.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{filename} is not an IDX file (bad magic number "
                        f"{raw[:4].hex() or 'empty'}); re-download or reinstall it.")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {filename} is truncated inside its header; "
                        "re-download or reinstall it.")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(f"IDX file {filename} is {state} ({len(raw)} bytes, "
                        f"expected {expected} for dims {dims}); "
                        "re-download or reinstall it.")
    data = np.frombuffer(raw, dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _find_idx_file(idx_dir, base):
    dotted = base.replace("-idx", ".idx")
    for name in (base, base + ".gz", dotted, dotted + ".gz"):
        candidate = os.path.join(idx_dir, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def load_fashion_mnist_idx(idx_dir) -> ImageArrays:
    """Reads the four Fashion-MNIST IDX files in `idx_dir`."""
    if not os.path.isdir(idx_dir):
        # Say so, rather than list four "missing" files in a folder that isn't there.
        raise DataError(
            f"Fashion-MNIST IDX folder {idx_dir} does not exist; pass idx_dir=<the folder "
            "with the IDX files>, or `apt-get install dataset-fashion-mnist` (into "
            f"{DEFAULT_IDX_DIR}).")
    found = {key: _find_idx_file(idx_dir, base) for key, base in _IDX_NAMES.items()}
    missing = [_IDX_NAMES[k] for k, f in found.items() if f is None]
    if missing:
        raise DataError(
            f"Fashion-MNIST IDX files missing in {idx_dir}: "
            f"{', '.join(m + '[.gz]' for m in missing)}; install them with "
            "`apt-get install dataset-fashion-mnist` (into "
            f"{DEFAULT_IDX_DIR}) or copy them there.")
    arrays = {key: read_idx(f) for key, f in found.items()}
    for key in ("x_train", "x_test"):
        if arrays[key].ndim != 3 or arrays[key].dtype != np.uint8:
            raise DataError(f"{found[key]} should hold uint8 images [N, H, W]; "
                            f"it holds {arrays[key].dtype} {arrays[key].shape}.")
    for key in ("y_train", "y_test"):
        x_key = "x" + key[1:]
        y = arrays[key]
        # Two messages: "it does not" alone would leave the user to guess which.
        if y.ndim != 1 or len(y) != len(arrays[x_key]):
            raise DataError(f"{found[key]} should hold {len(arrays[x_key])} labels, "
                            f"one per image; it holds {y.dtype} {y.shape}.")
        if y.size and y.max() > 9:
            raise DataError(f"{found[key]}: labels should lie in 0..9 (Fashion-MNIST's "
                            f"10 classes); got a label {int(y.max())}.")
    return ImageArrays(
        x_train=arrays["x_train"][..., None], y_train=arrays["y_train"].astype(np.int64),
        x_test=arrays["x_test"][..., None], y_test=arrays["y_test"].astype(np.int64),
        num_classes=10, name="fashion_mnist")


def _load_fashion_mnist(data_dir, idx_dir, train_subset, test_subset):
    if idx_dir is not None:
        return load_fashion_mnist_idx(idx_dir)
    try:
        return load_tfds("fashion_mnist", data_dir, train_subset, test_subset)
    except DataError as tfds_error:
        if all(_find_idx_file(DEFAULT_IDX_DIR, b) for b in _IDX_NAMES.values()):
            return load_fashion_mnist_idx(DEFAULT_IDX_DIR)
        raise DataError(
            f"Fashion-MNIST not found: no prepared TFDS copy in "
            f"{_describe_tfds_dir(data_dir)} and no IDX files in "
            f"{DEFAULT_IDX_DIR}; install them with `apt-get install "
            "dataset-fashion-mnist`, pass idx_dir=<folder with the IDX files>, "
            "or run `tfds build fashion_mnist --data_dir DIR` on a machine "
            "with network and pass data_dir=DIR.") from tfds_error


# -------------------------------------------------------------------- TFDS


def _describe_tfds_dir(data_dir):
    if data_dir is not None:
        return f"data_dir {data_dir}"
    default = os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    return f"the default tfds data_dir {os.path.expanduser(default)}"


def prepared_builder(name, data_dir, how_to_prepare):
    """The TFDS builder of a dataset prepared in `data_dir`; never downloads."""
    import tensorflow_datasets as tfds  # Slow to import; only needed here.

    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        raise DataError(
            f"{name} is not prepared in {_describe_tfds_dir(data_dir)} (looked for "
            f"{builder.data_dir}); nothing is downloaded here: {how_to_prepare}.")
    return builder


def tfds_split(base, n):
    """TFDS split slicing: the first n examples of `base`, or all of it."""
    return base if n is None else f"{base}[:{n}]"


def load_tfds(name, data_dir=None, train_subset=None, test_subset=None) -> ImageArrays:
    """Reads a prepared TFDS dataset (`name` in fashion_mnist/cifar10/cifar100).

    Never downloads. The subsets are applied with TFDS split slicing so only
    the examples kept are decoded.
    """
    import tensorflow_datasets as tfds  # Slow to import; only needed here.

    builder = prepared_builder(
        name, data_dir,
        f"run `tfds build {name} --data_dir DIR` on a machine with network and copy "
        f"DIR/{name}/ into that tfds data_dir")
    try:
        train, test = builder.as_dataset(
            split=[tfds_split("train", train_subset), tfds_split("test", test_subset)],
            batch_size=-1, as_supervised=True)
    except Exception as e:  # Corrupt records; keep the message to one line.
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"Cannot read {name} from {builder.data_dir}: "
                        f"{first_line}; prepare it again.") from None
    (x_train, y_train), (x_test, y_test) = tfds.as_numpy(train), tfds.as_numpy(test)
    return ImageArrays(
        x_train=x_train.astype(np.uint8), y_train=y_train.astype(np.int64),
        x_test=x_test.astype(np.uint8), y_test=y_test.astype(np.int64),
        num_classes=_TFDS_CLASSES[name], name=name)


# --------------------------------------------------------------------- npz


def _npz_images(x, key, path):
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"{path}: {key} should be images [N, H, W] or "
                        f"[N, H, W, C]; got shape {x.shape}.")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{path}: integer {key} should lie in [0, 255]; "
                            f"got [{x.min()}, {x.max()}].")
        return x.astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating):
        if x.size and not np.all(np.isfinite(x)):
            raise DataError(f"{path}: {key} holds NaN or infinite values.")
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{path}: float {key} should lie in [0, 1] or "
                            f"[0, 255]; got [{x.min()}, {x.max()}].")
        scale = 255.0 if x.size and x.max() <= 1.0 else 1.0
        return np.round(x.astype(np.float64) * scale).astype(np.uint8)
    raise DataError(f"{path}: {key} should be uint8 (or [0, 1]/[0, 255] floats); "
                    f"got dtype {x.dtype}.")


def _npz_labels(y, key, n, path):
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{path}: {key} should be {n} integer labels [N] "
                        f"(one per image); got shape {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {key} should be integer class ids; "
                        f"got dtype {y.dtype}.")
    return y.astype(np.int64)


def load_npz(path) -> ImageArrays:
    """Reads user data from an .npz (layout in the module docstring)."""
    if not os.path.isfile(path):
        raise DataError(f"npz file {path} does not exist; pass path=<an .npz "
                        f"with keys {', '.join(_NPZ_KEYS)}>.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            contents = {k: npz[k] for k in npz.files}
    except Exception as e:
        raise DataError(f"Cannot read npz file {path}: {e}.") from None
    for key in _NPZ_KEYS:
        if key not in contents:
            raise DataError(f"{path} lacks key {key!r}; expected keys "
                            f"{', '.join(_NPZ_KEYS)} (and optionally num_classes); "
                            f"found {', '.join(sorted(contents)) or 'none'}.")
    x_train = _npz_images(contents["x_train"], "x_train", path)
    x_test = _npz_images(contents["x_test"], "x_test", path)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{path}: x_train images are {x_train.shape[1:]} but "
                        f"x_test images are {x_test.shape[1:]}; they must match.")
    y_train = _npz_labels(contents["y_train"], "y_train", len(x_train), path)
    y_test = _npz_labels(contents["y_test"], "y_test", len(x_test), path)
    all_labels = np.concatenate([y_train, y_test])
    if "num_classes" in contents:
        num_classes = contents["num_classes"]
        if num_classes.shape != () or not np.issubdtype(num_classes.dtype, np.integer):
            raise DataError(f"{path}: num_classes should be one integer; "
                            f"got {num_classes!r}.")
        num_classes = int(num_classes)
    else:
        num_classes = int(all_labels.max()) + 1 if all_labels.size else 0
    for key, y in (("y_train", y_train), ("y_test", y_test)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise DataError(f"{path}: {key} labels should lie in "
                            f"[0, {num_classes}); got [{y.min()}, {y.max()}].")
    return ImageArrays(x_train=x_train, y_train=y_train, x_test=x_test,
                       y_test=y_test, num_classes=num_classes,
                       name=os.path.splitext(os.path.basename(path))[0])


# ------------------------------------------------------------------ folder


def _folder_split(split_dir, class_ids, shape):
    images, labels = [], []
    for class_name in sorted(os.listdir(split_dir)):
        class_dir = os.path.join(split_dir, class_name)
        if not os.path.isdir(class_dir):
            continue
        if class_name not in class_ids:
            raise DataError(f"{class_dir} is a class missing from the train "
                            "folder; every test class needs train images.")
        for fname in sorted(os.listdir(class_dir)):
            if not fname.lower().endswith(_IMAGE_EXTENSIONS):
                continue
            fpath = os.path.join(class_dir, fname)
            try:
                image = tf.io.decode_image(tf.io.read_file(fpath),
                                           expand_animations=False).numpy()
            except (tf.errors.OpError, ValueError) as e:
                raise DataError(f"Cannot decode image {fpath}: "
                                f"{type(e).__name__}; remove or replace it.") from None
            if image.dtype != np.uint8:
                raise DataError(f"{fpath} is {image.dtype}; expected 8-bit images.")
            if shape[0] is None:
                shape[0] = image.shape
            elif image.shape != shape[0]:
                raise DataError(f"{fpath} is {image.shape} (H, W, C) but earlier "
                                f"images are {shape[0]}; all images must match.")
            images.append(image)
            labels.append(class_ids[class_name])
    return images, labels


def load_folder(path) -> ImageArrays:
    """Reads user data from a folder per class (layout in the module docstring)."""
    train_dir, test_dir = os.path.join(path, "train"), os.path.join(path, "test")
    for d in (train_dir, test_dir):
        if not os.path.isdir(d):
            raise DataError(f"Image folder {d} does not exist; expected "
                            f"{path}/{{train,test}}/<class_name>/*.png|jpg|jpeg.")
    class_names = sorted(n for n in os.listdir(train_dir)
                         if os.path.isdir(os.path.join(train_dir, n)))
    if not class_names:
        raise DataError(f"{train_dir} holds no class folders; expected "
                        f"{train_dir}/<class_name>/*.png|jpg|jpeg.")
    class_ids = {name: i for i, name in enumerate(class_names)}
    shape = [None]
    x_train, y_train = _folder_split(train_dir, class_ids, shape)
    counts = np.bincount(np.asarray(y_train, np.int64), minlength=len(class_names))
    for name, count in zip(class_names, counts):
        if count == 0:
            raise DataError(f"{os.path.join(train_dir, name)} holds no "
                            ".png/.jpg/.jpeg images.")
    x_test, y_test = _folder_split(test_dir, class_ids, shape)
    if not x_test:
        raise DataError(f"{test_dir} holds no images; expected "
                        f"{test_dir}/<class_name>/*.png|jpg|jpeg.")
    return ImageArrays(
        x_train=np.stack(x_train), y_train=np.asarray(y_train, np.int64),
        x_test=np.stack(x_test), y_test=np.asarray(y_test, np.int64),
        num_classes=len(class_names),
        name=os.path.basename(os.path.normpath(path)))


# ------------------------------------------------------------ user values


def _dataset_to_arrays(dataset, what):
    """(images, labels) of a `tf.data.Dataset` of (image, label), batched or not."""
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise DataError(f"{what}: expected a tf.data.Dataset of (image, label) pairs; "
                        f"its elements are {spec}.")
    images, labels = [], []
    batched = len(spec[0].shape) == 4
    for x, y in dataset.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    if not images:
        raise DataError(f"{what}: the tf.data.Dataset is empty.")
    stack = np.concatenate if batched else np.stack
    return stack(images), (np.concatenate if batched else np.asarray)(labels)


def as_image_arrays(x, y=None, x_test=None, y_test=None, num_classes=None, name="arrays") -> ImageArrays:
    """User data given as values: numpy images and labels, or `tf.data.Dataset`s.

    `x`: images [N, H, W] or [N, H, W, C], uint8 (or floats in [0, 1] or
    [0, 255]), with labels `y` [N]; or a `tf.data.Dataset` of (image, label)
    pairs, batched or not, read once into memory (`y` then None); or an
    `ImageArrays` (as `load_arrays` returns), used as it is. The test split
    is optional (searching needs none). The same checks as an .npz file.
    """
    if isinstance(x, ImageArrays):
        return x
    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise DataError("x is a tf.data.Dataset of (image, label) pairs: pass y=None")
        x, y = _dataset_to_arrays(x, "x")
    if isinstance(x_test, tf.data.Dataset):
        if y_test is not None:
            raise DataError("x_test is a tf.data.Dataset of (image, label) pairs: pass y_test=None")
        x_test, y_test = _dataset_to_arrays(x_test, "x_test")
    if y is None:
        raise DataError("y (the training labels) is missing: pass x and y, or a tf.data.Dataset as x")
    if (x_test is None) != (y_test is None):
        raise DataError("pass both x_test and y_test, or neither")
    x_train = _npz_images(np.asarray(x), "x", "arrays")
    y_train = _npz_labels(np.asarray(y), "y", len(x_train), "arrays")
    if x_test is None:
        x_test, y_test = x_train[:0], y_train[:0]
    else:
        x_test = _npz_images(np.asarray(x_test), "x_test", "arrays")
        y_test = _npz_labels(np.asarray(y_test), "y_test", len(x_test), "arrays")
        if x_test.shape[1:] != x_train.shape[1:]:
            raise DataError(f"arrays: x images are {x_train.shape[1:]} but x_test images are "
                            f"{x_test.shape[1:]}; they must match.")
    labels = np.concatenate([y_train, y_test])
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"arrays: labels should lie in [0, {num_classes}); got [{labels.min()}, {labels.max()}].")
    return ImageArrays(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                       num_classes=int(num_classes), name=name)
