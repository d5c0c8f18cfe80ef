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

import tempfile
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cristae_zoo.export.base import ExportContext, WeightsExporter
from cristae_zoo.export.tf_graph import INPUT_NAME, OUTPUT_NAME, channels_first_wrapper, write_frozen_saved_model  # noqa: F401
from cristae_zoo.io import atomic_path

#: Ops that mean the graph still holds variables (the SavedModel was not frozen).
VARIABLE_OPS = frozenset({"VarHandleOp", "ReadVariableOp", "AssignVariableOp", "VariableV2"})


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
