"""Export a trained model of any system as a bioimage.io model package.

- `base`: the `WeightsExporter` interface, `ExportContext`, `keras_predict`;
- `tensorflow`, `onnx`, `torchscript`: one exporter per weights format (frozen SavedModel, tf2onnx, traced twin);
- `halo`: receptive field, tiling and the measured tiling error per halo;
- `rdf`: the bioimage.io description from a system's `TensorDescription` and its template;
- `readme`: the package README;
- `package`: the one packager (`package_model`): test tensors, samples, cover, attachments; atomic, size-capped.
"""

from __future__ import annotations

from cristae_zoo.export.base import (
    DEFAULT_TOLERANCE,
    ExportContext,
    ExportedWeights,
    WeightsExporter,
    keras_predict,
)


def exporters() -> dict[str, WeightsExporter]:
    """Every weights format this package writes, source format first (bioimage.io key → exporter)."""
    from cristae_zoo.export.onnx import OnnxExporter
    from cristae_zoo.export.tensorflow import TensorflowExporter
    from cristae_zoo.export.torchscript import TorchscriptExporter

    return {e.weights_format: e for e in (TensorflowExporter(), OnnxExporter(), TorchscriptExporter())}


#: short names accepted on the command line → bioimage.io weights format
from cristae_zoo.engines import WEIGHTS_FORMAT_ALIASES  # noqa: E402  (one table, beside the engines)

__all__ = [
    "DEFAULT_TOLERANCE",
    "ExportContext",
    "ExportedWeights",
    "WeightsExporter",
    "WEIGHTS_FORMAT_ALIASES",
    "exporters",
    "keras_predict",
]
