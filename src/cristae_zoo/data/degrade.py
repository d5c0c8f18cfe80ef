"""Image operations that build D_synt (Methods, "Generation of the 2D STED dataset").

Ground truth: Richardson–Lucy deconvolution of the HR image. Input: the HR image blurred by a Gaussian
(σ_blur = 3.25 px) then corrupted by Poisson–Gaussian noise (σ_noise = 4.0).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import restoration, transform


def gaussian_psf(sigma: float, radius: int | None = None) -> np.ndarray:
    """A normalised 2D Gaussian kernel, wide enough (±4σ) to hold all but a negligible tail."""
    radius = radius if radius is not None else max(1, int(np.ceil(4 * sigma)))
    ax = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(ax**2) / (2 * sigma**2))
    psf = np.outer(g, g)
    return (psf / psf.sum()).astype(np.float32)


def richardson_lucy(image: np.ndarray, psf_sigma: float, iterations: int, background: float | None = None) -> np.ndarray:
    """RL deconvolution (scikit-image) of an image of counts with a Gaussian PSF.

    The camera offset (estimated as a low percentile when not given) is removed first, because RL assumes
    a Poisson image whose background is zero; the result keeps the photon scale.
    """
    image = np.asarray(image, dtype=np.float32)
    background = float(np.percentile(image, 1)) if background is None else background
    counts = np.clip(image - background, 0, None)
    scale = float(counts.max()) or 1.0
    # skimage's RL works best on [0, 1]; clip=False keeps sharpened peaks above 1.
    deconvolved = restoration.richardson_lucy(counts / scale, gaussian_psf(psf_sigma), num_iter=iterations, clip=False)
    return (deconvolved * scale).astype(np.float32)


def degrade(image: np.ndarray, sigma_blur: float, sigma_noise: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur, then Poisson–Gaussian noise: Poisson on the blurred counts plus N(0, σ_noise²).

    Returns integer-valued float32 counts (a detector gives integers), clipped at zero.
    """
    blurred = ndimage.gaussian_filter(np.asarray(image, dtype=np.float64), sigma_blur, mode="reflect")
    noisy = rng.poisson(np.clip(blurred, 0, None)) + rng.normal(0.0, sigma_noise, size=blurred.shape)
    return np.clip(np.round(noisy), 0, None).astype(np.float32)


def percentile_normalize(image: np.ndarray, p_low: float = 2.0, p_high: float = 99.8, eps: float = 1e-6) -> np.ndarray:
    """Eq. (2): (I − perc(I, p_low)) / (perc(I, p_high) − perc(I, p_low)). Not clipped, as in CSBDeep."""
    lo, hi = np.percentile(image, [p_low, p_high])
    return ((image - lo) / max(hi - lo, eps)).astype(np.float32)


def rotations(image: np.ndarray) -> list[np.ndarray]:
    """The image and its rotations by 90°, 180° and 270° (the paper's 4-fold augmentation)."""
    return [np.rot90(image, k).copy() for k in range(4)]


def shrink_and_flip(image: np.ndarray, factor: float, order: int = 1) -> np.ndarray:
    """The paper's extra augmentation: a shrink transform, then horizontal and vertical flips."""
    shrunk = transform.rescale(image, factor, order=order, preserve_range=True, anti_aliasing=order > 0)
    return shrunk[::-1, ::-1].astype(image.dtype, copy=True)
