"""Kept for `pssr/predict.py` until the one predictor replaces it: training is `cristae_zoo.core.trainer` with
`cristae_zoo.systems.pssr`, the data `pssr.data`, loading `cristae_zoo.core.model_dir.load_model_dir`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cristae_zoo.pssr.data import load_hr_movie, normalize_frames, window_indices  # noqa: F401


def load_model(model_dir: Path) -> tuple[Any, Any]:
    """(Keras model, training config) of a PSSR model folder."""
    from cristae_zoo.core.model_dir import load_model_dir

    loaded = load_model_dir(model_dir)
    return loaded.keras_model, loaded.config
