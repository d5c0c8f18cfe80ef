"""Kept only for `labelfree/package.py` until the one packager replaces it: training is `cristae_zoo.core.trainer`,
the config `cristae_zoo.systems.labelfree.LabelFreeConfig`, loading `cristae_zoo.core.model_dir.load_model_dir`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cristae_zoo.core.model_dir import held_out_names  # noqa: F401  (re-exported for older callers)
from cristae_zoo.systems.labelfree import LabelFreeConfig as LabelFreeTrainConfig  # noqa: F401


def load_model(model_dir: Path) -> tuple[Any, Any]:
    """(Keras model, training config) of a label-free model folder."""
    from cristae_zoo.core.model_dir import load_model_dir

    loaded = load_model_dir(model_dir)
    return loaded.keras_model, loaded.config
