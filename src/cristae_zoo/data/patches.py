"""Patch sampling for training (Methods, "Image patch sampling for the training step").

ROI centres are drawn at random among mitochondria pixels (or among all pixels, for the uniform baseline),
N_I = ⌊W/128⌋·⌊L/128⌋ per image, never so close to the border that the patch would leave the image, and
pairwise at least 60 px apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cristae_zoo.config import DegradationConfig, PatchConfig
from cristae_zoo.data.degrade import Flip, rotations, shrink_and_flip


def patches_per_image(shape: tuple[int, int], patch_size: int) -> int:
    return (shape[0] // patch_size) * (shape[1] // patch_size)


def sample_centres(
    mask: np.ndarray | None,
    shape: tuple[int, int],
    n: int,
    patch_size: int,
    min_distance: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Up to `n` centres (rows of (y, x)) drawn from `mask` (all pixels if None), inside the border, pairwise
    ≥ `min_distance` apart. Fewer are returned only when the candidates run out."""
    half = patch_size // 2
    h, w = shape
    allowed = np.zeros(shape, bool)
    # A centre c gives the patch [c − half, c + half), which must lie inside the image.
    allowed[half : h - half + 1, half : w - half + 1] = True
    if mask is not None:
        allowed &= mask
    candidates = np.flatnonzero(allowed)
    chosen: list[tuple[int, int]] = []
    if candidates.size == 0 or n <= 0:
        return np.zeros((0, 2), int)
    min_d2 = min_distance**2
    for idx in rng.permutation(candidates):
        y, x = divmod(int(idx), w)
        if all((y - cy) ** 2 + (x - cx) ** 2 >= min_d2 for cy, cx in chosen):
            chosen.append((y, x))
            if len(chosen) == n:
                break
    return np.array(chosen, int).reshape(-1, 2)


def extract_patches(image: np.ndarray, centres: np.ndarray, patch_size: int) -> np.ndarray:
    half = patch_size // 2
    return np.stack([image[y - half : y - half + patch_size, x - half : x - half + patch_size] for y, x in centres])


@dataclass
class PatchSet:
    """Training and validation patches, shaped (N, P, P): input X, target Y, mitochondria mask M."""

    x_train: np.ndarray
    y_train: np.ndarray
    m_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    m_val: np.ndarray

    def save(self, path) -> None:
        np.savez_compressed(path, **self.__dict__)

    @classmethod
    def load(cls, path) -> PatchSet:
        with np.load(path) as data:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def augment(
    triplets: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    degradation: DegradationConfig,
    rng: np.random.Generator,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Rotations by 0/90/180/270°, then on a random `shrink_fraction` of the result a shrink transform and a
    horizontal or a vertical flip (drawn per image, the same for input, target and mask; the mask is resampled
    with nearest neighbours). One flip, not both: both together are a 180° rotation, which adds no new image."""
    rotated = [tuple(r) for x, y, m in triplets for r in zip(rotations(x), rotations(y), rotations(m))]
    n_shrink = int(round(degradation.shrink_fraction * len(rotated)))
    f = degradation.shrink_factor
    for i in rng.choice(len(rotated), size=n_shrink, replace=False):
        x, y, m = rotated[i]
        kind: Flip = "horizontal" if rng.random() < 0.5 else "vertical"
        rotated[i] = (
            shrink_and_flip(x, f, kind),
            shrink_and_flip(y, f, kind),
            shrink_and_flip(m.astype(np.float32), f, kind, order=0) > 0.5,
        )
    return rotated


def sample_patch_set(
    triplets: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    config: PatchConfig,
    progress: Callable[[int], None] | None = None,
) -> tuple[PatchSet, list[np.ndarray]]:
    """Sample patches from (normalised input, normalised GT, mask) triplets; returns the patches and the
    centres chosen in each image (for the overview figure)."""
    rng = np.random.default_rng(config.seed)
    xs, ys, ms, all_centres = [], [], [], []
    for x, y, m in triplets:
        n = patches_per_image(x.shape, config.patch_size)
        sampling_mask = m if config.sampling == "mito" else None
        centres = sample_centres(sampling_mask, x.shape, n, config.patch_size, config.min_distance, rng)
        all_centres.append(centres)
        if len(centres):
            xs.append(extract_patches(x, centres, config.patch_size))
            ys.append(extract_patches(y, centres, config.patch_size))
            ms.append(extract_patches(m, centres, config.patch_size))
        if progress:
            progress(1)
    X, Y, M = np.concatenate(xs), np.concatenate(ys), np.concatenate(ms).astype(np.float32)
    order = rng.permutation(len(X))
    n_val = max(1, int(round(config.validation_fraction * len(X))))
    val, train = order[:n_val], order[n_val:]
    return PatchSet(X[train], Y[train], M[train], X[val], Y[val], M[val]), all_centres
