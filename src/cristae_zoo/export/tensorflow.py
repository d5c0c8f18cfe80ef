"""TensorFlow SavedModel weights (`tensorflow_saved_model_bundle`).

The trained channels-last U-Net is wrapped between two `Permute` layers so that the SavedModel takes and returns
bioimage.io's (batch, channel, y, x); the output is a dict `{"output": ...}` so that the serving signature is
`{input} -> {output}` (deepImageJ matches signature keys to rdf tensor ids, and bioimageio.core's `TFSMLayer`
backend asserts a dict). Keras 3 `model.export()` writes the `serve` and `serving_default` endpoints; the folder is
zipped flat (`saved_model.pb`, `fingerprint.pb`, `variables/`).
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


def channels_first_wrapper(keras_model: Any) -> Any:
    """(B, 1, Y, X) in, `{"output": (B, 1, Y, X)}` out, around a channels-last (B, Y, X, 1) model."""
    import keras
    from keras import layers

    inp = keras.Input(shape=(1, None, None), name=INPUT_NAME, dtype="float32")
    x = layers.Permute((2, 3, 1), name="to_channels_last")(inp)
    x = keras_model(x)
    out = layers.Permute((3, 1, 2), name="to_channels_first")(x)
    return keras.Model(inp, {OUTPUT_NAME: out}, name="deepcristae_bcyx")


def write_saved_model(wrapper: Any, folder: Path) -> Path:
    """`wrapper.export(folder, format="tf_saved_model")`, quietly."""
    import contextlib
    import io

    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the endpoint signatures
        wrapper.export(str(folder), format="tf_saved_model", verbose=False)
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

    def export(self, ctx: ExportContext, dest: Path) -> Path:
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
            comment="Keras 3 model.export(); signature keys 'input' -> 'output', (batch, channel, y, x).",
        )
