"""SavedModel -> ONNX (tf2onnx), opset 17.

tf2onnx converts a `tf.function`: here one that calls the loaded
SavedModel's `serving_default`, so the ONNX graph is the SavedModel's
(normalisation and optional flip inside), with its names: input `images`
uint8 [batch, H, W, C], outputs `probabilities` float32 [batch, classes]
and `class_ids` int64 [batch]. The variables are frozen into initializers;
the shape check (`tf.debugging.Assert`) has no ONNX op and is dropped
(onnxruntime checks the input's rank, dtype and fixed sizes itself).
"""

import logging

import tensorflow as tf

from asmnas_tf.evaluation.export import INPUT_NAME, SIGNATURE

# 17: supported by every onnxruntime since 1.14 and by tf2onnx for every op
# of the evaluation network.
OPSET = 17


def convert(saved_model_dir, image_shape):
    """The serialised ONNX model of `saved_model_dir`'s serving signature."""
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.WARNING)  # its INFO lines list every rewrite
    loaded = tf.saved_model.load(saved_model_dir)  # kept alive: the signature refers to its variables
    serve = loaded.signatures[SIGNATURE]
    spec = tf.TensorSpec([None, *image_shape], tf.uint8, name=INPUT_NAME)
    function = tf.function(lambda images: serve(**{INPUT_NAME: images}), input_signature=[spec])
    model, _ = tf2onnx.convert.from_function(function, input_signature=[spec], opset=OPSET)
    return model.SerializeToString()
