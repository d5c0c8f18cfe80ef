"""TL / fluorescence pairs on disk: `DATA/tl/NAME.tif` next to `DATA/<structure>/NAME.tif` (same shape).

Images are 2D (Y, X) or 3D (Z, Y, X; z-stacks or time series as the third axis). Every image is normalised to
zero mean and unit variance (as in fnet), which is also the package's preprocessing of the TL input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from cristae_zoo.errors import CristaeZooError

EXTENSIONS = (".tif", ".tiff")


@dataclass
class Pair:
    name: str
    tl: np.ndarray  # float32, normalised
    targets: np.ndarray  # float32 (C, *spatial), normalised per channel


def zscore(image: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    return ((image - image.mean()) / max(float(image.std()), eps)).astype(np.float32)


def read_image(path: Path, ndim: int) -> np.ndarray:
    try:
        image = np.asarray(tifffile.imread(path), dtype=np.float32)
    except Exception as err:
        raise CristaeZooError(f"{path}: cannot read as TIFF ({type(err).__name__}: {err})") from None
    image = np.squeeze(image) if image.ndim > ndim else image
    if image.ndim != ndim:
        raise CristaeZooError(
            f"{path}: image has shape {image.shape} ({image.ndim} axes), the model expects single-channel {ndim}D"
            f" images ({'Z, ' if ndim == 3 else ''}Y, X); split multi-channel images first"
        )
    if not np.all(np.isfinite(image)):
        raise CristaeZooError(f"{path}: image contains NaN or Inf")
    return image


def list_pairs(data_dir: Path, structures: list[str]) -> list[str]:
    data_dir = Path(data_dir)
    tl_dir = data_dir / "tl"
    if not tl_dir.is_dir():
        raise CristaeZooError(f"{data_dir}: no tl/ folder (expected tl/NAME.tif and <structure>/NAME.tif)")
    names = sorted(p.name for p in tl_dir.iterdir() if p.suffix.lower() in EXTENSIONS)
    if not names:
        raise CristaeZooError(f"{tl_dir}: no .tif images")
    for s in structures:
        if not (data_dir / s).is_dir():
            raise CristaeZooError(
                f"{data_dir / s}: folder missing: the model predicts {len(structures)} channel(s) {structures}"
            )
        for n in names:
            if not (data_dir / s / n).is_file():
                raise CristaeZooError(f"{data_dir / s / n}: missing fluorescence image for {tl_dir / n}")
    return names


def load_pair(data_dir: Path, name: str, structures: list[str], ndim: int, min_size: int = 1) -> Pair:
    data_dir = Path(data_dir)
    tl_path = data_dir / "tl" / name
    tl = read_image(tl_path, ndim)
    if min(tl.shape[-2:]) < min_size:
        raise CristaeZooError(f"{tl_path}: image {tl.shape} smaller than the {min_size} px the network needs")
    targets = []
    for s in structures:
        path = data_dir / s / name
        fl = read_image(path, ndim)
        if fl.shape != tl.shape:
            raise CristaeZooError(f"{path}: fluorescence shape {fl.shape} differs from TL {tl_path.name} {tl.shape}")
        targets.append(zscore(fl))
    return Pair(name, zscore(tl), np.stack(targets))


def split(names: list[str], test_fraction: float, validation_fraction: float, seed: int) -> dict[str, list[str]]:
    """Train/test, then train/validation by image, seeded (at least one image each where possible)."""
    order = list(np.random.default_rng(seed).permutation(len(names)))
    n_test = max(1, round(test_fraction * len(names))) if test_fraction > 0 and len(names) > 2 else 0
    test, rest = order[:n_test], order[n_test:]
    n_val = max(1, round(validation_fraction * len(rest))) if validation_fraction > 0 and len(rest) > 1 else 0
    val, train = rest[:n_val], rest[n_val:]
    return {k: sorted(names[i] for i in v) for k, v in (("train", train), ("validation", val), ("test", test))}


def random_patches(pairs: list[Pair], size: tuple[int, ...], n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n random patches (channels-last): x (n, *size, 1), y (n, *size, C)."""
    xs, ys = [], []
    for _ in range(n):
        p = pairs[int(rng.integers(len(pairs)))]
        starts = [int(rng.integers(0, s - k + 1)) for s, k in zip(p.tl.shape, size)]
        sl = tuple(slice(a, a + k) for a, k in zip(starts, size))
        xs.append(p.tl[sl][..., None])
        ys.append(np.moveaxis(p.targets[(slice(None),) + sl], 0, -1))
    return np.stack(xs), np.stack(ys)
