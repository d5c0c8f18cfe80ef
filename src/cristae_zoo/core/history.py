"""What a model folder's `history.csv` (written by the one trainer) says about its training: steps run, wall time,
the validated step whose weights were kept. One reader for every system's evaluation summary and the package
README, so that they state the same numbers."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainingRun:
    steps: int  # steps done in total (over resumed runs)
    seconds: float  # wall time in total
    best_step: int  # the validated step with the lowest validation loss: the kept weights
    best_val_loss: float


def read_history(path: Path) -> list[dict[str, str]]:
    """The rows of a history CSV; [] if it is missing or unreadable."""
    try:
        with Path(path).open(newline="") as fh:
            return list(csv.DictReader(fh))
    except (OSError, csv.Error):
        return []


def training_run(model_dir: Path | None) -> TrainingRun | None:
    """The run recorded in `model_dir/history.csv`; None where there is none (e.g. a folder made from a package)."""
    if model_dir is None:
        return None
    rows = [r for r in read_history(Path(model_dir) / "history.csv") if r.get("val_loss") not in (None, "")]
    if not rows:
        return None
    best = min(rows, key=lambda r: float(r["val_loss"]))
    try:
        return TrainingRun(int(float(rows[-1]["step"])), float(rows[-1]["seconds"]), int(float(best["step"])),
                           float(best["val_loss"]))  # fmt: skip
    except (KeyError, ValueError):  # an old history (epochs only, no wall time): no run to state
        return None


def training_run_markdown(model_dir: Path | None, config: Any, *, loss: str, val_loss: str = "validation loss") -> str:
    """One sentence on the run that was evaluated (the packager puts summary.md in the package README, so it states
    steps, wall time, budget and kept step); "" where the folder has no history: nothing is claimed."""
    run = training_run(model_dir)
    if run is None:
        return ""
    budget = f"budget {config.max_minutes:g} min" if getattr(config, "max_minutes", None) else "no time budget"
    text = (f"Training run evaluated: {run.steps} steps of {config.batch_size} patches in {run.seconds / 60:.1f} min"
            f" wall time ({budget}, step cap {config.steps}); weights of step {run.best_step} (best {val_loss}"
            f" {run.best_val_loss:.4g}); {loss}, learning rate {config.learning_rate:g}.")
    if getattr(config, "init_from", None):
        text += (f" Fine-tuned from `{config.init_from}` as it was at the start of this run; the steps and wall time"
                 " above are those of the fine-tuning only.")
    return text + "\n"
