"""The interface every weights exporter implements, and the shared export state.

One module per bioimage.io weights format (`tensorflow`, `onnx`, `torchscript`), each with one `WeightsExporter`
subclass, in the manner of bioimageio.core's backends. Every exporter writes its file, runs it on a test tensor and
compares with the Keras model: an export that does not reproduce Keras is an error, never a warning.

Tensors at this interface are bioimage.io tensors: float32, (batch, channel, [z,] y, x), already normalised (the
package's preprocessing runs before the network). The exporters know nothing of any system: the Keras model, its
PyTorch twin and the number of input channels and spatial axes are all they are given (`ExportContext`).
"""

from __future__ import annotations

import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cristae_zoo.errors import CristaeZooError
from cristae_zoo.export.tf_graph import INPUT_NAME, OUTPUT_NAME  # noqa: F401  (re-exported)

#: An export whose output differs from Keras by more than this (max abs, on normalised data) is refused.
DEFAULT_TOLERANCE = 1e-4


def keras_predict(keras_model: Any, x: np.ndarray) -> np.ndarray:
    """Run the channels-last Keras model on a (B, C, Y, X) or (B, C, Z, Y, X) tensor; return it channels-first."""
    x = np.asarray(x, dtype=np.float32)
    last = (0, *range(2, x.ndim), 1)  # (B, C, *spatial) -> (B, *spatial, C)
    first = (0, x.ndim - 1, *range(1, x.ndim - 1))
    # a direct call, not `predict()`: no tf.function retracing for every new tile shape
    ys = [np.asarray(keras_model(np.transpose(x[i : i + 1], last), training=False)) for i in range(len(x))]
    y = np.concatenate(ys, axis=0)
    return np.ascontiguousarray(np.transpose(np.asarray(y, dtype=np.float32), first))


@dataclass
class ExportContext:
    """Shared state of one export run.

    `keras_model` is channels-last with one input of `n_in` channels and `ndim` spatial axes and one output;
    `torch_twin` builds the channels-first PyTorch module computing the same (its weights copied from Keras), or is
    None when the system has no twin (then no TorchScript weights are written).
    """

    keras_model: Any
    ndim: int = 2
    n_in: int = 1
    torch_twin: Callable[[], Any] | None = None
    work_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cristae_zoo_export_")))

    @cached_property
    def channels_first_model(self) -> Any:
        from cristae_zoo.export.tf_graph import channels_first_wrapper

        return channels_first_wrapper(self.keras_model, self.ndim, self.n_in)

    @cached_property
    def saved_model_dir(self) -> Path:
        """The wrapper as a frozen TF SavedModel folder (written once; the ONNX export converts it)."""
        from cristae_zoo.export.tf_graph import write_frozen_saved_model

        return write_frozen_saved_model(self.channels_first_model, self.work_dir / "saved_model", self.ndim, self.n_in)

    def cleanup(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)


@dataclass(frozen=True)
class ExportedWeights:
    weights_format: str
    path: Path
    max_abs_diff: float
    parent: str | None
    versions: dict[str, str]


class WeightsExporter(ABC):
    """One bioimage.io weights format."""

    #: key in the rdf's `weights`
    weights_format: ClassVar[str]
    #: human-readable name
    title: ClassVar[str]
    #: file name inside the package
    file_name: ClassVar[str]
    #: the weights entry this one is converted from (`None` for the source entry)
    parent: ClassVar[str | None] = None

    @abstractmethod
    def export(self, ctx: ExportContext, dest: Path, x: np.ndarray) -> Path:
        """Write the weights file to `dest` (a file path) and return it; `x` is an example input."""

    @abstractmethod
    def predict(self, weights: Path, x: np.ndarray) -> np.ndarray:
        """Run the exported weights on a (B, C, [Z,] Y, X) float32 tensor."""

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Library versions that go into the rdf weights entry (e.g. `{"opset_version": "17"}`)."""

    @abstractmethod
    def weights_descr(self, source: Path, versions: dict[str, str], parent: str | None) -> Any:
        """The `bioimageio.spec.model.v0_5` weights entry for `source`."""

    def export_and_check(
        self, ctx: ExportContext, dest_dir: Path, x: np.ndarray, tolerance: float = DEFAULT_TOLERANCE
    ) -> ExportedWeights:
        """Export, then compare with Keras on `x`; raise if the max abs difference exceeds `tolerance`."""
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        path = self.export(ctx, dest_dir / self.file_name, x)
        diff = compare_with_keras(ctx.keras_model, self.predict(path, x), x)
        if not diff <= tolerance:  # also catches NaN
            raise CristaeZooError(
                f"{path}: exported {self.title} weights differ from the Keras model by {diff:.3g} (max abs) on the"
                f" test input, expected at most {tolerance:g}"
            )
        return ExportedWeights(self.weights_format, path, diff, self.parent, self.versions())


def compare_with_keras(keras_model: Any, y: np.ndarray, x: np.ndarray) -> float:
    expected = keras_predict(keras_model, x)
    y = np.asarray(y, dtype=np.float32)
    if y.shape != expected.shape:
        raise CristaeZooError(f"exported model returned shape {y.shape}, expected {expected.shape} like Keras")
    return float(np.max(np.abs(y - expected)))


def weights_description(exported: Sequence[ExportedWeights], exporters: Iterable[WeightsExporter]) -> Any:
    """The rdf `weights` field: one entry per exported file, described by the exporter that wrote it."""
    from bioimageio.spec.model.v0_5 import WeightsDescr

    by_format = {e.weights_format: e for e in exporters}
    return WeightsDescr(**{e.weights_format: by_format[e.weights_format].weights_descr(e.path, e.versions, e.parent)
                           for e in exported})  # fmt: skip
