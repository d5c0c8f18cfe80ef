"""The TensorFlow graph of a package: the channels-first wrapper around a Keras model and its frozen SavedModel
(weights folded into constants, so TF 2.7 — deepImageJ's default engine — knows every op). Shared by the
TensorFlow and ONNX exporters (ONNX is converted from this SavedModel)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

#: Names of the graph's input and output in every format = the rdf tensor ids (deepImageJ matches by name).
INPUT_NAME = "input"
OUTPUT_NAME = "output"


def channels_first_wrapper(keras_model: Any, ndim: int = 2, in_channels: int = 1) -> Any:
    """(B, in_channels, [Z,] Y, X) in, `{"output": (B, C, [Z',] Y', X')}` out, around a channels-last model."""
    import keras
    from keras import layers

    inp = keras.Input(shape=(in_channels,) + (None,) * ndim, name=INPUT_NAME, dtype="float32")
    x = layers.Permute(tuple(range(2, ndim + 2)) + (1,), name="to_channels_last")(inp)
    x = keras_model(x)
    out = layers.Permute((ndim + 1,) + tuple(range(1, ndim + 1)), name="to_channels_first")(x)
    return keras.Model(inp, {OUTPUT_NAME: out}, name="bioimageio_channels_first")


def write_frozen_saved_model(wrapper: Any, folder: Path, ndim: int, in_channels: int) -> Path:
    """Save `wrapper`'s serving function with its variables folded into constants (signatures `serve` and
    `serving_default`, input `input`, output dict key `output`)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    spec = tf.TensorSpec([None, in_channels] + [None] * ndim, tf.float32, name=INPUT_NAME)
    traced = tf.function(lambda x: wrapper(x, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(traced)

    @tf.function(input_signature=[spec])
    def serve(input: Any) -> dict[str, Any]:  # noqa: A002  (the signature's input key)
        out = frozen(input)
        out = out[OUTPUT_NAME] if isinstance(out, dict) else (out[0] if isinstance(out, (list, tuple)) else out)
        return {OUTPUT_NAME: tf.identity(out, name=OUTPUT_NAME)}

    module = tf.Module()
    module.serve = serve
    concrete = serve.get_concrete_function()
    tf.saved_model.save(module, str(folder), signatures={"serve": concrete, "serving_default": concrete})
    return folder
