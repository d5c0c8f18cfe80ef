"""Kept only for `luminescence/package.py` and `luminescence/predict.py` until the one packager and predictor
replace them: training is `cristae_zoo.core.trainer`, the config `cristae_zoo.systems.luminescence.LuminescenceConfig`,
loading `cristae_zoo.core.model_dir.load_model_dir`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cristae_zoo.systems.luminescence import LuminescenceConfig as LuminescenceTrainConfig  # noqa: F401


def load_model(model_dir: Path) -> tuple[Any, Any]:
    """(Keras [mean, scale] model, training config) of a luminescence model folder."""
    from cristae_zoo.core.model_dir import load_model_dir

    loaded = load_model_dir(model_dir)
    return loaded.keras_model, loaded.config
