"""The PSSR "crappifier": a seeded degradation of HR images into undersampled, noisy LR images.

As in Fang et al. (Methods, "Image Crappification"): normalise to [0, 1], replace 0.5 % of the pixels with salt or
pepper, add Gaussian noise (σ 5 on the 8-bit scale for fluorescence, 3 for EM), downsample 4× per axis with a
first-order spline, and store on the 8-bit scale. The noise is injected at HR, before downsampling, so the
downsampling averages it the way a large pinhole/detector integrates it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from cristae_zoo.config import YamlModel
from cristae_zoo.errors import CristaeZooError

#: Gaussian σ on the 8-bit scale per modality (paper: σ_LSM = 5, σ_EM = 3)
NOISE_SIGMA_8BIT = {"fluorescence": 5.0, "em": 3.0}


class CrappifierConfig(YamlModel):
    modality: Literal["fluorescence", "em"] = "fluorescence"
    scale: int = Field(4, ge=1, description="downsampling factor per axis")
    salt_pepper_fraction: float | None = Field(
        None, ge=0, le=1, description="fraction of pixels replaced by 0 or 1 (default: 0.005 fluorescence, 0 EM)"
    )
    gaussian_sigma_8bit: float | None = Field(None, ge=0, description="additive noise σ on the 8-bit scale (default by modality)")
    spline_order: int = Field(1, ge=0, le=5, description="spline order of the downsampling (paper: 1)")
    anti_aliasing: bool = Field(
        False, description="prefilter before downsampling; off: a point-scanning system samples, it does not average"
    )
    quantize_8bit: bool = Field(True, description="round the LR image to 1/255 steps (the paper saves 8-bit images)")

    @property
    def sigma(self) -> float:
        """Gaussian σ on the [0, 1] scale."""
        s = self.gaussian_sigma_8bit if self.gaussian_sigma_8bit is not None else NOISE_SIGMA_8BIT[self.modality]
        return s / 255.0

    @property
    def sp_fraction(self) -> float:
        if self.salt_pepper_fraction is not None:
            return self.salt_pepper_fraction
        return 0.005 if self.modality == "fluorescence" else 0.0


def normalize(image: np.ndarray) -> np.ndarray:
    """Min–max to [0, 1] (a constant image becomes 0)."""
    image = np.asarray(image, np.float32)
    lo, hi = float(image.min()), float(image.max())
    return ((image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)).astype(np.float32)


def salt_and_pepper(image: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Replace exactly round(fraction·N) distinct pixels (per image, over the last two axes) by 0 or 1, half each on average."""
    out = np.array(image, np.float32, copy=True)
    flat = out.reshape(-1, out.shape[-2] * out.shape[-1])
    n = int(round(fraction * flat.shape[1]))
    for row in flat:
        idx = rng.choice(row.size, size=n, replace=False)
        row[idx] = rng.integers(0, 2, size=n).astype(np.float32)
    return out


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
    if config.sp_fraction > 0:
        x = salt_and_pepper(x, config.sp_fraction, rng)
    if config.sigma > 0:
        x = x + rng.normal(0.0, config.sigma, x.shape).astype(np.float32)
    x = np.clip(x, 0.0, 1.0)
    lr = np.clip(downsample(x, config.scale, config.spline_order, config.anti_aliasing), 0.0, 1.0)
    return (np.round(lr * 255.0) / 255.0).astype(np.float32) if config.quantize_8bit else lr
