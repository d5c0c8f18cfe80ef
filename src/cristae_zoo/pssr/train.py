"""Kept only for `pssr/package.py` and `pssr/predict.py` until the one packager and predictor replace them:
training is `cristae_zoo.core.trainer`, the config `cristae_zoo.systems.pssr.PSSRConfig`, the data `pssr.data`,
loading `cristae_zoo.core.model_dir.load_model_dir`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cristae_zoo.pssr.data import load_hr_movie, normalize_frames, window_indices  # noqa: F401
from cristae_zoo.systems.pssr import PSSRConfig as PSSRTrainConfig  # noqa: F401


def load_model(model_dir: Path) -> tuple[Any, Any]:
    """(Keras model, training config) of a PSSR model folder."""
    from cristae_zoo.core.model_dir import load_model_dir

    loaded = load_model_dir(model_dir)
    return loaded.keras_model, loaded.config
