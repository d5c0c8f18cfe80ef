"""Kept for `luminescence/predict.py` and `luminescence predict` until the one predictor replaces them: training
is `cristae_zoo.core.trainer` with `cristae_zoo.systems.luminescence`, loading `core.model_dir.load_model_dir`."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_model(model_dir: Path) -> tuple[Any, Any]:
    """(Keras [mean, scale] model, training config) of a luminescence model folder."""
    from cristae_zoo.core.model_dir import load_model_dir

    loaded = load_model_dir(model_dir)
    return loaded.keras_model, loaded.config
