"""The one loader of trained networks: a model folder written by the trainer, or a bioimage.io package written by
the packager (for fine-tuning).

A model folder holds `config.yaml` (the training config; its `system:` names the system) and `weights.keras` (the
best weights on validation loss). The network is rebuilt by the system from the config and the weights loaded into
it, so weight-free layers reimplemented since training take the current code.

A package carries what fine-tuning needs (written by `export.package`): `config.cristae_zoo.system`,
`config.cristae_zoo.training` (the training config) and the attachment `keras_weights.weights.h5`.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cristae_zoo.core.system import System, TrainingConfig, get_system, training_config_from_dict
from cristae_zoo.errors import CristaeZooError

WEIGHTS = "weights.keras"
CONFIG = "config.yaml"
SPLIT = "split.json"
HISTORY = "history.csv"
CHECKPOINTS = "checkpoints"
#: the packager's attachment with the trainable Keras weights
PACKAGE_KERAS_WEIGHTS = "keras_weights.weights.h5"

#: keys renamed since older model folders were written: system → {old: new}
_LEGACY_KEYS = {"pssr": {"max_learning_rate": "learning_rate"}, "luminescence": {"time_budget_min": "max_minutes"}}


@dataclass
class LoadedModel:
    """A trained network: its system, its training config and the Keras model (channels-last)."""

    system: System[Any]
    config: TrainingConfig
    keras_model: Any
    model_dir: Path | None = None  # the model folder, or None for a network read from a package
    source: str = ""  # what it was loaded from (folder or package), for messages

    @property
    def label(self) -> str:
        """A short name for tables and figures: the model folder's name, or the package's (its folder, or its zip's
        name without the suffix)."""
        if self.model_dir is not None:
            return Path(self.model_dir).resolve().name
        if not self.source:
            return self.system.name
        source = Path(self.source).resolve()
        return source.parent.name if source.name in ("rdf.yaml", "bioimageio.yaml") else source.stem

    def held_out_names(self) -> list[str]:
        """The test images/movies of the training's split (split.json beside the model). A package carries no split:
        its evaluation needs the data named (`--data`)."""
        if self.model_dir is None:
            raise CristaeZooError(
                f"{self.source or self.system.name}: a package carries no held-out split; give the data to evaluate"
                " on (--data)"
            )
        return held_out_names(self.model_dir)


def infer_legacy_system(data: dict[str, Any]) -> dict[str, Any]:
    """A config written before configs named their `system:`: the system is recognised by its keys."""
    if "system" in data:
        return data
    if "crappifier" in data:
        system = "pssr"
    elif "mode" in data:
        system = "luminescence"
    elif "structures" in data:
        system = "labelfree"
    else:
        system = "deepcristae"
    data = {"system": system, **data}
    for old, new in _LEGACY_KEYS.get(system, {}).items():
        if old in data:
            data[new] = data.pop(old)
    return data


def read_model_config(model_dir: Path) -> TrainingConfig:
    """The training config of a model folder (`config.yaml`)."""
    path = Path(model_dir) / CONFIG
    if not path.is_file():
        raise CristaeZooError(f"{path}: config file not found (expected beside {WEIGHTS} in a model folder written by `cristae-zoo train`)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as err:
        raise CristaeZooError(f"{path}: cannot read as YAML ({' '.join(str(err).split())[:200]})") from None
    if not isinstance(data, dict):
        raise CristaeZooError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return training_config_from_dict(infer_legacy_system(data), str(path))


def load_weights(model: Any, weights: Path) -> None:
    """Load `weights` (a .keras model file or .weights.h5) into `model`, a freshly built network of the same config.

    By structure first; if the saved file's layers differ structurally (weight-free layers reimplemented since),
    by layer name from the saved model."""
    from cristae_zoo.core.system import copy_weights_by_name

    import warnings

    weights = Path(weights)
    try:
        with warnings.catch_warnings():  # a saved optimizer the uncompiled network has no use for
            warnings.filterwarnings("ignore", message=".*Skipping variable loading for optimizer.*")
            model.load_weights(str(weights))
        return
    except Exception as err:  # keras raises ValueError, OSError, KeyError, zipfile errors, ...
        first_error = err
    if weights.suffix != ".keras":
        raise CristaeZooError(f"{weights}: cannot load the weights ({type(first_error).__name__}: {str(first_error)[:200]})") from None
    import keras

    try:
        saved = keras.models.load_model(weights, compile=False)
    except Exception as err:
        raise CristaeZooError(f"{weights}: cannot load as a Keras model ({type(err).__name__}: {str(err)[:200]})") from None
    try:
        copy_weights_by_name(model, saved)
    except CristaeZooError as err:
        raise CristaeZooError(f"{weights}: does not match its config ({str(err).removeprefix('init_from: ')})") from None


def load_model_dir(model_dir: Path | str) -> LoadedModel:
    """(system, config, keras_model) of a trained model folder; one-line errors for what is missing or broken."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CristaeZooError(f"{model_dir}: not a folder (expected a model folder written by `cristae-zoo train`)")
    weights = model_dir / WEIGHTS
    if not weights.is_file():
        raise CristaeZooError(f"{model_dir}: no {WEIGHTS} in this folder (expected a model folder written by `cristae-zoo train`)")
    config = read_model_config(model_dir)
    system = get_system(config.system)
    model = system.build_keras(config)  # (building registers the system's custom layers, for the fallback below)
    load_weights(model, weights)
    return LoadedModel(system, config, model, model_dir, str(model_dir))


def held_out_names(model_dir: Path | None, names: list[str] | None = None) -> list[str]:
    """`names`, or the test split the training wrote beside the model (split.json)."""
    if names is None:
        path = Path(model_dir or ".") / SPLIT
        if not path.is_file():
            raise CristaeZooError(f"{path}: not found; give the data to evaluate on (--data)")
        try:
            names = list(json.loads(path.read_text())["test"])
        except (ValueError, KeyError, TypeError) as err:
            raise CristaeZooError(f"{path}: not a split written by the trainer ({type(err).__name__}: {err})") from None
    if not names:
        raise CristaeZooError(f"{model_dir}: the split has no test image")
    return names


def held_out_test_inputs(model_dir: Path | None, folder: Path, hint: str) -> list[Path]:
    """The held-out files of the training's split in `folder`, for a system's package test input
    (`package_test_input`); one line naming `--test-input HINT` when the split or a file is missing."""
    try:
        names = held_out_names(model_dir)
    except CristaeZooError as err:
        raise CristaeZooError(f"no test input: {err}; pass --test-input {hint}") from None
    paths = [Path(folder) / name for name in names]
    missing = next((p for p in paths if not p.is_file()), None)
    if missing is not None:
        raise CristaeZooError(f"{missing}: held-out file not found (no test input); pass --test-input {hint}")
    return paths


# --------------------------------------------------------------------------------------------- packages


from cristae_zoo.packages import resolve_package  # noqa: E402,F401  (one package lookup for the whole project)


def _read_package(package: str | Path) -> tuple[Path, dict[str, Any], Any]:
    """(rdf path or zip, rdf dict, opener of a file named in the rdf → local path) of a package."""
    source = resolve_package(package)
    if source.suffix.lower() == ".zip":
        try:
            zf = zipfile.ZipFile(source)
            rdf_name = next(n for n in ("rdf.yaml", "bioimageio.yaml") if n in zf.namelist())
            rdf = yaml.safe_load(zf.read(rdf_name)) or {}
        except (zipfile.BadZipFile, OSError, StopIteration, yaml.YAMLError) as err:
            raise CristaeZooError(f"{source}: cannot read the package's rdf ({type(err).__name__}: {err})") from None
        scratch = Path(tempfile.mkdtemp(prefix="cristae_zoo_package_"))

        def local(name: str) -> Path:
            try:
                return Path(zf.extract(name, scratch))
            except KeyError:
                raise CristaeZooError(f"{source}: the rdf names {name!r}, which is not in the zip") from None

        return source, rdf, local
    try:
        rdf = yaml.safe_load(source.read_text()) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as err:
        raise CristaeZooError(f"{source}: cannot read the package's rdf ({' '.join(str(err).split())[:200]})") from None

    def local_file(name: str) -> Path:
        path = source.parent / name
        if not path.is_file():
            raise CristaeZooError(f"{path}: not found (named by {source})")
        return path

    return source, rdf, local_file


def package_system(package: str | Path) -> str:
    """The system a package was trained with (`config.cristae_zoo.system`)."""
    source, rdf, _ = _read_package(package)
    block = ((rdf.get("config") or {}).get("cristae_zoo") or {}) if isinstance(rdf, dict) else {}
    if not isinstance(block, dict) or not block.get("system"):
        raise CristaeZooError(
            f"{source}: the package does not say which system trained it (no config.cristae_zoo.system): it was"
            " written before packages carried their training config; re-package it with `cristae-zoo package`"
        )
    return str(block["system"])


def load_from_package(package: str | Path) -> LoadedModel:
    """The trainable network of a bioimage.io package: its system, training config and Keras model with the weights
    of the attachment `keras_weights.weights.h5` (for fine-tuning with `init_from`)."""
    source, rdf, local = _read_package(package)
    block = ((rdf.get("config") or {}).get("cristae_zoo") or {}) if isinstance(rdf, dict) else {}
    training = block.get("training") if isinstance(block, dict) else None
    attachments = [a.get("source", "") if isinstance(a, dict) else str(a) for a in (rdf.get("attachments") or [])]
    weights_name = next((a for a in attachments if Path(str(a)).name == PACKAGE_KERAS_WEIGHTS), None)
    if not block.get("system") or not isinstance(training, dict) or weights_name is None:
        missing = [what for what, ok in (("config.cristae_zoo.system", block.get("system")),
                                         ("config.cristae_zoo.training", isinstance(training, dict)),
                                         (f"attachment {PACKAGE_KERAS_WEIGHTS}", weights_name)) if not ok]  # fmt: skip
        raise CristaeZooError(
            f"{source}: cannot fine-tune from this package: it has no {', no '.join(missing)} (written before packages"
            " carried their trainable weights; re-package the model folder with `cristae-zoo package`)"
        )
    config = training_config_from_dict({"system": block["system"], **training}, f"{source} config.cristae_zoo.training")
    system = get_system(config.system)
    model = system.build_keras(config)
    load_weights(model, local(str(weights_name)))
    return LoadedModel(system, config, model, None, str(source))


def load_init_source(reference: str | Path) -> LoadedModel:
    """What `init_from` names: a model folder (config.yaml + weights.keras) or a package (folder, rdf, zip, name)."""
    path = Path(reference)
    if path.is_dir() and (path / WEIGHTS).is_file() and (path / CONFIG).is_file():
        return load_model_dir(path)
    return load_from_package(reference)
