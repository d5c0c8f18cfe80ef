"""TensorFlow SavedModel weights (`tensorflow_saved_model_bundle`), frozen: the weights are graph constants.

The trained channels-last network is wrapped between two `Permute` layers so that the SavedModel takes and returns
bioimage.io's (batch, channel, [z,] y, x); the output is a dict `{"output": ...}` so that the serving signature is
`{input} -> {output}` (deepImageJ matches signature keys to rdf tensor ids, and bioimageio.core's `TFSMLayer`
backend asserts a dict).

Why frozen: Keras 3 `model.export()` saves variables, and TF ≥ 2.12 writes a `DisableCopyOnRead` op into the
restore function for them, which TF 2.7 (deepImageJ's default TensorFlow Java engine) does not know: "Op type not
registered". Converting the serving function's variables to constants and saving it from a plain `tf.Module`
leaves no variable (and no `DisableCopyOnRead`, `VarHandleOp`, `ReadVariableOp`) in the graph; bioimageio.core
still loads it (`TFSMLayer`, endpoint `serve`). It is also half the size (no second copy of the weights). The
folder is zipped flat (`saved_model.pb`, `fingerprint.pb`, `variables/`).
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cristae_zoo.export.base import INPUT_NAME, OUTPUT_NAME, ExportContext, WeightsExporter
from cristae_zoo.io import atomic_path

#: Ops that mean the graph still holds variables (the SavedModel was not frozen).
VARIABLE_OPS = frozenset({"VarHandleOp", "ReadVariableOp", "AssignVariableOp", "VariableV2"})


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


def zip_flat(folder: Path, dest: Path) -> Path:
    """Zip the contents of `folder` (not the folder itself) to `dest`, with sorted, reproducible entries."""
    folder = Path(folder)
    with atomic_path(Path(dest)) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                info = zipfile.ZipInfo(path.relative_to(folder).as_posix() + ("/" if path.is_dir() else ""))
                info.date_time = (1980, 1, 1, 0, 0, 0)
                if path.is_dir():
                    info.external_attr = 0o40755 << 16
                    zf.writestr(info, b"")
                else:
                    info.external_attr = 0o644 << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    zf.writestr(info, path.read_bytes())
    return Path(dest)


class TensorflowExporter(WeightsExporter):
    weights_format: ClassVar[str] = "tensorflow_saved_model_bundle"
    title: ClassVar[str] = "TensorFlow SavedModel"
    file_name: ClassVar[str] = "tf_saved_model.zip"
    parent: ClassVar[str | None] = None

    def export(self, ctx: ExportContext, dest: Path, x: np.ndarray) -> Path:
        from cristae_zoo.clients import savedmodel_ops, savedmodel_problems
        from cristae_zoo.errors import CristaeZooError

        # a TF/Keras upgrade could change what freezing leaves behind: old TF runtimes would fail to load it
        problems = savedmodel_problems(ctx.saved_model_dir)
        variables = sorted(savedmodel_ops(ctx.saved_model_dir) & VARIABLE_OPS)
        if problems or variables:
            what = "; ".join(problems + ([f"variable ops {', '.join(variables)}"] if variables else []))
            raise CristaeZooError(f"the frozen SavedModel cannot be loaded by TF 2.7: {what}")
        return zip_flat(ctx.saved_model_dir, dest)

    def predict(self, weights: Path, x: np.ndarray) -> np.ndarray:
        """Load the zip the way bioimageio.core does (`TFSMLayer`, endpoint `serve`) and run it."""
        import keras

        with tempfile.TemporaryDirectory(prefix="cristae_zoo_tf_") as tmp:
            with zipfile.ZipFile(weights) as zf:
                zf.extractall(tmp)
            layer = keras.layers.TFSMLayer(tmp, call_endpoint="serve")
            out = layer(np.asarray(x, dtype=np.float32))
        if not isinstance(out, dict) or OUTPUT_NAME not in out:
            raise TypeError(f"SavedModel returned {type(out).__name__}, expected a dict with key {OUTPUT_NAME!r}")
        return np.asarray(out[OUTPUT_NAME], dtype=np.float32)

    def versions(self) -> dict[str, str]:
        import tensorflow as tf

        return {"tensorflow_version": tf.__version__}

    def weights_descr(self, source: Path, versions: dict[str, str], parent: str | None) -> Any:
        from bioimageio.spec.model.v0_5 import TensorflowSavedModelBundleWeightsDescr, Version

        return TensorflowSavedModelBundleWeightsDescr(
            source=source,
            tensorflow_version=Version(versions["tensorflow_version"]),
            parent=parent,
            comment="Frozen (weights as constants, no variables: loads in TF 2.7); signatures serve and"
            " serving_default, 'input' -> 'output', (batch, channel, [z,] y, x).",
        )
