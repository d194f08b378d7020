"""Each exported file, run in its own runtime on real test images, against the SavedModel.

    verify_export(run_dir, x_test, y_test)

prints one line per format: its test accuracy and how far it is from the
SavedModel's (the reference), its size on disk, and the median latency of
one image. A float format (litert, litert_float16, onnx) must be within
0.1 percentage points of the SavedModel's accuracy, int8 within 1 point
(`export_formats.FORMATS`); any other is refused after every line is
printed, in one line naming the format (ExportError).

Latency: one image per call, `repeats` timed calls after two warm-up calls,
each runtime with its default threading; on a machine running other work
the figures say little about the format and much about the load.
"""

import dataclasses
import os
import statistics
import time

import numpy as np

from asmnas_tf.evaluation import runtimes
from asmnas_tf.evaluation.export import ExportError, read_normalization
from asmnas_tf.evaluation.export_formats import FORMATS, check_images, check_packages, format_path

REFERENCE = "saved_model"


@dataclasses.dataclass(frozen=True)
class Verified:
    """One format's verification; accuracies are fractions, differences percentage points."""

    format: str
    path: str
    accuracy: float
    reference_accuracy: float
    tolerance_points: float
    size_bytes: int
    latency_ms: float
    repeats: int

    @property
    def difference_points(self):
        return 100.0 * (self.accuracy - self.reference_accuracy)

    @property
    def within_tolerance(self):
        # A rounding margin: 1 image in 1000 is exactly 0.1 points.
        return abs(self.difference_points) <= self.tolerance_points + 1e-9

    def line(self):
        if self.format == REFERENCE:
            versus = "the reference"
        else:
            versus = f"{self.difference_points:+.2f} points vs {REFERENCE}, allowed {self.tolerance_points:.1f}"
        return (f"{self.format:<15} {os.path.basename(self.path):<21} accuracy {100 * self.accuracy:6.2f}% "
                f"({versus})  size {_size_text(self.size_bytes)}  "
                f"latency {self.latency_ms:.2f} ms/image (median of {self.repeats})")


def _size_text(size):
    return f"{size / 2**20:.2f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"


def _size_on_disk(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(folder, name))
               for folder, _, names in os.walk(path) for name in names)


def _accuracy(served, images, labels, batch_size):
    correct = 0
    for start in range(0, len(images), batch_size):
        class_ids = served(images[start:start + batch_size])["class_ids"]
        correct += int(np.sum(class_ids == labels[start:start + batch_size]))
    return correct / len(images)


def _latency_ms(served, image, repeats):
    for _ in range(2):  # the first calls allocate (and LiteRT resizes to batch 1)
        served(image)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        served(image)
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def _formats_to_verify(run_dir, formats):
    """The reference first, then `formats` (default: every format file the run directory holds)."""
    if formats is None:
        formats = [name for name in FORMATS if os.path.exists(format_path(name, run_dir))]
    names = [REFERENCE] + [name for name in formats if name != REFERENCE]
    for name in names:
        if not os.path.exists(format_path(name, run_dir)):
            raise ExportError(f"--model_dir={run_dir} holds no {FORMATS[name].file} to verify; "
                              f"export it first: asmnas-export --model_dir={run_dir} --formats={name}")
    return names


def verify_export(run_dir, images, labels, formats=None, repeats=20, batch_size=100, print_fn=print):
    """Runs each format's file in its runtime on `images`; returns a list of `Verified`, the SavedModel's first.

    `images`: uint8 [N, H, W, C] (test images, not seen in training);
    `labels`: their class ids [N]. `formats`: names of `FORMATS`; default
    every one whose file is in `run_dir`. `print_fn`: where the lines go
    (None: nowhere). Raises ExportError if a format is not within its
    tolerance of the SavedModel's accuracy.
    """
    run_dir = os.fspath(run_dir)
    names = _formats_to_verify(run_dir, formats)
    check_packages(names)
    info = read_normalization(run_dir)
    images = check_images(images, tuple(info["image_shape"]), "verify_export images")
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(images):
        raise ExportError(f"verify_export: {len(images)} images but {len(labels)} labels")
    results = []
    for name in names:
        path = format_path(name, run_dir)
        served = runtimes.open_runtime(FORMATS[name].runtime, path)
        accuracy = _accuracy(served, images, labels, batch_size)
        verified = Verified(name, path, accuracy, results[0].accuracy if results else accuracy,
                            FORMATS[name].tolerance_points, _size_on_disk(path),
                            _latency_ms(served, images[:1], repeats), repeats)
        results.append(verified)
        if print_fn:
            print_fn(verified.line())
    failed = [v for v in results if not v.within_tolerance]
    if failed:
        raise ExportError("verify: " + "; ".join(
            f"{v.format} accuracy {100 * v.accuracy:.2f}% is {abs(v.difference_points):.2f} points from the "
            f"SavedModel's {100 * v.reference_accuracy:.2f}% (allowed {v.tolerance_points:.1f})" for v in failed))
    return results
