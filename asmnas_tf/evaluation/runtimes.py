"""Each export format's file, run in its own runtime, behind one call.

    served = open_runtime("litert", path)
    served(images)    # uint8 [batch, H, W, C] -> {"probabilities": float32, "class_ids": int64}
    served.signature  # {"images": (uint8, (-1, H, W, C)), "probabilities": ..., "class_ids": ...}

The runtimes are the ones a deployment uses: TensorFlow for the SavedModel,
LiteRT's interpreter (`ai_edge_litert`, not TensorFlow's deprecated
`tf.lite.Interpreter`) for .tflite, onnxruntime for .onnx. Each is imported
when a file of its kind is opened, so TensorFlow alone is enough for the
SavedModel. Every runtime keeps its default threading.
"""

import numpy as np

from asmnas_tf.evaluation.export import INPUT_NAME, SIGNATURE

RUNTIMES = ("tensorflow", "litert", "onnxruntime")

# onnxruntime names its types as strings.
_ONNX_DTYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(float16)": np.float16,
                "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def _shape(dims):
    """A shape with -1 for every unknown size (None, -1, or onnx's symbolic 'unk__12')."""
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in dims)


class _SavedModel:
    def __init__(self, path):
        import tensorflow as tf

        self._tf = tf
        self._loaded = tf.saved_model.load(path)  # kept: the signature refers to its variables
        self._function = self._loaded.signatures[SIGNATURE]
        specs = {**self._function.structured_input_signature[1], **self._function.structured_outputs}
        self.signature = {name: (np.dtype(spec.dtype.as_numpy_dtype), _shape(spec.shape.as_list()))
                          for name, spec in specs.items()}

    def __call__(self, images):
        outputs = self._function(**{INPUT_NAME: self._tf.constant(images)})
        return {name: value.numpy() for name, value in outputs.items()}


class _LiteRT:
    def __init__(self, path):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=path)
        self._runner = self._interpreter.get_signature_runner(SIGNATURE)
        details = {**self._runner.get_input_details(), **self._runner.get_output_details()}
        self.signature = {name: (np.dtype(d["dtype"]), _shape(d["shape_signature"].tolist()))
                          for name, d in details.items()}

    def __call__(self, images):
        # The runner resizes its input to each new batch size.
        outputs = self._runner(**{INPUT_NAME: np.ascontiguousarray(images)})
        return {name: np.array(value) for name, value in outputs.items()}


class _OnnxRuntime:
    def __init__(self, path):
        import onnxruntime

        self._session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.signature = {node.name: (np.dtype(_ONNX_DTYPES.get(node.type, object)), _shape(node.shape))
                          for node in [*self._session.get_inputs(), *self._session.get_outputs()]}

    def __call__(self, images):
        return dict(zip(self._outputs, self._session.run(self._outputs, {INPUT_NAME: images})))


_OPENERS = {"tensorflow": _SavedModel, "litert": _LiteRT, "onnxruntime": _OnnxRuntime}


def open_runtime(runtime, path):
    """The file at `path` loaded in `runtime` (one of RUNTIMES), as a callable."""
    return _OPENERS[runtime](path)


def expected_signature(image_shape, num_classes):
    """What every format's file must take and give, as `signature` spells it."""
    return {INPUT_NAME: (np.dtype(np.uint8), (-1, *image_shape)),
            "probabilities": (np.dtype(np.float32), (-1, num_classes)),
            "class_ids": (np.dtype(np.int64), (-1,))}


def check_runs(served, path, image_shape, num_classes):
    """A freshly converted file: its signature is the SavedModel's and one image gives finite probabilities.

    A conversion can succeed and still produce a file that does not run
    (a variable left unfrozen reads as NaN in LiteRT): that is a bug here,
    so it raises with a traceback rather than writing the file.
    """
    expected = expected_signature(image_shape, num_classes)
    if served.signature != expected:
        raise RuntimeError(f"{path}: signature {served.signature}, expected {expected}")
    outputs = served(np.zeros((1, *image_shape), np.uint8))
    if not np.all(np.isfinite(outputs["probabilities"])):
        raise RuntimeError(f"{path}: non-finite probabilities on a blank image: {outputs['probabilities']}")
