"""Uncertainty maps: the pixel-wise spread of several restorations of the same image.

Two sources of "several restorations" (both used by `cristae-zoo predict --ensemble K`):

- **test-time augmentation (TTA)**: the same model on the 8 dihedral transforms of the image (4 rotations by 90°,
  each with and without a flip); every prediction is mapped back with the exact inverse transform before averaging.
  A perfect restoration is equivariant (rotating the input rotates the output), so the spread measures how much the
  network's answer depends on the orientation of the structures — a cheap, single-model uncertainty.
- **model ensembles**: K networks trained with different patch draws or initialisations (`cristae-zoo study
  stability` trains them); the spread measures how much the answer depends on the training run (Fig. 4g of the
  DeepCristae paper).

The standard deviation is the population one (ddof = 0) computed in float64 with Welford's update, so K large
images are never held in memory at once. With `normalize=True` each prediction is first percentile-normalised
(2 / 99.8, like the model's input), which puts models with different output gains on one scale and makes the
standard deviation a fraction of the image's dynamic range ("normalized standard deviation", as in Fig. 4g).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from cristae_zoo.errors import CristaeZooError

PredictFn = Callable[[np.ndarray], np.ndarray]
N_DIHEDRAL = 8


# ------------------------------------------------------------------------------------------- dihedral transforms


def dihedral_transform(image: np.ndarray, index: int) -> np.ndarray:
    """Transform `index` (0–7) of the dihedral group D4 on the last two axes: rotate by 90°·(index % 4) after a
    left-right flip when index ≥ 4. Index 0 is the identity."""
    if not 0 <= index < N_DIHEDRAL:
        raise ValueError(f"dihedral transform index must be in 0..7, got {index}")
    out = np.flip(image, axis=-1) if index >= 4 else image
    return np.ascontiguousarray(np.rot90(out, index % 4, axes=(-2, -1)))


def dihedral_inverse(image: np.ndarray, index: int) -> np.ndarray:
    """The exact inverse of `dihedral_transform(·, index)`: undo the rotation, then the flip."""
    if not 0 <= index < N_DIHEDRAL:
        raise ValueError(f"dihedral transform index must be in 0..7, got {index}")
    out = np.rot90(image, -(index % 4), axes=(-2, -1))
    out = np.flip(out, axis=-1) if index >= 4 else out
    return np.ascontiguousarray(out)


# ------------------------------------------------------------------------------------------------ running stats


class RunningMeanStd:
    """Pixel-wise mean and (population) standard deviation of a stream of equally shaped arrays (Welford)."""

    def __init__(self) -> None:
        self.n = 0
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise CristaeZooError("a prediction contains NaN or Inf; cannot compute an uncertainty map")
        if self._mean is None:
            self.n, self._mean, self._m2 = 1, x.copy(), np.zeros_like(x)
            return
        if x.shape != self._mean.shape:
            raise CristaeZooError(f"predictions differ in shape: {x.shape} vs {self._mean.shape}")
        self.n += 1
        delta = x - self._mean
        self._mean += delta / self.n
        self._m2 += delta * (x - self._mean)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self._mean is None or self._m2 is None:
            raise CristaeZooError("no predictions to average")
        std = np.sqrt(np.maximum(self._m2 / self.n, 0.0))
        return self._mean.astype(np.float32), std.astype(np.float32)


def _normalized(x: np.ndarray, normalize: bool) -> np.ndarray:
    if not normalize:
        return x
    from cristae_zoo.data.degrade import percentile_normalize

    return percentile_normalize(x)


def std_map(predictions: np.ndarray | Sequence[np.ndarray], normalize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-wise mean and standard deviation (ddof = 0) over K predictions, shaped (K, H, W) or a list of (H, W)
    arrays. `normalize=True` percentile-normalises each prediction (2 / 99.8) first."""
    if isinstance(predictions, np.ndarray) and predictions.ndim < 3:
        raise CristaeZooError(f"expected K predictions shaped (K, H, W), got an array of shape {predictions.shape}")
    if len(predictions) < 1:
        raise CristaeZooError("no predictions to average")
    stats = RunningMeanStd()
    for p in predictions:
        stats.add(_normalized(np.asarray(p), normalize))
    return stats.result()


# --------------------------------------------------------------------------------------------------- prediction


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise CristaeZooError(f"expected a 2D image (H, W), got shape {image.shape}")
    return image


def tta_predictions(
    predict_fn: PredictFn, image: np.ndarray, n_transforms: int = N_DIHEDRAL
) -> list[np.ndarray]:
    """`predict_fn` on the first `n_transforms` dihedral transforms of `image`, each mapped back to the image's
    frame (handy for figures; `predict_with_uncertainty` streams instead of keeping them all)."""
    image = _check_image(image)
    if not 1 <= n_transforms <= N_DIHEDRAL:
        raise CristaeZooError(f"test-time augmentation uses 1 to 8 dihedral transforms, got {n_transforms}")
    return [dihedral_inverse(np.asarray(predict_fn(dihedral_transform(image, i))), i) for i in range(n_transforms)]


def predict_with_uncertainty(
    predict_fn: PredictFn | Sequence[PredictFn],
    image: np.ndarray,
    mode: Literal["tta", "models"] = "tta",
    *,
    n_transforms: int = N_DIHEDRAL,
    normalize: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean restoration and pixel-wise standard deviation (both float32, shaped like `image`).

    - `mode="tta"`: `predict_fn` (one function, or several, each getting the same TTA) is run on the first
      `n_transforms` (2–8) dihedral transforms of `image`; outputs are mapped back exactly before averaging.
      `predict_fn` must accept any (H, W) *and* (W, H) image (rotations swap the axes).
    - `mode="models"`: `predict_fn` is a sequence of K ≥ 2 functions (e.g. K trained networks), each run once.

    `predict_fn(image2d) -> restored2d` (same shape) does its own normalisation, padding or tiling.
    `normalize=True` percentile-normalises every prediction before the statistics (for models whose output
    scales differ). `progress(1)` is called after each prediction.
    """
    image = _check_image(image)
    fns = [predict_fn] if callable(predict_fn) else list(predict_fn)
    if not fns or not all(callable(f) for f in fns):
        raise CristaeZooError("predict_fn must be a function or a non-empty sequence of functions")
    if mode == "tta":
        if not 2 <= n_transforms <= N_DIHEDRAL:
            raise CristaeZooError(f"--ensemble with test-time augmentation needs 2 to 8 transforms, got {n_transforms}")
        jobs = [(f, i) for f in fns for i in range(n_transforms)]
    elif mode == "models":
        if len(fns) < 2:
            raise CristaeZooError(f"an ensemble of models needs at least 2 models, got {len(fns)}")
        jobs = [(f, 0) for f in fns]
    else:
        raise CristaeZooError(f"unknown uncertainty mode {mode!r}; expected 'tta' or 'models'")
    stats = RunningMeanStd()
    for fn, index in jobs:
        y = np.asarray(fn(dihedral_transform(image, index)))
        y = dihedral_inverse(np.squeeze(y), index)
        if y.shape != image.shape:
            raise CristaeZooError(f"a prediction has shape {y.shape}, expected the image's {image.shape}")
        stats.add(_normalized(y, normalize))
        if progress:
            progress(1)
    return stats.result()


def predict_ensemble(
    predict_fns: Sequence[PredictFn],
    image: np.ndarray,
    *,
    tta: int = 1,
    normalize: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """K models (`predict_fns`, K ≥ 2, or K = 1 with `tta` ≥ 2), each optionally with `tta` dihedral transforms
    (1 = none): the mean restoration and the pixel-wise standard deviation over all K·tta predictions."""
    fns = list(predict_fns)
    if tta > 1:
        return predict_with_uncertainty(fns, image, "tta", n_transforms=tta, normalize=normalize, progress=progress)
    return predict_with_uncertainty(fns, image, "models", normalize=normalize, progress=progress)


def uncertainty_path(output: Path | str) -> Path:
    """Where the standard-deviation map goes beside a restoration: `restored.tif` → `restored_std.tif`,
    `cell.ome.tif` → `cell_std.ome.tif`, `cell.ome.zarr` → `cell_std.ome.zarr`."""
    output = Path(output)
    name = output.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".zarr"):
        if name.lower().endswith(suffix):
            return output.with_name(f"{name[: -len(suffix)]}_std{name[-len(suffix):]}")
    return output.with_name(f"{name}_std.tif")


def relative_uncertainty(mean: np.ndarray, std: np.ndarray, p_low: float = 2.0, p_high: float = 99.8) -> np.ndarray:
    """The standard deviation as a fraction of the mean restoration's dynamic range (its 2–99.8 percentile span)."""
    lo, hi = np.percentile(mean, [p_low, p_high])
    return (std / max(float(hi - lo), 1e-6)).astype(np.float32)
