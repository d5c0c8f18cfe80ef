"""The Python API: what the `cristae-zoo` CLI calls, for scripts and notebooks.

```python
import cristae_zoo as cz

model = cz.load("pssr-sf")                      # a model_zoo name, a package folder, rdf.yaml or .zip
hr = model.predict(lr_movie, axes="TYX")        # numpy in, numpy out: 4× larger frames
cz.predict_file("deepcristae", "cell.tif", "cell_restored.tif", pixel_size_nm=65)
```

`Model.predict` runs exactly what `cristae-zoo predict` runs on a file (the same units, normalisation, tiling and
rescaling), on an in-memory array; training and packaging are `cz.train(config)` and `cz.package(model_dir, out)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cristae_zoo.core.tensors import TensorDescription
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.predict import DEFAULT_TILE, Restorer


@dataclass
class Prediction:
    """A predicted array with its axes (the input's, channel dropped, plus C for several output channels) and
    the rescale factor that was applied before the network."""

    array: np.ndarray
    axes: str
    rescale_factor: float = 1.0
    channels: list[str] = field(default_factory=list)


class Model:
    """A loaded bioimage.io package; `predict` restores numpy arrays of any of the axes the package accepts."""

    def __init__(self, package: str | Path, weights_format: str | None = None, tile: int | None = DEFAULT_TILE):
        self.restorer = Restorer(package, weights_format, tile)
        self.tensors: TensorDescription = self.restorer.tensors

    @property
    def name(self) -> str:
        return str(self.restorer.descr.name)

    def close(self) -> None:
        self.restorer.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def predict(
        self,
        array: np.ndarray,
        axes: str | None = None,
        *,
        pixel_size_nm: float | None = None,
        rescale: float | None = None,
        full: bool = False,
    ) -> np.ndarray | Prediction:
        """Predict `array` with axes `axes` (letters of T, Z, Y, X; default YX for 2D, ZYX for a 3D package's
        3D array, TYX for a frames-as-channels package's 3D array). A package with a rescale requirement needs
        `pixel_size_nm` or `rescale` (1 keeps the pixels as they are). Returns the predicted array on the
        rescaled grid (× the output scale), or with `full=True` a `Prediction` with its axes and factor."""
        from cristae_zoo.acquisition import Acquisition
        from cristae_zoo.rescale import TRAINING_WIDTH_PX, RescaleChoice, Training, choose_factor, rescaled_shape
        from cristae_zoo.units import output_axes, output_index, plan_units, read_unit, unit_in_output

        array = np.asarray(array)
        td = self.tensors
        axes = (axes or self._default_axes(array.ndim)).upper()
        if len(axes) != array.ndim or not set(axes) <= set("TZYX") or not {"Y", "X"} <= set(axes):
            raise CristaeZooError(f"axes {axes!r} do not fit an array of shape {array.shape}; expected letters of TZYX")
        if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise CristaeZooError(f"expected a real numeric array, got {array.dtype}")
        acq = Acquisition(path=Path("<array>"), kind="array", axes=axes, shape=tuple(array.shape), dtype=array.dtype,
                          pixel_size_nm=(pixel_size_nm, pixel_size_nm) if pixel_size_nm else None,
                          metadata={"array": array})  # fmt: skip
        plan = plan_units(acq, td, "array")
        if td.rescale is None:
            if rescale not in (None, 1, 1.0):
                raise CristaeZooError(f"rescale={rescale}: the package {self.name!r} has no rescale requirement")
            factor = 1.0
        else:
            req = td.rescale
            train = Training(pixel_size_nm=req.pixel_size_nm, width_px=req.structure_width_px or TRAINING_WIDTH_PX)
            if rescale is None and pixel_size_nm is None:
                raise CristaeZooError(
                    f"{self.name!r} was trained at {req.pixel_size_nm:g} nm pixels: give pixel_size_nm or rescale"
                )
            choice: RescaleChoice = choose_factor(None if rescale is None else float(rescale), None, acq.pixel_size_nm, train, name="array",
                                                  plane_shape=acq.plane_shape)  # fmt: skip
            factor = choice.factor
        restored = rescaled_shape(acq.plane_shape, factor)
        out_axes = output_axes(axes, td.n_out, "array")
        s = td.output_scale
        out_shape = tuple(
            td.n_out if a == "C" else restored[0] * s if a == "Y" else restored[1] * s if a == "X" else acq.sizes[a]
            for a in out_axes
        )
        result = np.empty(out_shape, np.float32)
        with acq.open_array() as source:
            for index in plan.indices():
                unit = read_unit(acq, source, plan, index, restored)
                predicted = self.restorer.predict_units(unit[None])[0]
                result[output_index(plan, index, out_axes)] = unit_in_output(predicted, plan, out_axes)
        if full:
            return Prediction(result, out_axes, factor, list(td.output_channels))
        return result

    def _default_axes(self, ndim: int) -> str:
        td = self.tensors
        if ndim == 2:
            return "YX"
        if ndim == 3:
            return "TYX" if td.frames_as_channels else "ZYX"
        if ndim == 4:
            return "TZYX"
        raise CristaeZooError(f"cannot guess the axes of a {ndim}-D array; give axes=")


def load(package: str | Path, weights_format: str | None = None, tile: int | None = DEFAULT_TILE) -> Model:
    """Load a bioimage.io package (a model_zoo name, a folder, an rdf.yaml or a .zip) for prediction."""
    return Model(package, weights_format, tile)


def predict_file(package: str | Path, input: str | Path, output: str | Path, **options: Any) -> list[Any]:
    """`cristae-zoo predict PACKAGE INPUT -o OUTPUT`: restore a TIFF/OME-Zarr acquisition (or a folder of them)
    and write the result atomically; `options` are `restore.RestoreOptions` fields (rescale, pixel_size_nm,
    overwrite, tile, ensemble, ...). Returns one `restore.RestoreResult` per file."""
    from cristae_zoo.restore import RestoreOptions, restore_path

    return restore_path(package, Path(input), Path(output), RestoreOptions(**options))
