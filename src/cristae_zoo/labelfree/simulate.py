"""Paired transmitted-light (TL) and fluorescence images of simulated cells.

The mitochondrial network is drawn by `cristae_zoo.data.simulate` (branched, curved tubes), here at a
confocal-like scale (mitochondria ~5 px wide, ~100 nm/px). Each image also gets one to three nuclei: ellipses
with a textured DNA content and a few brighter chromocentres/nucleoli-like spots.

Fluorescence channels (one TIFF per structure): the exact object densities blurred by a Gaussian PSF, scaled to
photon counts with Poisson + read noise (mitochondria: TMRM-like; DNA: SYBR-Gold-like, the nucleus is also where
mitochondria are absent).

TL: both structures are weak phase objects. Their optical path difference φ (mitochondria: proportional to the
local tube thickness; nucleus: to its height profile plus the DNA texture; a faint cell body) is imaged slightly
out of focus, which by the transport-of-intensity equation gives the intensity I ≈ I0 (1 − (Δz/k) ∇²φ):
edges and textures, not a dye-like density. Then a smooth multiplicative illumination unevenness, a detector
offset and Poisson + Gaussian noise. This is why the inverted TL is a poor fluorescence estimate (the trivial
baseline in `evaluate`) and a network has something to learn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field
from scipy import ndimage as ndi

from cristae_zoo.config import SimulationConfig, YamlModel
from cristae_zoo.data.simulate import simulate_image
from cristae_zoo.io import write_tiff


class LabelFreeSimulationConfig(YamlModel):
    """Simulated TL / fluorescence pairs (lengths in pixels)."""

    n_images: int = Field(16, ge=1)
    height: int = Field(128, ge=64)
    width: int = Field(128, ge=64)
    seed: int = 0
    mito_width_px: float = Field(5.0, gt=0, description="mean mitochondrion width")
    nuclei: tuple[int, int] = Field((1, 2), description="number of nuclei per image (range)")
    nucleus_radius_px: tuple[float, float] = Field((14.0, 26.0), description="nucleus semi-axes (range)")
    psf_sigma_px: float = Field(1.0, gt=0, description="fluorescence PSF sigma")
    defocus: float = Field(1.2, gt=0, description="TL contrast: weight of the Laplacian of the phase (Δz/k)")
    defocus_blur_px: float = Field(1.2, ge=0, description="extra blur of the TL image (partial coherence, defocus)")
    illumination_unevenness: float = Field(0.25, ge=0, description="peak-to-peak relative illumination variation")
    tl_photons: float = Field(400.0, gt=0, description="mean TL counts per pixel")
    fluo_photons: tuple[float, float] = Field((60.0, 120.0), description="fluorescence peak counts (range)")
    read_noise: float = Field(3.0, ge=0)


@dataclass
class LabelFreePair:
    tl: np.ndarray  # float32 (H, W) counts
    fluorescence: dict[str, np.ndarray]  # structure -> float32 (H, W) counts
    masks: dict[str, np.ndarray]  # structure -> bool (H, W)


def _geometry_config(config: LabelFreeSimulationConfig) -> SimulationConfig:
    scale = config.mito_width_px / 15.6
    return SimulationConfig(
        n_images=config.n_images,
        height=config.height,
        width=config.width,
        pixel_size_nm=25.0 / scale,
        seed=config.seed,
        width_mean_px=config.mito_width_px,
        width_sd_px=4.0 * scale,
        width_range_px=(max(2.0, 8.0 * scale), 26.0 * scale),
        length_px=(max(10.0, 60.0 * scale), 320.0 * scale),
        n_out_of_focus=(0, 0),
        max_mitochondria=400,  # per 512×512 px: the tubes here are ~3× thinner than in the STED simulation
        coverage=(0.08, 0.16),
    )


def _nuclei(rng: np.random.Generator, config: LabelFreeSimulationConfig) -> tuple[np.ndarray, np.ndarray]:
    """(height profile in [0, 1], DNA density) of the nuclei."""
    h, w = config.height, config.width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    height = np.zeros((h, w), np.float32)
    dna = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(config.nuclei[0], config.nuclei[1] + 1))):
        a, b = rng.uniform(*config.nucleus_radius_px, size=2)
        cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
        t = rng.uniform(0, np.pi)
        u = ((yy - cy) * np.cos(t) + (xx - cx) * np.sin(t)) / a
        v = (-(yy - cy) * np.sin(t) + (xx - cx) * np.cos(t)) / b
        r2 = u**2 + v**2
        dome = np.sqrt(np.clip(1 - r2, 0, 1)).astype(np.float32)
        texture = ndi.gaussian_filter(rng.normal(size=(h, w)).astype(np.float32), 1.5)
        texture = 0.7 + 0.3 * texture / (texture.std() + 1e-6)
        spots = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(2, 6))):
            sy, sx = rng.normal(cy, a / 3), rng.normal(cx, b / 3)
            spots += np.exp(-((yy - sy) ** 2 + (xx - sx) ** 2) / (2 * rng.uniform(1.5, 3.0) ** 2))
        inside = (r2 < 1).astype(np.float32)
        height = np.maximum(height, dome)
        dna = np.maximum(dna, inside * np.clip(texture + 0.8 * spots, 0, None) * (0.6 + 0.4 * dome))
    return height, dna


def simulate_pair(config: LabelFreeSimulationConfig, index: int) -> LabelFreePair:
    """Pair `index`; the same (config, index) always gives the same images."""
    rng = np.random.default_rng([config.seed, 8, index])
    geometry = simulate_image(_geometry_config(config), index)
    nucleus_height, dna = _nuclei(rng, config)
    nucleus = nucleus_height > 0
    mito_mask = geometry.mito_mask & ~ndi.binary_dilation(nucleus, iterations=2)
    # tube thickness ~ distance to the outline (a cylinder's chord length), from the exact mask
    thickness = ndi.distance_transform_edt(mito_mask).astype(np.float32)
    thickness = np.sqrt(np.clip(2 * thickness * config.mito_width_px / 2 - thickness**2, 0, None))
    thickness /= max(float(thickness.max()), 1e-6)
    cell = ndi.gaussian_filter(rng.normal(size=nucleus.shape).astype(np.float32), 12.0)
    cell = 0.3 * cell / (cell.std() + 1e-6)

    # fluorescence
    fluorescence = {}
    for name, density in (("mito", thickness * (0.7 + 0.3 * rng.random())), ("dna", dna)):
        blurred = ndi.gaussian_filter(density, config.psf_sigma_px)
        peak = rng.uniform(*config.fluo_photons)
        counts = rng.poisson(np.maximum(peak * blurred / max(float(blurred.max()), 1e-6) + 2.0, 0))
        noisy = counts + 100.0 + rng.normal(0.0, config.read_noise, counts.shape)
        fluorescence[name] = np.clip(np.round(noisy), 0, 65535).astype(np.float32)

    # transmitted light: phase object slightly out of focus (transport of intensity)
    phase = 1.0 * thickness + 1.5 * nucleus_height + 0.4 * nucleus_height * dna + cell
    phase = ndi.gaussian_filter(phase.astype(np.float32), config.defocus_blur_px)
    contrast = 1.0 - config.defocus * ndi.laplace(phase)
    yy, xx = np.mgrid[0 : config.height, 0 : config.width].astype(np.float32)
    gy, gx = rng.normal(size=2)
    ramp = gy * (yy / config.height - 0.5) + gx * (xx / config.width - 0.5)
    blob = ndi.gaussian_filter(rng.normal(size=phase.shape).astype(np.float32), config.height / 6)
    uneven = ramp / (np.ptp(ramp) + 1e-6) + blob / (np.ptp(blob) + 1e-6)
    illumination = 1.0 + config.illumination_unevenness * uneven
    expected = config.tl_photons * np.clip(contrast, 0.05, None) * illumination
    tl = rng.poisson(expected) + 100.0 + rng.normal(0.0, config.read_noise, expected.shape)
    tl = np.clip(np.round(tl), 0, 65535).astype(np.float32)
    return LabelFreePair(tl=tl, fluorescence=fluorescence, masks={"mito": mito_mask, "dna": nucleus})


def simulate_dataset(
    config: LabelFreeSimulationConfig, out_dir: Path, progress: Callable[[int], None] | None = None
) -> list[Path]:
    """Write `tl/NAME.tif`, `mito/NAME.tif`, `dna/NAME.tif` (+ `masks/`) and `config.yaml` under `out_dir`."""
    out_dir = Path(out_dir)
    for sub in ("tl", "mito", "dna", "masks"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    config.to_yaml(out_dir / "config.yaml")
    paths = []
    for i in range(config.n_images):
        pair = simulate_pair(config, i)
        name = f"sim_{i:03d}.tif"
        write_tiff(out_dir / "tl" / name, pair.tl)
        for s, img in pair.fluorescence.items():
            write_tiff(out_dir / s / name, img)
        write_tiff(out_dir / "masks" / name, np.stack([pair.masks["mito"], pair.masks["dna"]]).astype(np.uint8))
        paths.append(out_dir / "tl" / name)
        if progress:
            progress(1)
    return paths
