"""The three training modes as one data flow: which folder is the input, which the target, and whether the input
is software-binned (summed over f×f pixels, as the camera would, then upsampled back by repetition — no
interpolation — so that it has the target's pixel grid, as in Boothe et al.).

Data on disk: `DATA/<input_dir>/NAME.tif` and `DATA/<target_dir>/NAME.tif`, same shape, 2D (Y, X) or 3D
(Z, Y, X). Both are percentile-normalised per image (1 / 99.8, as CSBDeep), the network's preprocessing too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from cristae_zoo.config import YamlModel
from cristae_zoo.data.degrade import percentile_normalize
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.labelfree.data import EXTENSIONS, Pair, read_image

Mode = Literal["pairs", "binning", "noise2noise"]
#: CSBDeep's normalisation percentiles (also the package's `scale_range`)
PERCENTILES = (1.0, 99.8)


class ModeConfig(YamlModel):
    mode: Mode = "pairs"
    input_dir: str = Field("short", description="folder of the inputs")
    target_dir: str = Field("long", description="folder of the targets")
    bin_factor: int = Field(1, ge=1, description="software binning of the input in y and x (binning mode: 2, 4, 8)")
    swap: bool = Field(False, description="noise2noise: also train target → input (both are equally noisy)")

    @classmethod
    def for_mode(cls, mode: Mode, bin_factor: int = 4) -> ModeConfig:
        """The defaults of each mode on a simulated data set (`luminescence simulate`)."""
        if mode == "pairs":
            return cls(mode=mode)
        if mode == "binning":
            return cls(mode=mode, bin_factor=bin_factor)
        if mode == "noise2noise":
            return cls(mode=mode, target_dir="short2", swap=True)
        raise CristaeZooError(f"unknown mode {mode!r}: expected pairs, binning or noise2noise")


def bin_image(image: np.ndarray, factor: int, what: str = "image") -> np.ndarray:
    """Sum over `factor`×`factor` blocks of the last two axes (software binning)."""
    *lead, h, w = image.shape
    if factor < 1 or h % factor or w % factor:
        raise CristaeZooError(f"{what}: binning factor {factor} does not divide the image's y, x size {h}×{w}")
    blocks = np.asarray(image, np.float32).reshape(*lead, h // factor, factor, w // factor, factor)
    return blocks.sum(axis=(-3, -1))


def upsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Back to the unbinned grid by repetition (nearest neighbour, no interpolation), as Boothe et al."""
    return np.repeat(np.repeat(image, factor, axis=-2), factor, axis=-1)


def binned_input(image: np.ndarray, factor: int, what: str = "image") -> np.ndarray:
    return upsample(bin_image(image, factor, what), factor) if factor > 1 else np.asarray(image, np.float32)


def normalize(image: np.ndarray) -> np.ndarray:
    return percentile_normalize(image, *PERCENTILES)


def augment8(volume: np.ndarray, k: int) -> np.ndarray:
    """Transform `k` of 8: rotation by k % 4 · 90° in y, x, mirrored in x if k ≥ 4 (the paper's 8-fold)."""
    out = np.rot90(volume, k % 4, axes=(-2, -1))
    return np.ascontiguousarray(out[..., ::-1] if k >= 4 else out)


def list_names(data_dir: Path, mode: ModeConfig) -> list[str]:
    data_dir = Path(data_dir)
    folders = [data_dir / mode.input_dir, data_dir / mode.target_dir]
    for folder in folders:
        if not folder.is_dir():
            raise CristaeZooError(f"{folder}: folder missing ({mode.mode} mode reads {mode.input_dir}/ → {mode.target_dir}/)")
    names = sorted(p.name for p in folders[0].iterdir() if p.suffix.lower() in EXTENSIONS)
    if not names:
        raise CristaeZooError(f"{folders[0]}: no .tif images")
    for n in names:
        if not (folders[1] / n).is_file():
            raise CristaeZooError(f"{folders[1] / n}: missing target for {folders[0] / n}")
    return names


def read_input(path: Path, mode: ModeConfig, ndim: int) -> np.ndarray:
    """A raw input image as the network sees it before normalisation (binned and upsampled if the mode says so)."""
    return binned_input(read_image(Path(path), ndim), mode.bin_factor, str(path))


def load_sample(data_dir: Path, name: str, mode: ModeConfig, ndim: int) -> Pair:
    """Normalised input and target (target as one channel) of one image; `Pair` of `labelfree.data`."""
    data_dir = Path(data_dir)
    in_path, tg_path = data_dir / mode.input_dir / name, data_dir / mode.target_dir / name
    x = read_input(in_path, mode, ndim)
    y = read_image(tg_path, ndim)
    if x.shape != y.shape:
        raise CristaeZooError(f"{tg_path}: target shape {y.shape} differs from input {in_path.name} {x.shape}")
    return Pair(name, normalize(x), normalize(y)[None])


#: a patch counts as foreground if its target reaches this (normalised units; 1 ≈ the image's 99.8th percentile)
FOREGROUND = 0.4


def load_pairs(data_dir: Path, names: list[str], mode: ModeConfig, ndim: int) -> list[Pair]:
    """Normalised (input, target) of `names`; noise2noise (`swap`) adds each pair the other way round too."""
    pairs = [load_sample(Path(data_dir), n, mode, ndim) for n in names]
    if mode.swap:  # noise2noise: each acquisition is the other's target as well
        pairs += [Pair(p.name, p.targets[0], p.tl[None]) for p in pairs]
    return pairs


def sample_batch(pairs: list[Pair], size: tuple[int, ...], n: int, rng: np.random.Generator,
                 foreground_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """n patches, at least `foreground_fraction` of them with structure when the images have it (CSBDeep's
    background filter in spirit: luminescence scenes are sparse), each in one of the 8 rotations/mirrors."""
    from cristae_zoo.labelfree.data import random_patches

    x, y = random_patches(pairs, size, 3 * n, rng)
    fg = y.reshape(len(y), -1).max(axis=1) >= FOREGROUND
    n_fg = min(round(foreground_fraction * n), int(fg.sum()))
    keep = np.concatenate([np.flatnonzero(fg)[:n_fg], np.flatnonzero(~fg | (np.cumsum(fg) > n_fg))[: n - n_fg]])
    ks = rng.integers(0, 8, len(keep))
    # patches are channels-last: (*spatial, C); move C first so augment8 acts on the last two (y, x) axes
    aug = lambda a, k: np.moveaxis(augment8(np.moveaxis(a, -1, 0), int(k)), 0, -1)  # noqa: E731
    return np.stack([aug(x[i], k) for i, k in zip(keep, ks)]), np.stack([aug(y[i], k) for i, k in zip(keep, ks)])
