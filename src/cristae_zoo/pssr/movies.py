"""Simulated Airyscan-like time-lapses of moving mitochondria that divide (fission) and join (fusion).

Reuses the tube geometry and renderer of `cristae_zoo.data.simulate` (smoothly curved centre lines, radius and
brightness varying along the tube, round caps) at Airyscan sampling (50 nm/px, ~140 nm FWHM PSF, as the paper's
HR data: 2× Nyquist, 42–59 nm/px). A MitoTracker-like dye fills the matrix. Each mitochondrion drifts with its
own velocity plus a random walk; some divide: the tube constricts over a few frames at a cut point, then its two
halves separate along the local axis. Fusion is the same event played backwards (two ends approach and join).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field
from scipy import ndimage as ndi

from cristae_zoo.config import SimulationConfig, YamlModel
from cristae_zoo.data.simulate import (
    _STEP,
    _Canvas,
    _centre_line,
    _render_tube,
    _Tube,
    _tube_profile,
)
from cristae_zoo.io import atomic_write_text, write_tiff
from cristae_zoo.pssr.crappify import CrappifierConfig, crappify, normalize


class MovieConfig(YamlModel):
    n_movies: int = Field(24, ge=1)
    n_frames: int = Field(12, ge=5)
    size: int = Field(256, ge=64, description="HR frame height and width (px); a multiple of the crappifier scale")
    pixel_size_nm: float = Field(50.0, gt=0, description="HR pixel (paper's Airyscan: 42–59 nm)")
    psf_fwhm_nm: float = Field(140.0, gt=0, description="Airyscan lateral resolution")
    n_mitochondria: tuple[int, int] = Field((14, 22), description="per 256×256 px frame")
    width_nm: tuple[float, float] = Field((250.0, 450.0))
    length_px: tuple[float, float] = Field((30.0, 110.0))
    speed_px: float = Field(0.8, ge=0, description="sd of each mitochondrion's drift per frame (HR px)")
    jitter_px: float = Field(0.3, ge=0, description="sd of the random-walk step per frame")
    fission_probability: float = Field(0.35, ge=0, le=1)
    fusion_probability: float = Field(0.2, ge=0, le=1)
    separation_px: float = Field(1.5, ge=0, description="speed at which the two halves part after fission (px/frame)")
    peak_photons: tuple[float, float] = Field((40.0, 90.0), description="expected photons at a bright tube's centre")
    background_photons: float = Field(2.0, ge=0)
    seed: int = 0
    crappifier: CrappifierConfig = Field(default_factory=CrappifierConfig)


@dataclass
class Event:
    kind: Literal["fission", "fusion"]
    frame: int  # frame at which the two halves touch
    y: float  # cut point at that frame (HR px)
    x: float


@dataclass
class Movie:
    hr: np.ndarray  # (T, H, W) float32 photon counts
    mask: np.ndarray  # (T, H, W) bool, pixels inside a mitochondrion
    events: list[Event]


@dataclass
class _Mito:
    tube: _Tube  # centred at the origin
    origin: np.ndarray  # (T, 2) position per frame
    kind: str  # "none" | "fission" | "fusion"
    frame: int
    cut: int  # sample index of the cut


def _geometry() -> SimulationConfig:
    # curvature at 50 nm/px: the STED simulator's defaults are per 25 nm px
    return SimulationConfig(height=64, width=64, curvature_sd=0.03, curvature_length_px=15.0, width_variation=0.05)


def _separation(config: MovieConfig, mito: _Mito, t: int) -> float | None:
    """Half-gap between the two halves at frame t (px), or None while they are one tube."""
    s = t - mito.frame if mito.kind == "fission" else mito.frame - t  # fusion = fission backwards in time
    return None if mito.kind == "none" or s < 0 else config.separation_px * s


def _constriction(mito: _Mito, t: int) -> float:
    """Radius factor at the cut: narrows over the 3 frames before fission (after fusion)."""
    if mito.kind == "none":
        return 1.0
    s = mito.frame - t if mito.kind == "fission" else t - mito.frame
    return float(1.0 - 0.5 * np.clip(1.0 - (s - 1) / 3.0, 0.0, 1.0)) if s > 0 else 0.5


def _pieces(config: MovieConfig, mito: _Mito, t: int) -> list[_Tube]:
    tube, (oy, ox) = mito.tube, mito.origin[t]
    radius = tube.radius.copy()
    u = np.arange(len(radius)) * _STEP
    dip = np.exp(-0.5 * ((u - mito.cut * _STEP) / max(radius[mito.cut], 1.0)) ** 2)
    radius *= 1.0 - (1.0 - _constriction(mito, t)) * dip
    sep = _separation(config, mito, t)
    if sep is None:
        return [_Tube(tube.y + oy, tube.x + ox, tube.theta, radius, tube.shade, 0.0)]
    # cut out the caps' length so that the halves touch at sep = 0 and part as sep grows
    gap = int(math.ceil(radius[mito.cut] / _STEP))
    dy, dx = math.sin(tube.theta[mito.cut]), math.cos(tube.theta[mito.cut])
    a, b = slice(0, max(mito.cut - gap, 2)), slice(min(mito.cut + gap, len(radius) - 2), None)
    return [_Tube(tube.y[s] + oy + sign * sep * dy, tube.x[s] + ox + sign * sep * dx, tube.theta[s], radius[s], tube.shade[s], 0.0)
            for s, sign in ((a, -1.0), (b, 1.0))]  # fmt: skip


def _draw(config: MovieConfig, rng: np.random.Generator) -> list[_Mito]:
    geo, T, size = _geometry(), config.n_frames, config.size
    lo, hi = config.n_mitochondria
    n = int(round(rng.integers(lo, hi + 1) * size * size / 256**2))
    mitos = []
    for _ in range(max(n, 1)):
        radius = rng.uniform(*config.width_nm) / config.pixel_size_nm / 2
        length = float(np.exp(rng.uniform(*np.log(config.length_px))))
        y, x, theta = _centre_line(rng, geo, length, radius, rng.uniform(0, 2 * np.pi))
        y, x = y - y[len(y) // 2], x - x[len(x) // 2]
        r, shade = _tube_profile(rng, geo, len(y), radius, rng.uniform(0.6, 1.0))
        tube = _Tube(y, x, theta, r, shade, 0.0)
        steps = rng.normal(0, config.speed_px, 2) + rng.normal(0, config.jitter_px, (T, 2))
        origin = rng.uniform(0.1 * size, 0.9 * size, 2) + np.cumsum(steps, axis=0) - steps[T // 2]
        p = rng.random()
        kind = "fission" if p < config.fission_probability else "fusion" if p < config.fission_probability + config.fusion_probability else "none"
        if length < 40:  # too short to divide visibly
            kind = "none"
        cut = int(rng.integers(int(0.35 * len(y)), int(0.65 * len(y)) + 1))
        # the event frame: from 3 on (from 2 in 5-frame movies, the shortest allowed), at least 2 before the end
        mitos.append(_Mito(tube, origin, kind, int(rng.integers(min(3, T - 3), T - 2)), cut))
    return mitos


def simulate_movie(config: MovieConfig, index: int) -> Movie:
    """Movie `index`; the same (config, index) always gives the same movie."""
    rng = np.random.default_rng([config.seed, index])
    mitos = _draw(config, rng)
    sigma = config.psf_fwhm_nm / (2 * math.sqrt(2 * math.log(2))) / config.pixel_size_nm
    peak = rng.uniform(*config.peak_photons)
    hr, masks = [], []
    for t in range(config.n_frames):
        canvas = _Canvas(config.size, config.size)
        k = 0
        for m in mitos:
            for piece in _pieces(config, m, t):
                _render_tube(canvas, piece, k)
                k += 1
        dye = np.clip(canvas.depth + 0.5, 0, 1) * canvas.shade  # filled matrix, anti-aliased edge
        dye[~np.isfinite(dye)] = 0.0
        expected = peak * ndi.gaussian_filter(dye.astype(np.float32), sigma) + config.background_photons
        hr.append(rng.poisson(np.maximum(expected, 0)).astype(np.float32))
        masks.append(canvas.depth > 0)
    events = []
    for m in mitos:
        if m.kind != "none":
            oy, ox = m.origin[m.frame]
            events.append(Event(m.kind, m.frame, float(m.tube.y[m.cut] + oy), float(m.tube.x[m.cut] + ox)))  # type: ignore[arg-type]
    return Movie(np.stack(hr), np.stack(masks), events)


def simulate_movies(config: MovieConfig, out_dir: Path, progress: Callable[[int], None] | None = None) -> list[Path]:
    """Write hr/, lr/ (crappified, 8-bit), mask/ as movie_NNN.tif (T, Y, X), events.json and movies.yaml."""
    out_dir = Path(out_dir)
    if config.size % config.crappifier.scale:
        from cristae_zoo.errors import CristaeZooError

        raise CristaeZooError(f"--size {config.size}: must be divisible by the crappifier scale {config.crappifier.scale}")
    events: dict[str, list[dict]] = {}
    paths = []
    for i in range(config.n_movies):
        movie = simulate_movie(config, i)
        name = f"movie_{i:03d}.tif"
        hr = np.clip(np.round(movie.hr), 0, 65535).astype(np.uint16)
        lr = crappify(hr, config.crappifier, np.random.default_rng([config.seed, i, 1]))
        write_tiff(out_dir / "hr" / name, hr, imagej=True, metadata={"axes": "TYX"})
        write_tiff(out_dir / "lr" / name, np.round(lr * 255).astype(np.uint8), imagej=True, metadata={"axes": "TYX"})
        write_tiff(out_dir / "mask" / name, movie.mask.astype(np.uint8), imagej=True, metadata={"axes": "TYX"})
        events[name] = [e.__dict__ for e in movie.events]
        paths.append(out_dir / "hr" / name)
        if progress:
            progress(1)
    atomic_write_text(out_dir / "events.json", json.dumps(events, indent=1))
    config.to_yaml(out_dir / "movies.yaml")
    return paths


def normalize_movie(hr: np.ndarray) -> np.ndarray:
    """Min–max over the whole movie: one intensity scale for every frame."""
    return normalize(hr)
