"""The PSSR "crappifier": a seeded degradation of HR images into undersampled, noisy LR images.

Fang et al. (Methods, "Image Crappification") normalise to [0, 1], inject salt-and-pepper noise and "Gaussian
additive noise with specified local variance", then downsample 4× per axis with a first-order spline. The
paper's text also quotes σ_LSM = 5 and σ_EM = 3, but the authors' code (BPHO-Salk/PSSR, `utils/crappifiers.py`,
the functions their training configs select: `fluo_SP_AG_D_sameas_preprint` for MitoTracker / fluorescence,
`em_AG_D_sameas_preprint` for EM) defines the noise, and that is what `modality` reproduces:

- fluorescence: salt on 0.5 % of the pixels (set to 1), then pepper on 0.5 % (set to 0), each pixel drawn
  independently; then Gaussian noise whose *variance* at each pixel is 0.5 × the image smoothed by a Gaussian of
  σ = 5 px (computed after the salt and pepper, as there); clip to [0, 1]; rescale to the old maximum.
- em: Gaussian noise of variance 0.05 × the image smoothed with σ = 3 px; clip to [0, 1]; no salt and pepper,
  no rescaling.

So the noise follows the signal, like shot noise: at a normalised intensity of 0.1 its σ is ≈ 0.22 and at 0.5 it
is 0.5 (fluorescence), 10–25× the constant σ = 5/255 ≈ 0.02 the text suggests (`noise="constant"` keeps that
reading, for comparisons only).

What we keep from our own pipeline: the downsampling uses scikit-image's half-pixel geometry (the authors' scipy
`zoom` aligns corners, which stretches the grid by (n−1)/(n/4−1) and would misalign LR and HR against the
network's bilinear baseline), and 8-bit storage rounds (the authors' `astype(uint8)` truncates). The noise is
injected at HR, before downsampling, as there. Stacks (…, H, W) are crappified frame by frame: the smoothing
that sets the local variance never mixes frames.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field
from scipy import ndimage as ndi

from cristae_zoo.config import YamlModel
from cristae_zoo.errors import CristaeZooError

Modality = Literal["fluorescence", "em"]

#: The authors' noise parameters per modality (BPHO-Salk/PSSR utils/crappifiers.py).
SALT_PEPPER_AMOUNT = {"fluorescence": 0.005, "em": 0.0}
LOCAL_VARIANCE_GAIN = {"fluorescence": 0.5, "em": 0.05}
LOCAL_VARIANCE_SIGMA_PX = {"fluorescence": 5.0, "em": 3.0}
#: The paper text's constant σ on the 8-bit scale (σ_LSM = 5, σ_EM = 3), for `noise="constant"`
NOISE_SIGMA_8BIT = {"fluorescence": 5.0, "em": 3.0}
#: skimage's `random_noise(mode="localvar")` adds this to the smoothed image, so zero signal still has a variance
_LVAR_FLOOR = 1e-10


class CrappifierConfig(YamlModel):
    modality: Modality = Field("fluorescence", description="which of the authors' crappifiers: fluorescence or em")
    noise: Literal["local_variance", "constant"] = Field(
        "local_variance",
        description="local_variance: the authors' code (variance follows the smoothed image); "
        "constant: the paper's text read literally (σ = gaussian_sigma_8bit / 255), kept for comparisons",
    )
    scale: int = Field(4, ge=1, description="downsampling factor per axis")
    salt_pepper_fraction: float | None = Field(
        None, ge=0, le=1, description="chance that a pixel is set to 1 (salt), and separately to 0 (pepper) "
        "(default: 0.005 fluorescence, 0 EM)"
    )
    local_variance_gain: float | None = Field(
        None, ge=0, description="noise variance = gain × smoothed image (default: 0.5 fluorescence, 0.05 EM)"
    )
    local_variance_sigma_px: float | None = Field(
        None, gt=0, description="σ of the Gaussian that smooths the image into the local variance (default: 5 / 3 px)"
    )
    gaussian_sigma_8bit: float | None = Field(
        None, ge=0, description="noise='constant' only: additive noise σ on the 8-bit scale (default by modality)"
    )
    spline_order: int = Field(1, ge=0, le=5, description="spline order of the downsampling (paper: 1)")
    anti_aliasing: bool = Field(
        False, description="prefilter before downsampling; off: a point-scanning system samples, it does not average"
    )
    quantize_8bit: bool = Field(True, description="round the LR image to 1/255 steps (the paper saves 8-bit images)")

    @property
    def sigma(self) -> float:
        """noise='constant': the Gaussian σ on the [0, 1] scale."""
        s = self.gaussian_sigma_8bit if self.gaussian_sigma_8bit is not None else NOISE_SIGMA_8BIT[self.modality]
        return s / 255.0

    @property
    def sp_fraction(self) -> float:
        if self.salt_pepper_fraction is not None:
            return self.salt_pepper_fraction
        return SALT_PEPPER_AMOUNT[self.modality]

    @property
    def lvar_gain(self) -> float:
        return self.local_variance_gain if self.local_variance_gain is not None else LOCAL_VARIANCE_GAIN[self.modality]

    @property
    def lvar_sigma(self) -> float:
        s = self.local_variance_sigma_px
        return s if s is not None else LOCAL_VARIANCE_SIGMA_PX[self.modality]


def normalize(image: np.ndarray) -> np.ndarray:
    """Min–max to [0, 1] (a constant image becomes 0)."""
    image = np.asarray(image, np.float32)
    lo, hi = float(image.min()), float(image.max())
    return ((image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)).astype(np.float32)


def salt_and_pepper(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """skimage's `random_noise(mode="salt", amount)` then `(mode="pepper", amount)`, as the authors chain them:
    every pixel independently becomes 1 with probability `amount`, then every pixel becomes 0 with probability
    `amount` (a pepper can land on a salt: salt ends on amount·(1 − amount) of the pixels, pepper on amount)."""
    out = np.array(image, np.float32, copy=True)
    out[rng.random(out.shape) < amount] = 1.0
    out[rng.random(out.shape) < amount] = 0.0
    return out


def local_variance(image: np.ndarray, gain: float, sigma_px: float) -> np.ndarray:
    """gain × (the image smoothed over its last two axes by a Gaussian of σ `sigma_px`, plus 1e-10).

    skimage's `filters.gaussian` defaults (edge mode 'nearest', truncate 4σ), the authors' smoothing."""
    sigma = (0.0,) * (image.ndim - 2) + (sigma_px, sigma_px)
    smooth = ndi.gaussian_filter(np.asarray(image, np.float64), sigma, mode="nearest", truncate=4.0)
    return gain * (smooth + _LVAR_FLOOR)


def add_noise(x: np.ndarray, config: CrappifierConfig, rng: np.random.Generator) -> np.ndarray:
    """The HR-side noise of `crappify` (before downsampling), on a [0, 1] image; float32, clipped to [0, 1]."""
    x = np.asarray(x, np.float32)
    old_peak = x.max(axis=(-2, -1), keepdims=True)
    if config.sp_fraction > 0:
        x = salt_and_pepper(x, config.sp_fraction, rng)
    if config.noise == "local_variance":
        var = local_variance(x, config.lvar_gain, config.lvar_sigma)  # after the salt and pepper, as the authors
        x = x + (rng.standard_normal(x.shape) * np.sqrt(var)).astype(np.float32)
    elif config.sigma > 0:
        x = x + rng.normal(0.0, config.sigma, x.shape).astype(np.float32)
    x = np.clip(x, 0.0, 1.0)
    if config.noise == "local_variance" and config.modality == "fluorescence":
        # The authors rescale each image so that its new maximum is its old one: a no-op for a frame whose maximum
        # was 1 (min–max normalised) once one pixel is clipped at 1, which salt or noise on a bright pixel makes
        # near certain; a dimmer frame of a movie is scaled by old max / new max.
        new_peak = x.max(axis=(-2, -1), keepdims=True)
        x = x * np.where(new_peak > 0, old_peak / np.where(new_peak > 0, new_peak, 1.0), 1.0)
    return x.astype(np.float32)


def downsample(image: np.ndarray, scale: int, order: int = 1, anti_aliasing: bool = False) -> np.ndarray:
    """Downsample the last two axes by `scale` with a spline of `order` (scikit-image `rescale` geometry)."""
    from skimage.transform import resize

    h, w = image.shape[-2:]
    if h % scale or w % scale:
        raise CristaeZooError(f"image of {h}×{w} px: height and width must be divisible by {scale} to downsample")
    shape = image.shape[:-2] + (h // scale, w // scale)
    return resize(image, shape, order=order, mode="reflect", anti_aliasing=anti_aliasing, preserve_range=True).astype(np.float32)


def crappify(hr: np.ndarray, config: CrappifierConfig, rng: np.random.Generator, normalized: bool = False) -> np.ndarray:
    """HR (…, H, W) → LR (…, H/scale, W/scale) in [0, 1]; `normalized=True` skips the min–max step (already in [0, 1])."""
    x = np.asarray(hr, np.float32) if normalized else normalize(hr)
    h, w = x.shape[-2:]
    if h % config.scale or w % config.scale:  # before drawing any noise
        raise CristaeZooError(f"image of {h}×{w} px: height and width must be divisible by {config.scale} to downsample")
    x = add_noise(x, config, rng)
    lr = np.clip(downsample(x, config.scale, config.spline_order, config.anti_aliasing), 0.0, 1.0)
    return (np.round(lr * 255.0) / 255.0).astype(np.float32) if config.quantize_8bit else lr
