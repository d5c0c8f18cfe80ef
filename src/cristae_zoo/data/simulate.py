"""Simulated high-resolution 2D STED images of live mitochondria stained with an inner-membrane dye.

The DeepCristae training images (33 HR 2D STED images of PKMITO-Orange-stained RPE1 cells, 25 nm/px)
are not public, so we draw images with the same content: branched, curved tubules 15.6 ± 4 px wide,
their inner boundary membrane (a thin rim just inside the outline), cristae lamellae roughly across
the axis every 100-400 nm, and a weak matrix signal; blurred by a ~50 nm STED PSF and recorded as
photon counts with Poisson noise, a detector offset and read noise.

Each mitochondrion is a set of tubes (a parent plus branches). A tube is a centre line sampled every
half pixel (a random walk whose curvature varies smoothly) and a radius along it. For the pixels
around a tube, a Euclidean distance transform of the rasterised centre line gives the nearest
centre-line sample, hence tube coordinates: u (arc length along the axis) and v (signed distance
across it). Masks, rim and cristae are then vectorised functions of (u, v) and of the depth below the
tube surface. Where tubes overlap, each pixel belongs to the tube it lies deepest in, which also makes
the union of tubes have a single outline (and a single rim) at branch points and crossings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy.signal import lfilter

from cristae_zoo.config import SimulationConfig
from cristae_zoo.io import atomic_path, staged_dir, write_csv, write_tiff

_STEP = 0.5  # centre-line sampling (px): fine enough that the nearest sample is within ~0.7 px of the true foot
_RIM_DEPTH = 0.8  # the inner boundary membrane lies ~20 nm inside the outline (outer membrane + intermembrane space)
_RIM_SIGMA = 0.45  # px; the membrane itself is ~5 nm thick, this only anti-aliases it before the PSF blur
_MONTAGE_IMAGES = 3


@dataclass
class SimulatedImage:
    """One simulated HR STED image and the exact masks it was drawn from."""

    hr: np.ndarray  # float32 (H, W), integer-valued photon counts + offset
    mito_mask: np.ndarray  # bool (H, W), pixel centres inside an in-focus mitochondrion
    cristae_mask: np.ndarray  # bool (H, W), cristae lamellae pixels (before blur), a subset of mito_mask
    widths_px: list[float]  # the drawn width of each mitochondrion
    params: dict[str, float | str] = field(default_factory=dict)  # what was drawn for this image (see _image_config)


@dataclass
class _Tube:
    """A centre line with a radius, brightness and cristae, in pixel coordinates (row y, column x)."""

    y: np.ndarray
    x: np.ndarray
    theta: np.ndarray  # heading of each sample (rad), x = cos, y = sin
    radius: np.ndarray  # local radius of each sample (px)
    shade: np.ndarray  # relative brightness of each sample (dye loading, focus)
    cristae_from: float  # arc length where cristae start (a branch's start is inside its parent)
    has_cristae: bool = True  # False: a cristae-free mitochondrion (boundary membrane and matrix only)
    tilt_sd_deg: float | None = None  # this mitochondrion's cristae tilt sd (None: the config's)

    @property
    def length(self) -> float:
        return (len(self.y) - 1) * _STEP


class _Canvas:
    """Per-pixel fields of the tube each pixel lies deepest in."""

    def __init__(self, height: int, width: int) -> None:
        shape = (height, width)
        self.depth = np.full(shape, -np.inf, dtype=np.float32)  # radius minus distance to the axis (px)
        self.u = np.zeros(shape, dtype=np.float32)
        self.v = np.zeros(shape, dtype=np.float32)
        self.radius = np.ones(shape, dtype=np.float32)
        self.shade = np.zeros(shape, dtype=np.float32)
        self.owner = np.full(shape, -1, dtype=np.int32)
        self.boxes: list[tuple[slice, slice]] = []  # the part of the image each tube was rendered into

    @property
    def shape(self) -> tuple[int, int]:
        return self.depth.shape  # type: ignore[return-value]

    def coverage(self) -> float:
        return float(np.count_nonzero(self.depth > 0)) / self.depth.size


def _smooth_noise(rng: np.random.Generator, n: int, correlation_samples: float) -> np.ndarray:
    """Stationary unit-variance AR(1) noise: smooth over `correlation_samples` samples."""
    a = math.exp(-1.0 / max(correlation_samples, 1e-6))
    innovations = rng.normal(0.0, math.sqrt(1.0 - a * a), n)
    innovations[0] = rng.normal()  # start in the stationary distribution
    return lfilter([1.0], [1.0, -a], innovations)


def _centre_line(
    rng: np.random.Generator, config: SimulationConfig, length: float, radius: float, heading: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random walk from (0, 0) whose curvature is smooth noise, so tubes bend rather than zig-zag."""
    n = max(int(round(length / _STEP)), 2) + 1
    corr = config.curvature_length_px / _STEP
    curvature = config.curvature_sd * _smooth_noise(rng, n, corr)
    # A bend tighter than the tube radius would fold the tube onto itself.
    limit = 1.0 / (radius + 4.0)
    curvature = np.clip(curvature, -limit, limit)
    theta = heading + np.cumsum(curvature * _STEP)
    theta -= theta[0] - heading
    x = np.concatenate([[0.0], np.cumsum(_STEP * np.cos(theta[:-1]))])
    y = np.concatenate([[0.0], np.cumsum(_STEP * np.sin(theta[:-1]))])
    return y, x, theta


def _tube_profile(
    rng: np.random.Generator, config: SimulationConfig, n: int, radius: float, brightness: float
) -> tuple[np.ndarray, np.ndarray]:
    """Radius and brightness along a tube: both vary slowly (over ~1 µm) around their drawn values."""
    r = radius * (1.0 + config.width_variation * _smooth_noise(rng, n, 40.0 / _STEP))
    shade = brightness * np.exp(0.2 * _smooth_noise(rng, n, 30.0 / _STEP))
    return r.astype(np.float32), shade.astype(np.float32)


def _draw_mitochondrion(rng: np.random.Generator, config: SimulationConfig) -> tuple[list[_Tube], float]:
    """A parent tube centred at a random place in the image, plus 0-3 branches."""
    lo, hi = config.width_range_px
    width = float(np.clip(rng.normal(config.width_mean_px, config.width_sd_px), lo, hi))
    length = float(np.exp(rng.uniform(*np.log(config.length_px))))
    brightness = rng.uniform(*config.brightness_range)
    y, x, theta = _centre_line(rng, config, length, width / 2, rng.uniform(0, 2 * np.pi))
    # Centre the tube on a uniform position so coverage is uniform over the image, borders included.
    mid = len(y) // 2
    y += rng.uniform(0, config.height) - y[mid]
    x += rng.uniform(0, config.width) - x[mid]
    radius, shade = _tube_profile(rng, config, len(y), width / 2, brightness)
    tubes = [_Tube(y, x, theta, radius, shade, cristae_from=0.0)]

    n_branches = 0
    while n_branches < 3 and rng.random() < config.branch_probability:
        n_branches += 1
        k = int(rng.integers(len(y) // 5, max(len(y) * 4 // 5, len(y) // 5 + 1)))
        # Branches leave at 35-80° and are a little thinner, as at fission/fusion sites.
        heading = theta[k] + rng.choice([-1, 1]) * np.deg2rad(rng.uniform(35, 80))
        b_radius = float(radius[k] * rng.uniform(0.8, 1.0))
        b_length = max(30.0, length * rng.uniform(0.3, 0.7))
        by, bx, btheta = _centre_line(rng, config, b_length, b_radius, heading)
        b_r, b_shade = _tube_profile(rng, config, len(by), b_radius, brightness)
        tubes.append(_Tube(by + y[k], bx + x[k], btheta, b_r, b_shade, cristae_from=float(radius[k])))
    return tubes, width


def _overlap(canvas: _Canvas, tubes: list[_Tube]) -> tuple[float, float]:
    """(fraction of the axis inside the image, fraction of that part within reach of earlier tubes)."""
    h, w = canvas.shape
    y = np.concatenate([t.y[::4] for t in tubes])
    x = np.concatenate([t.x[::4] for t in tubes])
    r = np.concatenate([t.radius[::4] for t in tubes])
    iy, ix = np.round(y).astype(int), np.round(x).astype(int)
    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    if not inside.any():
        return 0.0, 1.0
    # depth > -r: the axis point is closer than (r_old + r) to an earlier axis, i.e. the tubes touch.
    touching = canvas.depth[iy[inside], ix[inside]] > -r[inside] - 1.0
    return float(inside.mean()), float(touching.mean())


def _render_tube(canvas: _Canvas, tube: _Tube, tube_id: int) -> None:
    """Compute (u, v, depth) around the tube and keep them where this tube is the deepest one so far."""
    h, w = canvas.shape
    margin = float(tube.radius.max()) + 3.0
    # Work in a box around the tube, clipped to the image plus a margin: samples far outside the image
    # cannot be the nearest to an image pixel that lies inside this tube.
    far = 2 * int(math.ceil(margin))
    y0 = max(int(math.floor(tube.y.min() - margin)), -far)
    y1 = min(int(math.ceil(tube.y.max() + margin)) + 1, h + far)
    x0 = max(int(math.floor(tube.x.min() - margin)), -far)
    x1 = min(int(math.ceil(tube.x.max() + margin)) + 1, w + far)
    iy = np.round(tube.y).astype(int) - y0
    ix = np.round(tube.x).astype(int) - x0
    keep = (iy >= 0) & (iy < y1 - y0) & (ix >= 0) & (ix < x1 - x0)
    if not keep.any():
        canvas.boxes.append((slice(0, 0), slice(0, 0)))
        return
    line = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    sample = np.zeros(line.shape, dtype=np.int32)
    line[iy[keep], ix[keep]] = True
    sample[iy[keep], ix[keep]] = np.nonzero(keep)[0]
    # The part of the box inside the image.
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if sy0 >= sy1 or sx0 >= sx1:
        canvas.boxes.append((slice(0, 0), slice(0, 0)))
        return
    nearest = ndi.distance_transform_edt(~line, return_distances=False, return_indices=True)
    ny = nearest[0, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
    nx = nearest[1, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
    k = sample[ny, nx]

    yy, xx = np.mgrid[sy0:sy1, sx0:sx1].astype(np.float32)
    dy = yy - tube.y[k].astype(np.float32)
    dx = xx - tube.x[k].astype(np.float32)
    cos, sin = np.cos(tube.theta[k]).astype(np.float32), np.sin(tube.theta[k]).astype(np.float32)
    du = dx * cos + dy * sin  # along the axis, from the nearest sample
    v = dy * cos - dx * sin  # across the axis (signed)
    last = len(tube.y) - 1
    # Beyond the ends the distance is to the end point (round caps). Elsewhere the nearest raster pixel
    # is within ~1 px of the foot of the perpendicular; a larger along-axis offset means the pixel is past
    # a part of the centre line that was cut off at the box edge, so it is counted as far away.
    interior = np.maximum(np.abs(du) - 1.0, 0)
    beyond = np.where(k == 0, np.maximum(-du, 0), np.where(k == last, np.maximum(du, 0), interior))
    depth = tube.radius[k] - np.hypot(v, beyond)
    if tube.cristae_from > 0:
        # A branch starts on its parent's axis; its flat start lies inside the parent, while a round start
        # cap could poke out of the parent's far side and take over the parent's cristae there.
        depth[(k == 0) & (du < 0)] = -np.inf

    box = (slice(sy0, sy1), slice(sx0, sx1))
    deeper = depth > canvas.depth[box]
    canvas.depth[box][deeper] = depth[deeper]
    canvas.u[box][deeper] = (k * _STEP + du)[deeper]
    canvas.v[box][deeper] = v[deeper]
    canvas.radius[box][deeper] = tube.radius[k][deeper]
    canvas.shade[box][deeper] = tube.shade[k][deeper]
    canvas.owner[box][deeper] = tube_id
    canvas.boxes.append(box)


def _draw_cristae_params(
    rng: np.random.Generator, config: SimulationConfig, tube: _Tube
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Positions along the axis, tilts, lateral extents (in units of the radius) and densities."""
    lo, hi = (s / config.pixel_size_nm for s in config.cristae_spacing_nm)
    spacings = rng.uniform(lo, hi, int(tube.length / max(lo, 0.5)) + 2)
    s = tube.cristae_from + rng.uniform(0, hi) + np.concatenate([[0.0], np.cumsum(spacings)])
    s = s[s < tube.length - 2.0]
    n = len(s)
    if n == 0:
        empty = np.zeros(0, dtype=np.float32)
        return empty, empty, empty, empty, empty
    # Neighbouring cristae share their orientation (AR(1) tilts), as stacks of lamellae do.
    max_tilt = np.deg2rad(config.cristae_max_tilt_deg)
    tilt_sd = config.cristae_tilt_sd_deg if tube.tilt_sd_deg is None else tube.tilt_sd_deg
    tilt = np.deg2rad(tilt_sd) * _smooth_noise(rng, n, 3.0)
    tan = np.tan(np.clip(tilt, -max_tilt, max_tilt))
    # Lamellae never cross: limit the tilt difference between neighbours to what their gap allows.
    r_at = np.interp(s, np.arange(len(tube.radius)) * _STEP, tube.radius) * 1.1
    for i in range(1, n):
        room = max(s[i] - s[i - 1] - config.cristae_thickness_px - 0.5, 0.0) / r_at[i]
        tan[i] = np.clip(tan[i], tan[i - 1] - room, tan[i - 1] + room)
    # Full lamellae span the tube (ends hidden under the rim); partial ones leave one side only.
    a = np.full(n, -1.5)
    b = np.full(n, 1.5)
    partial = rng.random(n) < config.partial_cristae_fraction
    reach = rng.uniform(0.6, 1.6, n)  # how far across (in radii) a partial crista gets
    side = rng.random(n) < 0.5
    b = np.where(partial & side, -1.0 + reach, b)
    a = np.where(partial & ~side, 1.0 - reach, a)
    density = rng.uniform(*config.cristae_intensity, n)
    f32 = np.float32
    return s.astype(f32), tan.astype(f32), a.astype(f32), b.astype(f32), density.astype(f32)


def _render_cristae(
    rng: np.random.Generator, config: SimulationConfig, canvas: _Canvas, tubes: list[_Tube]
) -> tuple[np.ndarray, np.ndarray]:
    """Dye density of the cristae (anti-aliased lines) and their exact mask, tube by tube."""
    density = np.zeros(canvas.shape, dtype=np.float32)
    mask = np.zeros(canvas.shape, dtype=bool)
    half = config.cristae_thickness_px / 2
    for tube_id, (tube, box) in enumerate(zip(tubes, canvas.boxes, strict=True)):
        # Drawn even for a cristae-free tube, so that everything drawn after it stays the same.
        s, tan, a, b, dens = _draw_cristae_params(rng, config, tube)
        if len(s) == 0 or not tube.has_cristae:
            continue
        sel = (canvas.owner[box] == tube_id) & (canvas.depth[box] > 0)
        if not sel.any():
            continue
        u, v, r = canvas.u[box][sel], canvas.v[box][sel], canvas.radius[box][sel]
        # Crista i is the line u = s_i + v·tan_i; a tilt of up to ~30° over a radius of 13 px moves it by
        # up to ~2 spacings, so compare each pixel with the few cristae around its own position.
        k = np.searchsorted(s, u)[:, None] + np.arange(-3, 3)[None, :]
        k = np.clip(k, 0, len(s) - 1)
        dist = np.abs(u[:, None] - s[k] - v[:, None] * tan[k]) / np.sqrt(1 + tan[k] ** 2)
        vn = (v / r)[:, None]
        within = (vn >= a[k]) & (vn <= b[k])
        coverage = np.clip(half + 0.5 - dist, 0, 1) * dens[k] * within  # box-filtered line, ~thickness px
        hit = ((dist <= half) & within).any(axis=1)
        density[box][sel] = coverage.max(axis=1)
        mask[box][sel] = hit
    return density, mask


def _out_of_focus(rng: np.random.Generator, config: SimulationConfig) -> np.ndarray:
    """Dim, blurred tubes above or below the focal plane, relative to the in-focus peak (not in the masks)."""
    h, w = config.height, config.width
    haze = np.zeros((h, w), dtype=np.float32)
    lo, hi = config.n_out_of_focus
    for _ in range(int(rng.integers(lo, hi + 1))):
        tubes, width = _draw_mitochondrion(rng, config)
        line = np.zeros((h, w), dtype=bool)
        for t in tubes:
            iy, ix = np.round(t.y).astype(int), np.round(t.x).astype(int)
            ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
            line[iy[ok], ix[ok]] = True
        if not line.any():
            continue
        tube = np.clip(width / 2 + 0.5 - ndi.distance_transform_edt(~line), 0, 1).astype(np.float32)
        haze += rng.uniform(*config.haze_intensity) * ndi.gaussian_filter(tube, rng.uniform(3.0, 6.0))
    return haze


_LABELLINGS = ("inner_membrane", "matrix", "outer_membrane")
_OUTER_DEPTH = 0.25  # px; the outer membrane is the outline itself


def _image_config(config: SimulationConfig, index: int) -> tuple[SimulationConfig, np.random.Generator, bool]:
    """The config of image `index` with its per-image draws applied, the generator of the per-mitochondrion draws,
    and whether the image is an empty field.

    The draws come from their own generator, seeded by (seed, index, 1), and only for the knobs that are on: with
    every knob off nothing is drawn and the image's own generator sees exactly the draws it always did.
    """
    vary = np.random.default_rng([config.seed, index, 1])
    update: dict[str, object] = {}
    if config.width_mean_range_px is not None:
        update["width_mean_px"] = float(vary.uniform(*config.width_mean_range_px))
    if config.curvature_sd_range is not None:
        update["curvature_sd"] = float(vary.uniform(*config.curvature_sd_range))
    if config.psf_fwhm_range_nm is not None:
        update["psf_fwhm_nm"] = float(vary.uniform(*config.psf_fwhm_range_nm))
    if config.background_photons_range is not None:
        update["background_photons"] = float(vary.uniform(*config.background_photons_range))
    if config.labelling_weights is not None:
        names = list(config.labelling_weights)
        p = np.array([config.labelling_weights[k] for k in names], float)
        update["labelling"] = names[int(vary.choice(len(names), p=p / p.sum()))]
    empty = config.empty_field_fraction > 0 and bool(vary.random() < config.empty_field_fraction)
    # model_copy does not validate the update: the drawn values lie inside ranges validated with the config.
    image_config = config.model_copy(update=update) if update else config
    return image_config, vary, empty


def simulate_image(config: SimulationConfig, index: int) -> SimulatedImage:
    """Simulate image `index` of the data set; the same (config, index) always gives the same image."""
    config, vary, empty = _image_config(config, index)
    # A seed sequence of (seed, index): images are independent of each other and of how many are drawn.
    rng = np.random.default_rng([config.seed, index])
    canvas = _Canvas(config.height, config.width)
    tubes: list[_Tube] = []
    widths: list[float] = []
    target = rng.uniform(*config.coverage)
    # The cap is per 512×512 px so that coverage, not the cap, decides how many mitochondria a large image gets.
    limit = 0 if empty else max(3, round(config.max_mitochondria * config.height * config.width / 512**2))
    attempts = 0
    while len(widths) < limit and attempts < 8 * limit:
        attempts += 1
        candidate, width = _draw_mitochondrion(rng, config)
        in_image, overlap = _overlap(canvas, candidate)
        if in_image < 0.5 or overlap > config.max_overlap:
            continue
        # Per-mitochondrion knobs, shared by its branches (a mitochondrion is one compartment).
        has_cristae = not (config.cristae_free_fraction > 0 and vary.random() < config.cristae_free_fraction)
        tilt_sd = None if config.cristae_tilt_sd_range_deg is None else float(vary.uniform(*config.cristae_tilt_sd_range_deg))
        for tube in candidate:
            tube.has_cristae, tube.tilt_sd_deg = has_cristae, tilt_sd
            _render_tube(canvas, tube, len(tubes))
            tubes.append(tube)
        widths.append(width)
        if canvas.coverage() >= target:
            break

    mito = canvas.depth > 0
    cristae, cristae_mask = _render_cristae(rng, config, canvas, tubes)
    if config.labelling == "inner_membrane":
        rim = config.rim_intensity * np.exp(-0.5 * ((canvas.depth - _RIM_DEPTH) / _RIM_SIGMA) ** 2)
        matrix = config.matrix_intensity * np.clip(canvas.depth + 0.5, 0, 1)
        # Cristae meet the boundary membrane at crista junctions: take the max so junctions are not doubly bright.
        dye = (np.maximum(rim, cristae) + matrix) * canvas.shade
    else:
        # A matrix dye fills the tube evenly; an outer-membrane label is a ring at the outline. Neither shows the
        # cristae as bright lamellae, so the image has none to restore: its cristae mask is empty. (The cristae were
        # still drawn above, so the geometry and every later draw are those of the inner-membrane image.)
        cristae_mask = np.zeros_like(cristae_mask)
        if config.labelling == "matrix":
            dye = np.clip(canvas.depth + 0.5, 0, 1) * canvas.shade
        else:
            dye = np.exp(-0.5 * ((canvas.depth - _OUTER_DEPTH) / _RIM_SIGMA) ** 2) * canvas.shade
    dye[~np.isfinite(dye)] = 0.0

    sigma = config.psf_fwhm_nm / (2 * math.sqrt(2 * math.log(2))) / config.pixel_size_nm
    blurred = ndi.gaussian_filter(dye.astype(np.float32), sigma)
    reference = float(np.percentile(blurred, 99.9)) if mito.any() else 1.0
    peak = rng.uniform(*config.peak_photons)
    expected = peak * (blurred / max(reference, 1e-6) + _out_of_focus(rng, config)) + config.background_photons
    counts = rng.poisson(np.maximum(expected, 0)).astype(np.float32)
    noisy = counts + config.offset + rng.normal(0.0, config.read_noise, counts.shape)
    # A detector reports whole counts in a 16-bit range.
    hr = np.clip(np.round(noisy), 0, 65535).astype(np.float32)
    params: dict[str, float | str] = {
        "labelling": config.labelling, "width_mean_px": config.width_mean_px, "curvature_sd": config.curvature_sd,
        "psf_fwhm_nm": config.psf_fwhm_nm, "background_photons": config.background_photons, "peak_photons": float(peak),
        "empty_field": int(empty), "n_mitochondria": len(widths),
        "cristae_free_mitochondria": sum(1 for t in tubes if not t.has_cristae and t.cristae_from == 0),
    }  # fmt: skip
    return SimulatedImage(hr=hr, mito_mask=mito, cristae_mask=cristae_mask & mito, widths_px=widths, params=params)


def _tiff_kwargs(pixel_size_nm: float) -> dict:
    px_um = pixel_size_nm / 1000.0
    return {"imagej": True, "resolution": (1 / px_um, 1 / px_um), "metadata": {"unit": "um"}}


#: The file every folder written by `simulate` holds: `--overwrite` replaces only folders that have it.
SIMULATION_MARKER = "simulation.yaml"


def simulate_dataset(
    config: SimulationConfig, out_dir: Path, progress: Callable[[int], None] | None = None, *, overwrite: bool = False
) -> list[Path]:
    """Write out_dir/{hr,mito_mask,cristae_mask}/sim_NNN.tif, simulation.yaml, parameters.csv (what was drawn for
    each image: labelling, width, PSF, photons, ...) and montage.png.

    HR images are uint16 photon counts + offset; masks are uint8 0/1. Returns the HR paths. The folder is built
    beside `out_dir` and moved into place when complete (`io.staged_dir`): an existing non-empty `out_dir` is
    refused unless `overwrite`, and even then only a folder written by `simulate` (with simulation.yaml) is
    replaced, as a whole (no image of an earlier, larger run is left behind).
    """
    out_dir = Path(out_dir)
    kwargs = _tiff_kwargs(config.pixel_size_nm)
    digits = max(3, len(str(config.n_images - 1)))
    paths: list[Path] = []
    shown: list[SimulatedImage] = []
    params: list[dict] = []
    with staged_dir(out_dir, overwrite=overwrite, marker=SIMULATION_MARKER) as staging:
        for i in range(config.n_images):
            image = simulate_image(config, i)
            name = f"sim_{i:0{digits}d}.tif"
            write_tiff(staging / "hr" / name, image.hr.astype(np.uint16), **kwargs)
            write_tiff(staging / "mito_mask" / name, image.mito_mask.astype(np.uint8), **kwargs)
            write_tiff(staging / "cristae_mask" / name, image.cristae_mask.astype(np.uint8), **kwargs)
            paths.append(out_dir / "hr" / name)
            params.append({"image": name, **image.params})
            if len(shown) < _MONTAGE_IMAGES:
                shown.append(image)
            if progress is not None:
                progress(1)
        config.to_yaml(staging / SIMULATION_MARKER)
        write_csv(staging / "parameters.csv", params)
        save_montage(shown, staging / "montage.png", config.pixel_size_nm)
    return paths


def _inset_box(mask: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the size×size window with the most mitochondria in it."""
    density = ndi.uniform_filter(mask.astype(np.float32), size, mode="constant")
    h, w = mask.shape
    half = size // 2
    inner = density[half : h - size + half + 1, half : w - size + half + 1]
    y, x = np.unravel_index(int(np.argmax(inner)), inner.shape)
    return int(y), int(x)


def save_montage(images: list[SimulatedImage], path: Path, pixel_size_nm: float) -> None:
    """One row per image: full view with mitochondria outlines, a zoomed inset, and the inset's cristae mask."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if not images:
        return
    fig = Figure(figsize=(15, 5 * len(images)), dpi=100)
    FigureCanvasAgg(fig)  # no pyplot: no global backend state, safe in any process
    axes = fig.subplots(len(images), 3, squeeze=False)
    bar_px = 1000.0 / pixel_size_nm  # 1 µm scale bar
    for row, image in zip(axes, images, strict=True):
        lo, hi = np.percentile(image.hr, [0.5, 99.8])
        size = min(128, *image.hr.shape)
        y, x = _inset_box(image.mito_mask, size)
        crop = (slice(y, y + size), slice(x, x + size))
        row[0].imshow(image.hr, cmap="gray", vmin=lo, vmax=hi)
        row[0].contour(image.mito_mask, levels=[0.5], colors="cyan", linewidths=0.5)
        row[0].add_patch(Rectangle((x - 0.5, y - 0.5), size, size, fill=False, edgecolor="yellow", linewidth=1))
        h, w = image.hr.shape
        row[0].plot([w * 0.05, w * 0.05 + bar_px], [h * 0.95] * 2, color="white", linewidth=3)
        widths = f"widths {np.mean(image.widths_px):.1f} px" if image.widths_px else "no mitochondria (empty field)"
        row[0].set_title(f"HR, mito fraction {image.mito_mask.mean():.2f}, {widths}")
        row[1].imshow(image.hr[crop], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        row[1].set_title("inset (yellow box)")
        row[2].imshow(image.hr[crop], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        overlay = np.zeros((size, size, 4), dtype=np.float32)
        overlay[image.cristae_mask[crop]] = (1.0, 0.0, 1.0, 0.6)
        row[2].imshow(overlay, interpolation="nearest")
        row[2].contour(image.mito_mask[crop], levels=[0.5], colors="cyan", linewidths=0.8)
        row[2].set_title("inset: cristae mask (magenta), mito outline (cyan)")
        for ax in row:
            ax.set_axis_off()
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
