"""Export a trained DeepCristae model as a bioimage.io model package.

- `base`: the `WeightsExporter` interface, `ExportContext`, `load_trained_model`;
- `tensorflow`, `onnx`, `torchscript`: one exporter per weights format;
- `halo`: receptive field and measured tiling halo;
- `package`: the rdf.yaml, README, covers, test tensors; folder + zip.
"""

from __future__ import annotations

from cristae_zoo.export.base import (
    DEFAULT_TOLERANCE,
    ExportContext,
    ExportedWeights,
    TrainedModel,
    WeightsExporter,
    load_trained_model,
)


def exporters() -> dict[str, WeightsExporter]:
    """Every weights format this package writes, source format first (bioimage.io key → exporter)."""
    from cristae_zoo.export.onnx import OnnxExporter
    from cristae_zoo.export.tensorflow import TensorflowExporter
    from cristae_zoo.export.torchscript import TorchscriptExporter

    return {e.weights_format: e for e in (TensorflowExporter(), OnnxExporter(), TorchscriptExporter())}


#: short names accepted on the command line → bioimage.io weights format
WEIGHTS_FORMAT_ALIASES = {
    "tensorflow": "tensorflow_saved_model_bundle",
    "tf": "tensorflow_saved_model_bundle",
    "tensorflow_saved_model_bundle": "tensorflow_saved_model_bundle",
    "onnx": "onnx",
    "torchscript": "torchscript",
}

__all__ = [
    "DEFAULT_TOLERANCE",
    "ExportContext",
    "ExportedWeights",
    "TrainedModel",
    "WeightsExporter",
    "WEIGHTS_FORMAT_ALIASES",
    "exporters",
    "load_trained_model",
]
