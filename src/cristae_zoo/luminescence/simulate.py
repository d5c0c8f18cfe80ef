"""Simulated 3D luminescence acquisitions of mitochondria (e.g. TOMM20-NanoLuc at 100×, 130 nm voxels).

Scene: the 2D mitochondria of `cristae_zoo.data.simulate` drawn at luminescence scale (tubes ~4.5 px wide)
become 3D tubes: each connected mitochondrion gets a z centre and a tilt, and its z extent at a pixel is its
in-plane depth (distance to its outline), so a cross-section is roughly round. The labelled volume is blurred
by a Gaussian PSF and scaled to a photon rate (photons/s at the brightest voxels) plus a uniform background.

Camera (EM-CCD): photoelectrons ~ Poisson(QE · rate · exposure); the EM register multiplies them by a
Gamma(n, gain) draw (its excess noise factor → √2 at high gain); Gaussian read noise; conversion to ADU,
offset, rounding to 16-bit integers. Every acquisition of a scene draws new noise, so short/long and repeated
(noise2noise) acquisitions of the same scene share only the scene.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import Field
from scipy import ndimage as ndi

from cristae_zoo.config import SimulationConfig, YamlModel
from cristae_zoo.io import write_tiff


class CameraConfig(YamlModel):
    """EM-CCD parameters (defaults after an Andor iXon 888 at EM gain 300, 1 MHz readout)."""

    quantum_efficiency: float = Field(0.9, gt=0, le=1)
    em_gain: float = Field(300.0, ge=1)
    read_noise_e: float = Field(50.0, ge=0, description="read noise sd, electrons (after the EM register)")
    electrons_per_adu: float = Field(15.0, gt=0)
    offset_adu: float = Field(100.0, ge=0)


class LuminescenceSimulationConfig(YamlModel):
    n_scenes: int = Field(24, ge=1)
    depth: int = Field(16, ge=4, description="z planes (paper: 16)")
    height: int = Field(128, ge=32)
    width: int = Field(128, ge=32)
    mito_width_px: float = Field(4.5, gt=1, description="mean tube width (~580 nm at 130 nm/px)")
    psf_sigma_xy: float = Field(1.0, ge=0, description="Gaussian PSF sd in y, x (px)")
    psf_sigma_z: float = Field(1.2, ge=0, description="Gaussian PSF sd in z (planes)")
    peak_rate: tuple[float, float] = Field((0.6, 1.2), description="photons/s at the brightest voxels, per scene")
    background_rate: float = Field(0.01, ge=0, description="photons/s per voxel everywhere (substrate glow, dark)")
    cytosol: float = Field(0.04, ge=0, description="diffuse signal of the cell body, relative to the peak")
    short_exposure_s: float = Field(2.0, gt=0, description="input acquisitions (and both noise2noise ones)")
    long_exposure_s: float = Field(60.0, gt=0, description="long-exposure target (paper: 60 s)")
    camera: CameraConfig = Field(default_factory=CameraConfig)
    seed: int = 0

    @property
    def exposure_ratio(self) -> float:
        return self.long_exposure_s / self.short_exposure_s


def _scene_2d(config: LuminescenceSimulationConfig, index: int) -> np.ndarray:
    """The in-focus mitochondria mask of the 2D simulator, drawn at luminescence scale."""
    from cristae_zoo.data.simulate import simulate_image

    w = config.mito_width_px
    cfg = SimulationConfig(
        n_images=1, height=config.height, width=config.width, pixel_size_nm=130.0, width_mean_px=w,
        width_sd_px=0.2 * w, width_range_px=(0.6 * w, 1.6 * w), length_px=(4 * w, 16 * w), curvature_sd=0.05,
        curvature_length_px=3 * w, max_mitochondria=400, coverage=(0.08, 0.16), seed=config.seed,
    )  # fmt: skip
    return simulate_image(cfg, index).mito_mask


def simulate_scene(config: LuminescenceSimulationConfig, index: int) -> np.ndarray:
    """Noise-free photon rate (photons/s per voxel), float32 (Z, Y, X); same (config, index) → same scene."""
    rng = np.random.default_rng([config.seed, index, 3])
    mask = _scene_2d(config, index)
    labels, n = ndi.label(mask)
    depth_in_plane = ndi.distance_transform_edt(mask)  # tube half-thickness in z at this pixel (px)
    zz, yy, xx = np.meshgrid(*(np.arange(s, dtype=np.float32) for s in (config.depth, config.height, config.width)),
                             indexing="ij")  # fmt: skip
    z0 = rng.uniform(0.25 * config.depth, 0.75 * config.depth, n + 1)
    tilt = rng.normal(0.0, 0.04, (n + 1, 2))  # planes per px: tubes run obliquely through the stack
    bright = rng.uniform(0.5, 1.0, n + 1)
    centre = z0[labels] + tilt[labels, 0] * (yy[0] - config.height / 2) + tilt[labels, 1] * (xx[0] - config.width / 2)
    inside = (np.abs(zz - centre[None]) <= depth_in_plane[None]) & mask[None]
    volume = np.where(inside, bright[labels][None], 0.0).astype(np.float32)
    # the cell body: a large smooth blob of diffuse (cytosolic) luciferase
    blob = ndi.gaussian_filter(rng.random((config.height, config.width)).astype(np.float32), config.height / 8)
    blob = (blob - blob.min()) / max(float(np.ptp(blob)), 1e-6)
    volume += config.cytosol * blob[None] * np.exp(-0.5 * ((zz - config.depth / 2) / (config.depth / 3)) ** 2)
    volume = ndi.gaussian_filter(volume, (config.psf_sigma_z, config.psf_sigma_xy, config.psf_sigma_xy))
    peak = float(np.percentile(volume, 99.9)) or 1.0
    rate = rng.uniform(*config.peak_rate) * volume / peak + config.background_rate
    return rate.astype(np.float32)


def acquire(rate: np.ndarray, exposure_s: float, camera: CameraConfig, rng: np.random.Generator) -> np.ndarray:
    """One EM-CCD acquisition of `rate` (photons/s) at `exposure_s`: integer ADU as float32."""
    electrons = rng.poisson(camera.quantum_efficiency * np.clip(rate, 0, None) * exposure_s)
    # EM register: the output of n input electrons is Gamma(n, gain) (zero for n = 0)
    amplified = rng.gamma(np.maximum(electrons, 1e-12), camera.em_gain) * (electrons > 0)
    adu = (amplified + rng.normal(0.0, camera.read_noise_e, rate.shape)) / camera.electrons_per_adu
    return np.clip(np.round(adu + camera.offset_adu), 0, 65535).astype(np.float32)


#: sub-folders written by `simulate_dataset`, and what they hold
FOLDERS = {
    "gt": "noise-free photon rate (photons/s), the ground truth",
    "long": "long-exposure acquisition (ADU)",
    "short": "short-exposure acquisition (ADU), the input",
    "short2": "a second, independent short-exposure acquisition (ADU): noise2noise target",
}


def simulate_dataset(config: LuminescenceSimulationConfig, output: Path,
                     progress: Callable[[int], None] | None = None) -> list[str]:
    """Write `output/{gt,long,short,short2}/scene_NNN.tif` and `output/config.yaml`; return the file names."""
    output = Path(output)
    for folder in FOLDERS:
        (output / folder).mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(config.n_scenes):
        rate = simulate_scene(config, i)
        rng = np.random.default_rng([config.seed, i, 7])
        name = f"scene_{i:03d}.tif"
        write_tiff(output / "gt" / name, rate)
        for folder, t in (("long", config.long_exposure_s), ("short", config.short_exposure_s),
                          ("short2", config.short_exposure_s)):  # fmt: skip
            write_tiff(output / folder / name, acquire(rate, t, config.camera, rng).astype(np.uint16))
        names.append(name)
        if progress:
            progress(1)
    config.to_yaml(output / "config.yaml")
    return names
