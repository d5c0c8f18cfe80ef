"""The rescale factor that brings an acquisition to the scale DeepCristae was trained at, and the resampling.

The network saw mitochondria ~15.64 px wide (25 nm pixels); it does not adapt to other scales, so every plane is
resized by `factor` before restoration (factor > 1 enlarges). The factor comes from, in order of precedence:

- `--rescale FACTOR`;
- `--rescale auto`: the mean mitochondrion width measured in the image itself (`estimate_width`), factor =
  15.64 / width;
- `--pixel-size NM` or else the pixel size in the file's metadata: factor = pixel size / 25 nm.

The width is measured as one would with line profiles in Fiji, at half maximum, without drawing profiles:
mitochondria are found with the training pipeline's mask (Anscombe, z-score, threshold) for a first, rough width;
then, a few times over, the image is smoothed in proportion to the current width, objects clearly above the noise
are kept, each pixel is compared with half of its local ridge height above the background, and the width of each
object of that half-maximum mask is solved from its area, skeleton length and number of ends
(area = w·length + ends·π·w²/8: a tube with round caps). Tying every length scale to the width makes the estimate
of an image enlarged f times f times larger; thin objects are measured on an upsampled copy so that pixel rounding
does not dominate. Blur widens a tube's half-maximum profile, so one constant (`FWHM_TO_WIDTH`, measured on
simulated training inputs) maps the measured width to the mitochondrion width the training scale is defined by.
`benchmarks/estimator_check.py` reports the error on simulated images of known width shrunk 1.5–4×.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from cristae_zoo.errors import CristaeZooError

TRAINING_PIXEL_SIZE_NM = 25.0
TRAINING_WIDTH_PX = 15.64
#: Measured half-maximum width → mitochondrion width: on simulated training inputs (25 nm/px, σ_blur 3.25 px,
#: drawn widths 15.6 ± 4 px; seeds 100–104, not those of the check), shrunk 1–4×, the half-maximum width is
#: 1/0.705 of the drawn width, because the blur and the smoothing widen the profile of a tube only ~5 σ wide. It holds for images blurred like
#: the training inputs relative to their mitochondria; blurrier ones (e.g. defocus, a diffraction-limited PSF on
#: thin mitochondria) read wider, hence a smaller factor (`benchmarks/estimator_check.py --calibrate`).
FWHM_TO_WIDTH = 0.705
#: Below this width (px) the image is measured on an upsampled copy.
_THIN_PX = 10.0
_MAX_UPSAMPLE = 4


# ------------------------------------------------------------------------------------------------------ factor


@dataclass(frozen=True)
class Training:
    """The scale a package was trained at (from its rdf `config.cristae_zoo.rescale`)."""

    pixel_size_nm: float = TRAINING_PIXEL_SIZE_NM
    width_px: float = TRAINING_WIDTH_PX


def training_scale(descr: Any) -> Training:
    config = getattr(descr, "config", None) or {}
    config = config if isinstance(config, dict) else getattr(config, "model_extra", None) or {}
    rescale = (config.get("cristae_zoo") or {}).get("rescale") or {}
    return Training(
        pixel_size_nm=float(rescale.get("training_pixel_size_nm", TRAINING_PIXEL_SIZE_NM)),
        width_px=float(rescale.get("mitochondrion_width_px", TRAINING_WIDTH_PX)),
    )


@dataclass(frozen=True)
class RescaleChoice:
    factor: float
    source: str  # "--rescale", "auto", "--pixel-size", "metadata"
    width: WidthEstimate | None = None

    def describe(self) -> str:
        text = f"factor {self.factor:.3g} ({self.source}"
        if self.width is not None:
            text += f": mitochondria {self.width.mean:.2f} ± {self.width.sd:.2f} px wide"
        return text + ")"


#: Sane rescale factors, whatever their source: beyond them the acquisition is not at a scale the network can
#: be brought to (or, far more often, the pixel size is wrong: 72 dpi, a unit mix-up, nm given as µm).
MIN_FACTOR, MAX_FACTOR = 0.05, 50.0
#: Sane restored plane sides (px): below, no mitochondrion fits; above, one plane is > 16 GiB of float32.
MIN_PLANE_SIDE, MAX_PLANE_SIDE = 16, 65536


def parse_rescale(value: str | None) -> float | str | None:
    """`--rescale`: a positive number, `auto`, or None."""
    if value is None:
        return None
    if value.strip().lower() == "auto":
        return "auto"
    try:
        factor = float(value)
    except ValueError:
        raise CristaeZooError(f"--rescale {value}: expected a positive number or 'auto'") from None
    if not (math.isfinite(factor) and MIN_FACTOR <= factor <= MAX_FACTOR):
        raise CristaeZooError(f"--rescale {value}: expected a factor between {MIN_FACTOR:g} and {MAX_FACTOR:g} (or 'auto')")
    return factor


def check_factor(choice: RescaleChoice, *, name: str, plane_shape: tuple[int, int] | None = None,
                 origin: str = "") -> RescaleChoice:  # fmt: skip
    """`choice` if its factor and the restored plane it gives are sane, else a one-line `CristaeZooError` naming
    the factor, where it came from (`origin`: e.g. "the file's pixel size 352778 nm / 25 nm") and the fix."""
    f = choice.factor
    fixes = {
        "metadata": "the file's pixel size looks wrong: give the right one with --pixel-size NM, or --rescale FACTOR",
        "--pixel-size": "check the unit of --pixel-size (nanometres per pixel)",
        "--rescale": f"give a factor between {MIN_FACTOR:g} and {MAX_FACTOR:g}",
        "auto": "the mitochondria were not measurable: give --pixel-size NM or --rescale FACTOR",
    }
    why = f"{choice.source}{': ' + origin if origin else ''}"
    if not (math.isfinite(f) and MIN_FACTOR <= f <= MAX_FACTOR):
        raise CristaeZooError(
            f"{name}: rescale factor {f:.4g} ({why}) is outside {MIN_FACTOR:g}–{MAX_FACTOR:g}; {fixes[choice.source]}"
        )
    if plane_shape is not None:
        out = rescaled_shape(plane_shape, f)
        if min(out) < MIN_PLANE_SIDE or max(out) > MAX_PLANE_SIDE:
            raise CristaeZooError(
                f"{name}: rescale factor {f:.4g} ({why}) turns planes of {plane_shape[0]} × {plane_shape[1]} px into"
                f" {out[0]} × {out[1]} px, outside {MIN_PLANE_SIDE}–{MAX_PLANE_SIDE} px a side; {fixes[choice.source]}"
            )
    return choice


def choose_factor(
    rescale: float | str | None,
    pixel_size_nm: float | None,
    metadata_pixel_nm: tuple[float, float] | None,
    training: Training,
    *,
    name: str,
    estimate: Any = None,
    plane_shape: tuple[int, int] | None = None,
    metadata_note: str | None = None,
) -> RescaleChoice:
    """The rescale factor for one acquisition. `estimate()` returns a `WidthEstimate` (called for 'auto' only).

    Every factor is checked (`check_factor`): outside 0.05–50, or giving restored planes (`plane_shape` is the
    input plane, Y × X) under 16 or over 65536 px a side, it is a one-line error naming the value and its source,
    never a 1×1 or a 47 TiB output. `metadata_note` (`acquisition.pixel_size_note(acq)`) says why a file with a
    calibration counts as having no pixel size (e.g. a 72-dpi print resolution); it goes into the error."""
    train_px = training.pixel_size_nm
    if isinstance(rescale, float):
        return check_factor(RescaleChoice(rescale, "--rescale"), name=name, plane_shape=plane_shape)
    if rescale == "auto":
        width = estimate()
        choice = RescaleChoice(round(training.width_px / width.mean, 3), "auto", width)
        origin = f"mitochondria {width.mean:.3g} px wide, {training.width_px:g} expected"
        return check_factor(choice, name=name, plane_shape=plane_shape, origin=origin)
    if pixel_size_nm is not None:
        choice = RescaleChoice(round(pixel_size_nm / train_px, 4), "--pixel-size")
        origin = f"--pixel-size {pixel_size_nm:g} nm / {train_px:g} nm"
        return check_factor(choice, name=name, plane_shape=plane_shape, origin=origin)
    if metadata_pixel_nm is not None:
        px = math.sqrt(metadata_pixel_nm[0] * metadata_pixel_nm[1])
        choice = RescaleChoice(round(px / train_px, 4), "metadata")
        origin = f"the file's pixel size {px:.4g} nm / {train_px:g} nm"
        return check_factor(choice, name=name, plane_shape=plane_shape, origin=origin)
    why = f" ({metadata_note})" if metadata_note else ""
    raise CristaeZooError(
        f"{name}: no pixel size in the file's metadata{why}; give --pixel-size NM, --rescale FACTOR or --rescale auto"
        f" (the model expects {train_px:g} nm pixels, mitochondria {training.width_px} px wide)"
    )


# --------------------------------------------------------------------------------------------------- resampling


def rescaled_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


def resample(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of a float32 plane to `shape` (ImageJ's *Scale…* with *Bicubic* and *Average when
    downsizing*: the anti-aliasing filter is on when shrinking)."""
    if tuple(plane.shape) == tuple(shape):  # before the import: skimage costs ~0.3 s to import and is not needed
        return plane.astype(np.float32, copy=False)
    from skimage.transform import resize

    shrink = shape[0] < plane.shape[0] or shape[1] < plane.shape[1]
    out = resize(plane, shape, order=3, mode="reflect", anti_aliasing=shrink, preserve_range=True)
    return out.astype(np.float32, copy=False)


# ------------------------------------------------------------------------------------------------ width estimate


@dataclass(frozen=True)
class WidthEstimate:
    """Mitochondrion width (px) in an image: the length-weighted mean over objects and its spread."""

    mean: float
    sd: float  # spread between objects (length-weighted), the biological variation
    sem: float  # uncertainty of the mean
    n_objects: int
    n_planes: int
    per_plane: list[float] = field(default_factory=list)

    def factor(self, target: float = TRAINING_WIDTH_PX) -> float:
        return target / self.mean

    def factor_range(self, target: float = TRAINING_WIDTH_PX) -> tuple[float, float]:
        """The factor for mean ± 2 sem."""
        return target / (self.mean + 2 * self.sem), target / max(self.mean - 2 * self.sem, 1e-6)


@dataclass(frozen=True)
class ObjectWidths:
    widths: np.ndarray  # px, one per object
    lengths: np.ndarray  # skeleton length (px), the weight of each object


def object_widths(plane: np.ndarray, *, iterations: int = 3) -> ObjectWidths:
    """Widths (px, FWHM) of the mitochondria in one plane; empty arrays if none are found.

    A rough width from the training pipeline's mask sets the scale; then, `iterations` times, every length scale
    of the measurement (smoothing, ridge window, minimum object size) is tied to the current width, so that the
    estimate of an image enlarged by f is f times the estimate of the image (scale equivariance)."""
    from cristae_zoo.data.mask import mitochondria_mask

    image = np.asarray(plane, dtype=np.float32)
    empty = ObjectWidths(np.zeros(0), np.zeros(0))
    if image.ndim != 2 or min(image.shape) < 16 or float(image.max()) == float(image.min()):
        return empty
    mask = _clean(mitochondria_mask(image), min_area=30)
    if mask.sum() < 20 or mask.mean() > 0.9:
        return empty
    width = _area_over_length(mask)
    scale, work = 1.0, image
    for _ in range(iterations):
        if not width > 0:
            return empty
        k = float(np.clip(_THIN_PX / width, 1.0, _MAX_UPSAMPLE)) if width < _THIN_PX else 1.0
        if abs(k - scale) > 0.25 * scale:  # pixel rounding is large for thin objects: measure an upsampled copy
            scale = k
            work = ndi.zoom(image, scale, order=1, mode="nearest", grid_mode=True) if scale > 1 else image
        half = _level_masks(work, width * scale, (0.5,))[0.5]
        widths, lengths = _solve_widths(half, width * scale)
        if not len(widths):
            return empty
        width = float(np.average(widths, weights=lengths)) / scale
    return ObjectWidths(FWHM_TO_WIDTH * widths / scale, lengths / scale)


def _clean(mask: np.ndarray, min_area: float) -> np.ndarray:
    mask = ndi.binary_opening(mask)
    labels, n = ndi.label(mask)
    if not n:
        return mask
    sizes = ndi.sum_labels(mask, labels, index=np.arange(1, n + 1))
    return np.isin(labels, 1 + np.flatnonzero(sizes >= min_area))


def _area_over_length(mask: np.ndarray) -> float:
    from skimage.morphology import skeletonize

    length = _skeleton_length(skeletonize(mask))
    return float(mask.sum() / length) if length > 0 else 0.0


def _level_masks(image: np.ndarray, width: float, levels: tuple[float, ...] = (0.5,)) -> dict[float, np.ndarray]:
    """For each level ℓ: pixels above background + ℓ·(local ridge height − background), near objects detected
    above the noise (ℓ = 0.5: the half-maximum mask)."""
    from skimage.morphology import skeletonize

    smooth = ndi.gaussian_filter(image.astype(np.float32), 0.2 * width)  # noise, keeping the profile's half max
    background = float(np.median(smooth))  # most pixels are background
    below = smooth[smooth <= background]
    noise = float(np.sqrt(np.mean((below - background) ** 2))) if below.size > 10 else 0.0
    # Objects clearly above the noise, and not much dimmer than the brightest: dim, wide out-of-focus
    # mitochondria would otherwise count once the noise is low enough to see them (a bias that grows with SNR).
    top = float(np.percentile(smooth, 99.5))
    detected = _clean(smooth > background + max(3 * noise, 0.3 * (top - background)), min_area=width**2)
    if not detected.any():
        return {level: detected for level in levels}
    far = ~ndi.binary_dilation(detected, iterations=max(2, round(width)))
    if far.sum() > 100:  # the background away from every object, now that objects are known
        background = float(np.median(smooth[far]))
    ridge_px = skeletonize(detected)
    size = max(3, int(round(width / 2)) | 1)
    # The ridge height from a smoother copy: the maximum of a noisy image is biased up by the noise.
    ridge_value = ndi.maximum_filter(ndi.gaussian_filter(image.astype(np.float32), 0.35 * width), size=size)
    # Every pixel takes the ridge height of its nearest skeleton pixel: the local maximum of its mitochondrion.
    _, (iy, ix) = ndi.distance_transform_edt(~ridge_px, return_indices=True)
    ridge = ridge_value[iy, ix]
    near = ndi.binary_dilation(detected, iterations=max(1, round(width / 2)))
    masks = {}
    for level in levels:
        mask = near & (smooth > background + level * (ridge - background)) & (ridge > background)
        # Holes inside a tube (a dim matrix between bright membranes) belong to it; specks outside do not.
        mask = _fill_small_holes(mask, max_area=width**2)
        masks[level] = _clean(mask, min_area=level * width**2)
    return masks


def _fill_small_holes(mask: np.ndarray, max_area: float) -> np.ndarray:
    holes = ndi.binary_fill_holes(mask) & ~mask
    labels, n = ndi.label(holes)
    if not n:
        return mask
    sizes = ndi.sum_labels(holes, labels, index=np.arange(1, n + 1))
    return mask | np.isin(labels, 1 + np.flatnonzero(sizes <= max_area))


def _skeleton_length(skeleton: np.ndarray) -> float:
    """Length (px) of an 8-connected skeleton: orthogonal steps count 1, diagonal steps √2 (a diagonal step
    between two pixels that already touch through a shared orthogonal neighbour is not counted)."""
    s = skeleton.astype(bool)
    right = s[:, :-1] & s[:, 1:]
    down = s[:-1, :] & s[1:, :]
    d1 = s[:-1, :-1] & s[1:, 1:] & ~s[:-1, 1:] & ~s[1:, :-1]
    d2 = s[:-1, 1:] & s[1:, :-1] & ~s[:-1, :-1] & ~s[1:, 1:]
    return float(right.sum() + down.sum() + math.sqrt(2) * (d1.sum() + d2.sum()))


def _endpoints(skeleton: np.ndarray) -> np.ndarray:
    s = skeleton.astype(np.uint8)
    neighbours = ndi.convolve(s, np.ones((3, 3), np.uint8), mode="constant") - s
    return (s == 1) & (neighbours == 1)


def _solve_widths(half: np.ndarray, rough: float) -> tuple[np.ndarray, np.ndarray]:
    """Per object: w from area = w·length + ends·(π/8)·w² (a tube with round caps)."""
    from skimage.morphology import skeletonize

    # The skeleton of a smoothed outline: a noisy outline would sprout a branch at every bump, adding length.
    smooth = ndi.gaussian_filter(half.astype(np.float32), 0.25 * rough) > 0.5
    skeleton = skeletonize(smooth) & half
    ends = _endpoints(skeleton)
    labels, n = ndi.label(half, structure=np.ones((3, 3)))
    widths, lengths = [], []
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        obj = labels[box] == i
        length = _skeleton_length(skeleton[box] & obj)
        if length < 2:
            continue
        area = float(obj.sum())
        e = float((ends[box] & obj).sum())
        a = e * math.pi / 8
        w = area / length if a == 0 else (-length + math.sqrt(length**2 + 4 * a * area)) / (2 * a)
        if length >= w:  # blobs shorter than they are wide are not tubes: their width means nothing here
            widths.append(w)
            lengths.append(length)
    return np.asarray(widths, float), np.asarray(lengths, float)


def summarize(per_plane: list[ObjectWidths]) -> WidthEstimate:
    """Pool the objects of several planes into one `WidthEstimate` (weights: skeleton lengths)."""
    usable = [o for o in per_plane if len(o.widths)]
    if not usable:
        raise CristaeZooError("no mitochondria found to measure")
    w = np.concatenate([o.widths for o in usable])
    L = np.concatenate([o.lengths for o in usable])
    mean = float(np.average(w, weights=L))
    sd = float(math.sqrt(np.average((w - mean) ** 2, weights=L)))
    n_eff = float(L.sum() ** 2 / (L**2).sum())  # Kish's effective sample size of a weighted mean
    return WidthEstimate(
        mean=mean,
        sd=sd,
        sem=sd / math.sqrt(max(n_eff, 1.0)),
        n_objects=int(len(w)),
        n_planes=len(usable),
        per_plane=[float(np.average(o.widths, weights=o.lengths)) for o in usable],
    )


def estimate_width(planes: list[np.ndarray], *, name: str = "image") -> WidthEstimate:
    """The mean mitochondrion width (px) over `planes` (a few planes of one acquisition)."""
    try:
        return summarize([object_widths(p) for p in planes])
    except CristaeZooError:
        raise CristaeZooError(
            f"{name}: found no mitochondria to measure the width on ({len(planes)} plane(s) tried); give the"
            " factor with --rescale FACTOR or --pixel-size NM"
        ) from None


def pick_planes(acq: Any, n: int = 5) -> list[tuple[int, ...]]:
    """Up to `n` plane indices to measure: the middle time point's z planes with the most signal (and the
    first and last time points'), chosen from a thumbnail contrast so only the chosen planes are read whole."""
    indices = acq.plane_indices()
    if len(indices) <= n:
        return indices
    axes = acq.plane_axes
    sizes = acq.sizes
    times = sorted({0, sizes["T"] // 2, sizes["T"] - 1}) if "T" in axes else [None]
    candidates = [i for i in indices if "T" not in axes or i[axes.index("T")] in times]
    if len(candidates) > 4 * n:  # many z planes: consider every k-th
        step = math.ceil(len(candidates) / (4 * n))
        candidates = candidates[::step]
    scores = []
    with acq.open_array() as array:
        for idx in candidates:
            plane = acq.read_plane(array, idx)[::4, ::4]
            lo, hi = np.percentile(plane, [50, 99.5])
            scores.append(float(hi - lo) / (float(np.std(plane)) + 1e-6))
    order = np.argsort(scores)[::-1][:n]
    return sorted(candidates[i] for i in order)
