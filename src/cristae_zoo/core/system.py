"""The `System` interface and the registry: each method of the project (DeepCristae, label-free, PSSR, CARE for
luminescence) is a `System` subclass in `cristae_zoo.systems`, and everything else — the trainer, the packager, the
predictor, the CLI and the reports — is shared and asks the system only for what differs.

A system supplies, for one of its configurations:
- `build_keras(config)`: the Keras network (channels-last), and `build_torch_twin(config, keras_model)`: its
  PyTorch twin with the Keras weights copied (for TorchScript weights);
- `tensor_description(config)`: axes, channels in and out, output scale, frames-as-channels, halo, normalisation,
  rescale requirement (`core.tensors.TensorDescription`);
- `training_data(config)`: the data reader/simulator and patch sampler the trainer draws batches from;
- `loss(config)`, `schedule(config)` (a learning-rate hook, e.g. PSSR's one-cycle), and
  `evaluate(...)`: metrics against the system's baselines.

A configuration names its system in a `system:` field; `training_config_from_yaml` picks the class by it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from cristae_zoo.config import YamlModel
from cristae_zoo.core.tensors import TensorDescription
from cristae_zoo.errors import CristaeZooError

C = TypeVar("C", bound=YamlModel)

#: name → System instance; filled by `register` when `cristae_zoo.systems` is imported.
_REGISTRY: dict[str, System[Any]] = {}


class System(ABC, Generic[C]):
    """One method of the project: what the shared trainer, packager and predictor need to know about it."""

    name: ClassVar[str]
    config_class: ClassVar[type[YamlModel]]
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
    def training_data(self, config: C) -> Any:
        """An object with `train_batch(rng) -> (x, y)` and `validation() -> (x, y)` (channels-last float32)."""

    @abstractmethod
    def loss(self, config: C) -> Callable[..., Any]:
        """The Keras loss the trainer compiles the network with."""

    def schedule(self, config: C) -> Callable[[int, int], float] | None:
        """Learning rate at (step, total steps), or None for a constant rate."""
        return None

    def evaluate(self, config: C, model_dir: Path, **kwargs: Any) -> list[dict[str, Any]]:
        """Per-image metrics of the trained model and the system's baselines on its held-out data."""
        raise CristaeZooError(f"{self.name}: no evaluation is implemented for this system")


def register(system: System[Any]) -> System[Any]:
    if system.name in _REGISTRY:
        raise ValueError(f"system {system.name!r} is registered twice")
    _REGISTRY[system.name] = system
    return system


def systems() -> dict[str, System[Any]]:
    """Every registered system, by name."""
    import cristae_zoo.systems  # noqa: F401  (registers them)

    return dict(_REGISTRY)


def get_system(name: str) -> System[Any]:
    known = systems()
    if name not in known:
        raise CristaeZooError(f"unknown system {name!r}; expected one of {', '.join(sorted(known))}")
    return known[name]
