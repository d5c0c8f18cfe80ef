"""cristae-zoo: DeepCristae and related restoration networks for live-cell mitochondria microscopy.

The public API (imported lazily, so `import cristae_zoo` stays fast):

- `load(package) -> Model`, `Model.predict(array, axes=None, ...)`: predict numpy arrays with a bioimage.io
  package (a model_zoo name, a folder, an rdf.yaml or a .zip), exactly as `cristae-zoo predict` does on files;
- `predict_file(package, input, output, **options)`: `cristae-zoo predict` on a TIFF/OME-Zarr file or folder;
- `train(...)`: the one trainer (`cristae_zoo.core.trainer.train`) for every system's config;
- `package(model_dir, output, ...)`: the one packager (`cristae_zoo.export.package.package_model`);
- `systems()`, `get_system(name)`: the registered systems (DeepCristae, label-free, PSSR, CARE luminescence);
- `Restorer`: the low-level predictor of batches of network units; `TensorDescription`: what a package takes.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_API = {
    "load": ("cristae_zoo.api", "load"),
    "Model": ("cristae_zoo.api", "Model"),
    "Prediction": ("cristae_zoo.api", "Prediction"),
    "predict_file": ("cristae_zoo.api", "predict_file"),
    "Restorer": ("cristae_zoo.predict", "Restorer"),
    "TensorDescription": ("cristae_zoo.core.tensors", "TensorDescription"),
    "systems": ("cristae_zoo.core.system", "systems"),
    "get_system": ("cristae_zoo.core.system", "get_system"),
    "train": ("cristae_zoo.core.trainer", "train"),
    "package": ("cristae_zoo.export.package", "package_model"),
    "CristaeZooError": ("cristae_zoo.errors", "CristaeZooError"),
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        module, attr = _API[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'cristae_zoo' has no attribute {name!r}")
