"""What the studies share: a cache of trained model folders (keyed by their training config), evaluation of
model folders on a data set's test split, tables as CSV/markdown, and the bookkeeping of compute time."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import yaml

from cristae_zoo.config import DegradationConfig, TrainConfig
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.io import atomic_write_text, write_csv  # noqa: F401  (the studies write their tables with it)

TIMING_FILE = "study_timing.json"
Progress = Callable[[str], None]


def degradation_of(data_dir: Path) -> DegradationConfig:
    f = Path(data_dir) / "degradation.yaml"
    return DegradationConfig.from_yaml(f) if f.is_file() else DegradationConfig()


def config_key(config: TrainConfig) -> str:
    """A short hash of everything that changes the trained weights (not the output folder)."""
    data = config.model_dump(mode="json")
    data.pop("output_dir")
    data["data_dir"] = str(Path(config.data_dir).resolve())
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


def _completed_epochs(model_dir: Path) -> int:
    history = model_dir / "history.csv"
    if not history.is_file():
        return 0
    return max(0, len(history.read_text().strip().splitlines()) - 1)


def train_cached(
    config: TrainConfig, cache_dir: Path, name: str, log: Progress | None = None
) -> tuple[Path, float, bool]:
    """Train `config` into `cache_dir/model-KEY` unless that folder already holds the finished model (then reuse
    it); an interrupted training is resumed. Returns the model folder, the training wall time in seconds (as
    recorded when it was trained) and whether it was reused."""
    from cristae_zoo.core.model_dir import WEIGHTS
    from cristae_zoo.core.trainer import train

    folder = Path(cache_dir) / f"model-{config_key(config)}"  # by config only: studies share identical trainings
    timing = folder / TIMING_FILE
    if (folder / WEIGHTS).is_file() and timing.is_file() and _completed_epochs(folder) >= config.epochs:
        if log:
            log(f"{name}: reusing {folder}")
        return folder, float(json.loads(timing.read_text())["train_seconds"]), True
    resume = (folder / "checkpoints" / "state.json").is_file()
    if folder.exists() and not resume:
        shutil.rmtree(folder)  # a start that never finished an epoch
    previous = float(json.loads(timing.read_text())["train_seconds"]) if timing.is_file() else 0.0
    if log:
        log(f"{name}: training ({'resuming' if resume else 'new'}) → {folder}")
    cfg = config.model_copy(update={"output_dir": folder})
    start = time.perf_counter()
    train(cfg, folder, resume=resume)
    seconds = previous + time.perf_counter() - start
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # resumable state is not needed once finished
    import keras

    keras.backend.clear_session()  # free the graph before the next training
    atomic_write_text(timing, json.dumps({"train_seconds": seconds, "config_key": config_key(config), "first_use": name}))
    return folder, seconds, False


def model_and_test_data(model_dir: Path, data_dir: Path | None) -> tuple[TrainConfig, Path, DegradationConfig, Callable]:
    """What a study of a trained model needs: its config, its data folder (checked), the degradation of that data
    and a restoration function (`keras_model_restorer`)."""
    cfg = TrainConfig.from_yaml(Path(model_dir) / "config.yaml")
    data_dir = Path(data_dir or cfg.data_dir)
    check_data(data_dir)
    degradation = degradation_of(data_dir)
    restore, _ = keras_model_restorer(Path(model_dir), degradation)
    return cfg, data_dir, degradation, restore


def keras_model_restorer(model_dir: Path, degradation: DegradationConfig):
    """A restorer (normalise, pad, predict, crop) for a model folder, and its TrainConfig."""
    from cristae_zoo.evaluate import keras_restorer
    from cristae_zoo.models.unet import divisibility
    from cristae_zoo.core.model_dir import load_model_dir

    loaded = load_model_dir(Path(model_dir))
    return keras_restorer(loaded.keras_model, degradation, divisibility(loaded.config.network)), loaded.config


def fmt(mean: float, sd: float, column: str) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.2f} ± {sd:.2f}" if column.startswith("PSNR") else f"{mean:.3f} ± {sd:.3f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_yaml(path: Path, data: dict) -> None:
    atomic_write_text(Path(path), yaml.safe_dump(data, sort_keys=False))


def check_data(data_dir: Path) -> None:
    if not (Path(data_dir) / "test" / "input").is_dir():
        raise CristaeZooError(f"{data_dir}: no test/input folder; is it a folder written by `cristae-zoo prepare`?")


def short_config(config: TrainConfig) -> str:
    n = config.network
    steps = f"{config.steps_per_epoch} steps × " if config.steps_per_epoch else ""
    return (
        f"depth {n.depth}, {n.filters} filters, residual {n.residual}; {config.loss} loss, {config.patches.sampling}"
        f" sampling; {config.epochs} epochs × {steps}batch {config.batch_size}"
    )
