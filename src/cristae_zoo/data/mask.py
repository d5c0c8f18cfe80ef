"""Mitochondria mask (Methods, "Image patch sampling": Anscombe → z-score → adaptive threshold → median)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def anscombe(image: np.ndarray) -> np.ndarray:
    """Eq. (3): 2·sqrt(3/8 + I), turning Poisson(-Gaussian) noise into roughly unit-variance Gaussian noise."""
    return 2.0 * np.sqrt(3.0 / 8.0 + np.clip(image, 0, None))


def noise_sigma(image: np.ndarray) -> float:
    """Robust noise σ: 1.4826·MAD of the pseudo-residuals r = (2I(i,j) − I(i+1,j) − I(i,j+1))/√6."""
    r = (2 * image[:-1, :-1] - image[1:, :-1] - image[:-1, 1:]) / np.sqrt(6.0)
    return float(1.4826 * np.median(np.abs(r - np.median(r))))


def zscore(image: np.ndarray) -> np.ndarray:
    """Eq. (4) on the Anscombe image: (I_ansc − median) / σ̂. Most pixels are background, so the median is
    the background level."""
    a = anscombe(np.asarray(image, dtype=np.float64))
    sigma = noise_sigma(a)
    return (a - np.median(a)) / max(sigma, 1e-12)


def mitochondria_mask(
    image: np.ndarray,
    z_start: float = 30.0,
    z_step: float = 5.0,
    min_fraction: float = 0.10,
    median_size: int = 5,
) -> np.ndarray:
    """Pixels whose z-score exceeds a threshold that starts at `z_start` and drops by `z_step` until at least
    `min_fraction` of the image is selected; a median filter then removes isolated noise pixels."""
    z = zscore(image)
    threshold = z_start
    mask = z > threshold
    while mask.mean() < min_fraction and threshold > z.min():
        threshold -= z_step
        mask = z > threshold
    if median_size > 1:
        mask = ndimage.median_filter(mask.astype(np.uint8), size=median_size) > 0
    return mask
