"""The interface every weights exporter implements, and loading a trained model folder.

One module per bioimage.io weights format (`tensorflow`, `onnx`, `torchscript`), each with one `WeightsExporter`
subclass, in the manner of bioimageio.core's backends. Every exporter writes its file, runs it on a test tensor and
compares with the Keras model: an export that does not reproduce Keras is an error, never a warning.

Tensors at this interface are bioimage.io tensors: float32, (batch, channel, y, x), channel = 1, already normalised
(the package's preprocessing runs before the network).
"""

from __future__ import annotations

import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cristae_zoo.config import NetworkConfig, TrainConfig
from cristae_zoo.errors import CristaeZooError

#: An export whose output differs from Keras by more than this (max abs, on normalised data) is refused.
DEFAULT_TOLERANCE = 1e-4

#: Names of the graph's input and output in every format = the rdf tensor ids (deepImageJ matches by name).
INPUT_NAME = "input"
OUTPUT_NAME = "output"


@dataclass
class TrainedModel:
    """What `package` needs from a trained MODEL_DIR."""

    model_dir: Path
    config: TrainConfig
    keras_model: Any  # keras.Model, channels-last (B, Y, X, 1)

    @property
    def network(self) -> NetworkConfig:
        return self.config.network


def load_trained_model(model_dir: Path) -> TrainedModel:
    """Load `config.yaml` and `weights.keras` of a model folder written by `cristae-zoo train`."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CristaeZooError(f"{model_dir}: not a folder (expected a trained model folder with weights.keras)")
    weights = model_dir / "weights.keras"
    if not weights.is_file():
        raise CristaeZooError(
            f"{model_dir}: no weights.keras in this folder (expected a model folder written by `cristae-zoo train`)"
        )
    config = TrainConfig.from_yaml(model_dir / "config.yaml")
    import keras

    try:
        model = keras.models.load_model(weights, compile=False)
    except Exception as err:  # keras raises ValueError, OSError, zipfile errors, ...
        raise CristaeZooError(f"{weights}: cannot load as a Keras model ({type(err).__name__}: {err})") from None
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[-1] != 1:
        raise CristaeZooError(f"{weights}: expected a 2D single-channel model (B, Y, X, 1), got input shape {shape}")
    return TrainedModel(model_dir=model_dir, config=config, keras_model=model)


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
    """Shared state of one export run: the Keras model and a scratch folder for intermediate files."""

    keras_model: Any
    network: NetworkConfig
    work_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cristae_zoo_export_")))

    @cached_property
    def channels_first_model(self) -> Any:
        from cristae_zoo.export.tensorflow import channels_first_wrapper

        return channels_first_wrapper(self.keras_model)

    @cached_property
    def saved_model_dir(self) -> Path:
        """The wrapper as a TF SavedModel folder (written once; the ONNX export converts it)."""
        from cristae_zoo.export.tensorflow import write_saved_model

        return write_saved_model(self.channels_first_model, self.work_dir / "saved_model")

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
    def export(self, ctx: ExportContext, dest: Path) -> Path:
        """Write the weights file to `dest` (a file path) and return it."""

    @abstractmethod
    def predict(self, weights: Path, x: np.ndarray) -> np.ndarray:
        """Run the exported weights on a (B, 1, Y, X) float32 tensor."""

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
        path = self.export(ctx, dest_dir / self.file_name)
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


def bioimageio_fields(template: dict[str, Any], keras_model: Any, **training: Any) -> dict[str, Any]:
    """`config.bioimageio`: the template's fields plus the parameter count and the `training` facts given."""
    bio = dict(template.get("bioimageio") or {})
    bio.update(model_parameter_count=int(keras_model.count_params()), training=training)
    return bio
