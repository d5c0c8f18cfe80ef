"""ONNX weights (`onnx`), converted from the (frozen) SavedModel with tf2onnx.

Opset 17 (what deepImageJ's default ONNX Runtime 1.13 supports), IR version 8 (loads in onnxruntime 1.15), graph
input/output named `input`/`output` like the rdf tensor ids, dynamic batch/y/x, and no `ai.onnx.ml` opset import
(tf2onnx adds it although no ML op is used).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cristae_zoo.errors import CristaeZooError
from cristae_zoo.export.base import INPUT_NAME, OUTPUT_NAME, ExportContext, WeightsExporter
from cristae_zoo.io import atomic_path

OPSET = 17
IR_VERSION = 8
DYNAMIC_DIMS = ("batch", None, "y", "x")  # the channel count stays fixed
DYNAMIC_DIMS_3D = ("batch", None, "z", "y", "x")


def convert_saved_model(saved_model_dir: Path, dest: Path, opset: int = OPSET) -> Path:
    """What `python -m tf2onnx.convert --saved-model DIR --signature_def serving_default --opset 17` does, in this
    process (a subprocess would start TensorFlow a second time: half a minute on a busy machine)."""
    import tensorflow as tf
    from tf2onnx import convert, tf_loader

    try:
        graph_def, inputs, outputs, tables, renames = tf_loader.from_saved_model(
            str(saved_model_dir), None, None, None, ["serving_default"], None, False,
            return_initialized_tables=True, return_tensors_to_rename=True,
        )  # fmt: skip
        with tf.device("/cpu:0"):
            model_proto, _ = convert._convert_common(
                graph_def, name=str(saved_model_dir), opset=opset, input_names=inputs, output_names=outputs,
                tensors_to_rename=renames, initialized_tables=tables, output_path=str(dest),
            )  # fmt: skip
    except Exception as err:  # tf2onnx raises many kinds
        raise CristaeZooError(f"{saved_model_dir}: tf2onnx failed to convert the SavedModel to ONNX ({err})") from None
    if not Path(dest).is_file():
        raise CristaeZooError(f"{saved_model_dir}: tf2onnx wrote no ONNX file")
    return Path(dest)


def tidy(model: Any) -> Any:
    """Names, dynamic dims, opset imports and IR version as the clients need them (in place)."""
    import onnx

    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise CristaeZooError(
            f"ONNX graph has {len(graph.input)} inputs and {len(graph.output)} outputs; expected 1 and 1"
        )
    for value, wanted in ((graph.input[0], INPUT_NAME), (graph.output[0], OUTPUT_NAME)):
        if value.name != wanted:
            old = value.name
            for node in graph.node:
                node.input[:] = [wanted if n == old else n for n in node.input]
                node.output[:] = [wanted if n == old else n for n in node.output]
            value.name = wanted
        dims = value.type.tensor_type.shape.dim
        for dim, name in zip(dims, DYNAMIC_DIMS_3D if len(dims) == 5 else DYNAMIC_DIMS):
            if name is not None:
                dim.ClearField("dim_value")
                dim.dim_param = name
    keep = [op for op in model.opset_import if op.domain not in ("ai.onnx.ml",)]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


class OnnxExporter(WeightsExporter):
    weights_format: ClassVar[str] = "onnx"
    title: ClassVar[str] = "ONNX"
    file_name: ClassVar[str] = "weights.onnx"
    parent: ClassVar[str | None] = "tensorflow_saved_model_bundle"

    def export(self, ctx: ExportContext, dest: Path, x: np.ndarray) -> Path:
        import onnx

        raw = convert_saved_model(ctx.saved_model_dir, ctx.work_dir / "tf2onnx.onnx")
        model = tidy(onnx.load(str(raw)))
        with atomic_path(Path(dest)) as tmp:
            onnx.save(model, str(tmp))
        return Path(dest)

    def predict(self, weights: Path, x: np.ndarray) -> np.ndarray:
        import onnxruntime as ort

        session = ort.InferenceSession(str(weights), providers=["CPUExecutionProvider"])
        (y,) = session.run([OUTPUT_NAME], {INPUT_NAME: np.asarray(x, dtype=np.float32)})
        return np.asarray(y, dtype=np.float32)

    def versions(self) -> dict[str, str]:
        return {"opset_version": str(OPSET)}

    def weights_descr(self, source: Path, versions: dict[str, str], parent: str | None) -> Any:
        from bioimageio.spec.model.v0_5 import OnnxWeightsDescr

        return OnnxWeightsDescr(
            source=source,
            opset_version=int(versions["opset_version"]),
            parent=parent,
            comment=f"tf2onnx from the SavedModel, opset {OPSET}, IR version {IR_VERSION} (onnxruntime >= 1.15);"
            " the format to pick in Fiji/deepImageJ.",
        )
