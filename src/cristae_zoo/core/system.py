"""The `System` interface and the registry: each method of the project (DeepCristae, label-free, PSSR, CARE for
luminescence) is a `System` subclass in `cristae_zoo.systems`, and everything else — the trainer, the packager, the
predictor, the CLI and the reports — is shared and asks the system only for what differs.

A system supplies, for one of its configurations (a `TrainingConfig` subclass):
- `build_keras(config)`: the Keras network (channels-last), and `build_torch_twin(config, keras_model)`: its
  PyTorch twin with the Keras weights copied (for TorchScript weights);
- `tensor_description(config)`: axes, channels in and out, output scale, frames-as-channels, halo, normalisation,
  rescale requirement (`core.tensors.TensorDescription`);
- `training_data(config)`: a `TrainingData` (data reader/simulator and patch sampler) the trainer draws batches from;
- `loss(config)`, `optimizer(config)`, `schedule(config)` (a hook setting optimizer hyper-parameters per step,
  e.g. PSSR's one-cycle), `plan(config, data)` (steps and validation interval), `init_weights` (fine-tuning), and
  `evaluate(...)`: metrics against the system's baselines.

A configuration names its system in a `system:` field; `training_config_from_yaml` picks the class by it.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from cristae_zoo.config import TrainingConfig, YamlModel  # noqa: F401  (TrainingConfig: re-exported)
from cristae_zoo.core.tensors import TensorDescription
from cristae_zoo.errors import CristaeZooError


C = TypeVar("C", bound=TrainingConfig)

#: the package whose import registers every system
SYSTEMS_PACKAGE = "cristae_zoo.systems"
#: name → System instance; filled by `register` when `cristae_zoo.systems` is imported.
_REGISTRY: dict[str, System[Any]] = {}


class TrainingData(ABC):
    """Batches for the trainer, channels-last float32: x (B, *spatial, C_in), y (B, *spatial', C_target)."""

    #: image names per part ("train", "validation", "test"), written to split.json; None if the data has its own
    split: dict[str, list[str]] | None = None
    #: number of training samples (patches), for epoch-based plans; None if drawn on the fly
    n_train: int | None = None

    @abstractmethod
    def train_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One training batch; all randomness from `rng` (so a resumed run draws what the uninterrupted one would)."""

    @abstractmethod
    def validation_batches(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The fixed validation set (same every time it is asked for)."""

    def write_extras(self, out_dir: Path) -> list[Path]:
        """Files beside the model that describe the data (e.g. a patch overview PNG); returns what it wrote."""
        return []


@dataclass(frozen=True)
class TrainingPlan:
    steps: int  # optimizer steps in the whole training
    validate_every: int  # steps between validations (= an epoch for DeepCristae)


class System(ABC, Generic[C]):
    """One method of the project: what the shared trainer, packager and predictor need to know about it."""

    name: ClassVar[str]
    config_class: ClassVar[type[TrainingConfig]]
    summary: ClassVar[str] = ""

    @abstractmethod
    def build_keras(self, config: C) -> Any:
        """The Keras network for `config` (channels-last), freshly initialised."""

    @abstractmethod
    def build_torch_twin(self, config: C, keras_model: Any) -> Any:
        """A `torch.nn.Module` computing what `keras_model` computes, channels-first, with its weights copied."""

    @abstractmethod
    def tensor_description(self, config: C) -> TensorDescription:
        """How the packaged network's tensors map onto a microscope file."""

    @abstractmethod
    def training_data(self, config: C) -> TrainingData:
        """The data the trainer draws batches from (checks the data folder; one-line errors)."""

    @abstractmethod
    def loss(self, config: C) -> Callable[..., Any]:
        """The Keras loss the trainer compiles the network with (keras.ops only: any backend)."""

    def optimizer(self, config: C) -> Any:
        import keras

        return keras.optimizers.Adam(learning_rate=config.learning_rate)

    def schedule(self, config: C) -> Callable[[int, int], Mapping[str, float]] | None:
        """Optimizer hyper-parameters to set before (step, of total steps), e.g. {"learning_rate": …}; None: fixed."""
        return None

    def plan(self, config: C, data: TrainingData) -> TrainingPlan:
        return TrainingPlan(steps=int(config.steps), validate_every=int(config.validate_every))  # type: ignore[attr-defined]

    def init_weights(self, config: C, model: Any, source: Any) -> None:
        """Fine-tuning: copy the weights of `source` (a Keras model of this system) into `model`, by layer name."""
        copy_weights_by_name(model, source)

    def evaluate(
        self, models: list[Any], output: Path, data_dir: Path | None = None, progress: Callable[..., None] | None = None
    ) -> str:
        """Metrics of trained models (`core.model_dir.TrainedModel`s) and the system's baselines on held-out data;
        writes metrics.csv, summary.md and figures into `output` and returns the summary (markdown)."""
        raise CristaeZooError(f"{self.name}: no evaluation is implemented for this system")


def copy_weights_by_name(model: Any, source: Any, adapt: Callable[[str, list[Any], list[Any]], list[Any]] | None = None) -> None:
    """Set every weighted layer of `model` to the weights of the layer of the same name in `source`.

    `adapt(name, source_weights, target_weights)` may reshape a layer's weights (PSSR: single- → multi-frame stem)."""
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        try:
            src = source.get_layer(layer.name).get_weights()
        except ValueError:
            raise CristaeZooError(f"init_from: the source network has no layer {layer.name!r}") from None
        if adapt is not None:
            src = adapt(layer.name, src, weights)
        if [np.shape(w) for w in src] != [np.shape(w) for w in weights]:
            raise CristaeZooError(
                f"init_from: layer {layer.name!r} has shapes {[np.shape(w) for w in src]} in the source, this network"
                f" needs {[np.shape(w) for w in weights]} (a different architecture: match depth/filters to the source)"
            )
        layer.set_weights(src)


def register(system: System[Any]) -> System[Any]:
    if system.name in _REGISTRY:
        raise ValueError(f"system {system.name!r} is registered twice")
    _REGISTRY[system.name] = system
    return system


def systems() -> dict[str, System[Any]]:
    """Every registered system, by name."""
    # The systems register themselves when their package is imported. By name: the shared core depends on no
    # system (the import-linter contract `core-below-systems`), it only discovers them.
    importlib.import_module(SYSTEMS_PACKAGE)

    return dict(_REGISTRY)


def get_system(name: str) -> System[Any]:
    known = systems()
    if name not in known:
        raise CristaeZooError(f"unknown system {name!r}; expected one of {', '.join(sorted(known))}")
    return known[name]


def training_config_from_dict(data: Any, where: str = "config") -> TrainingConfig:
    """The training config of the system that `data["system"]` names; one-line errors for an unknown system, an
    unknown key or an invalid value."""
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise CristaeZooError(f"{where}: expected a mapping of config keys, got {type(data).__name__}")
    if "system" not in data:
        raise CristaeZooError(f"{where}: no `system:` key; expected one of {', '.join(sorted(systems()))}")
    known = systems()
    if not isinstance(data["system"], str) or data["system"] not in known:
        raise CristaeZooError(f"{where}: unknown system {data['system']!r}; expected one of {', '.join(sorted(known))}")
    system = known[data["system"]]
    try:
        return system.config_class.model_validate(data)
    except ValidationError as err:
        raise CristaeZooError(f"{where}: {first_validation_error(err)}") from None


def first_validation_error(err: Any) -> str:
    """The first pydantic error as 'key.path: message' (unknown keys: 'unknown key key.path')."""
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        return f"unknown key {loc!r}"
    if e["type"] == "missing":
        return f"missing key {loc!r}"
    return f"{loc}: {e['msg']}" if loc else e["msg"]


def training_config_from_yaml(path: Path) -> TrainingConfig:
    """Read a training config YAML; the class is chosen by its `system:` key."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CristaeZooError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise CristaeZooError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', None) or err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CristaeZooError(f"{path}: cannot read ({type(err).__name__}: {err})") from None
    return training_config_from_dict(data, str(path))
