"""SavedModel -> LiteRT flatbuffer (.tflite): float32, float16 weights, or full-integer int8.

The converter reads the SavedModel's `serving_default` signature, so the
.tflite file keeps its interface: uint8 images [batch, H, W, C] in (batch
1 by default; LiteRT resizes it per call), `probabilities` float32 and
`class_ids` int64 out, under the same signature name. The SavedModel's
shape check (`tf.debugging.Assert`) is dropped by the converter: a LiteRT
input tensor has a fixed shape, which the interpreter checks itself.

Converting from the SavedModel on disk, not from the Keras model's
function: `from_concrete_functions` keeps Keras 3's variables as LiteRT
resource variables that nothing initialises (the outputs read as NaN).

* float32: the graph as it is.
* float16: weights stored as float16 (half the file), computed in float32
  (or float16 where the delegate can).
* int8: weights and activations int8, scales calibrated on a representative
  sample of training images; only int8 builtin ops, so the conversion fails
  rather than fall back to float for an op it cannot quantise. The uint8
  input is cast and quantised inside; the probabilities are dequantised to
  float32 at the end (the class ids are the argmax of those).
"""

import warnings

import numpy as np
import tensorflow as tf

from asmnas_tf.evaluation.export import INPUT_NAME, SIGNATURE

VARIANTS = ("float32", "float16", "int8")
# Images drawn for the int8 calibration. TensorFlow's guide suggests ~100-500;
# a random draw, not the first ones: a folder dataset is read class by class.
CALIBRATION_SAMPLES = 200


def calibration_sample(images, samples=CALIBRATION_SAMPLES, seed=0):
    """Up to `samples` of `images`, drawn without replacement, in their order."""
    if len(images) <= samples:
        return images
    picked = np.random.default_rng(seed).choice(len(images), samples, replace=False)
    return images[np.sort(picked)]


def convert(saved_model_dir, variant, calibration_images=None):
    """The .tflite bytes of `saved_model_dir`'s serving signature; `variant` one of VARIANTS.

    `calibration_images`: uint8 [N, H, W, C], required for 'int8'.
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[SIGNATURE])
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        sample = calibration_sample(calibration_images)

        def representative_dataset():
            for i in range(len(sample)):
                yield {INPUT_NAME: sample[i:i + 1]}

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    elif variant != "float32":
        raise ValueError(f"Expected variant to be one of {VARIANTS}. Received: variant={variant!r}")
    with warnings.catch_warnings():
        # The calibration runs tf.lite.Interpreter, which warns that it is deprecated (for ai_edge_litert).
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        return converter.convert()
