"""Image operations that build D_synt (Methods, "Generation of the 2D STED dataset").

Ground truth: Richardson–Lucy deconvolution of the HR image. Input: the HR image blurred by a Gaussian
(σ_blur = 3.25 px) then corrupted by Poisson–Gaussian noise (σ_noise = 4.0).

The noise follows a detector: shot noise is Poisson on the *photons* only; the constant offset and the Gaussian
read noise are added after it. An HR image of counts + offset therefore has its offset removed before the blur
and the Poisson draw, and put back afterwards (a Poisson draw on counts + offset would add the offset's variance,
~100 counts², to the background: σ ≈ 11–13 counts instead of ≈ sqrt(photons + σ_noise²)).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage
from skimage import restoration, transform

from cristae_zoo.errors import CristaeZooError


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


#: Detector offset of the HR images our simulator writes (`SimulationConfig.offset`); a photon-counting STED
#: detector has none (pass offset=0 for such data).
HR_OFFSET = 100.0


def degrade(
    image: np.ndarray, sigma_blur: float, sigma_noise: float, rng: np.random.Generator, offset: float = HR_OFFSET
) -> np.ndarray:
    """Gaussian blur, then Poisson–Gaussian noise as a detector makes it.

    photons = blur(image − offset) (clipped at 0: the HR read noise can dip below the offset);
    output = Poisson(photons) + offset + N(0, σ_noise²), rounded to whole counts and clipped at zero.
    So the variance of a pixel is photons + σ_noise² (+ 1/12 from rounding), whatever the offset.
    """
    if offset > 0 and float(np.median(image)) < 0.5 * offset:
        # Most pixels of a fluorescence image are background, which sits at or above the offset: an image whose
        # median is far below it has another offset (0 for photon counting), and every photon would be lost.
        raise CristaeZooError(
            f"HR image median {float(np.median(image)):.1f} is below the detector offset {offset:g}: "
            "set the HR images' offset (hr_offset; 0 for photon-counting data)"
        )
    blurred = ndimage.gaussian_filter(np.asarray(image, dtype=np.float64) - offset, sigma_blur, mode="reflect")
    shot = rng.poisson(np.clip(blurred, 0, None)).astype(np.float64)
    noisy = shot + offset + rng.normal(0.0, sigma_noise, size=blurred.shape)
    return np.clip(np.round(noisy), 0, None).astype(np.float32)


def percentile_normalize(image: np.ndarray, p_low: float = 2.0, p_high: float = 99.8, eps: float = 1e-6) -> np.ndarray:
    """Eq. (2): (I − perc(I, p_low)) / (perc(I, p_high) − perc(I, p_low)). Not clipped, as in CSBDeep."""
    lo, hi = np.percentile(image, [p_low, p_high])
    return ((image - lo) / max(hi - lo, eps)).astype(np.float32)


def rotations(image: np.ndarray) -> list[np.ndarray]:
    """The image and its rotations by 90°, 180° and 270° (the paper's 4-fold augmentation)."""
    return [np.rot90(image, k).copy() for k in range(4)]


Flip = Literal["horizontal", "vertical"]


def flip(image: np.ndarray, kind: Flip) -> np.ndarray:
    """A mirror image: "horizontal" mirrors left↔right (columns reversed), "vertical" top↔bottom (rows reversed).

    Both together would be a 180° rotation, which the rotations already give; a single flip is what adds the
    mirrored (reflected) images that no rotation can make."""
    if kind == "horizontal":
        return image[:, ::-1].copy()
    if kind == "vertical":
        return image[::-1, :].copy()
    raise ValueError(f"unknown flip {kind!r}; expected 'horizontal' or 'vertical'")


def shrink(image: np.ndarray, factor: float, order: int = 1) -> np.ndarray:
    """The paper's shrink transform (factor < 1); `order=0` (nearest) keeps a mask binary."""
    shrunk = transform.rescale(image, factor, order=order, preserve_range=True, anti_aliasing=order > 0)
    return shrunk.astype(image.dtype, copy=False)


def shrink_and_flip(image: np.ndarray, factor: float, kind: Flip = "horizontal", order: int = 1) -> np.ndarray:
    """The paper's extra augmentation on a random 25 %: a shrink transform, then a flip.

    The paper lists "horizontal and vertical flips"; applied to one image together they would only rotate it by
    180°, so each selected image gets one of the two (`augment` draws which), giving mirrored images."""
    return flip(shrink(image, factor, order), kind)
