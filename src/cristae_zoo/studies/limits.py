"""Limits of use (paper: Results "Robustness and stability", Supplementary Figs. 2a–b and 3).

A trained model is applied to the test images of its data set under conditions that leave the training ones:

- **mitochondrion width**: each test image (input, GT and masks together) is resampled so that the mean width of
  its mitochondria (measured on the mitochondria mask) takes each of `widths` (default 11 values, 6–30 px). This is
  what an image at another pixel size looks like: blur and noise grain scale with it;
- **blur**: the input is made again from the HR image with σ_blur in `blurs` (σ_noise at its training value);
- **noise**: the same with σ_noise in `noises` (σ_blur at its training value).

Blur and noise sweeps re-degrade the HR images (`--hr`, the `hr/` folder the data set was prepared from) with the
same per-image seeds as `cristae-zoo prepare`, so at the training values they reproduce the test inputs exactly;
the GT is unchanged. Each condition is evaluated with the metrics of `evaluate.py`, for the model and for the raw
input (a restoration that scores below its input has stopped helping), plus `cristae_band_vs_GT`: the along-axis
cristae-band energy of the restoration inside mitochondria (see `studies/hallucination.py`) over the GT's — below 1
cristae are lost, above 1 the restoration has more cristae-like modulation than the truth (artefacts).

**Safe range** of a parameter: the contiguous run of tested values around the training value where SSIM_mito and
SSIM_cristae stay within `tolerance` (relative, default 10 %) of their value at the training condition and the
model still beats the input on SSIM_mito. It is written as `conditions_of_use.md` into the model folder, and
`cristae-zoo package` puts it in the package README ("Conditions of use").
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage import morphology, transform

from cristae_zoo.config import DegradationConfig
from cristae_zoo.data.degrade import degrade, percentile_normalize
from cristae_zoo.data.mask import mitochondria_mask
from cristae_zoo.data.prepare import Pair, load_split
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.evaluate import COLUMNS, evaluate
from cristae_zoo.io import atomic_write_text, list_images, read_image_2d
from cristae_zoo.studies.common import Progress, markdown_table, model_and_test_data, write_csv
from cristae_zoo.studies.hallucination import axis_band_energy

TRAINING_WIDTH_PX = 15.64  # the paper's D_synt (and our simulator's mean)
DEFAULT_WIDTHS = tuple(float(w) for w in np.linspace(6.0, 30.0, 11))
DEFAULT_BLURS = (1.5, 2.0, 2.5, 3.25, 4.0, 4.5, 5.0, 6.0)
DEFAULT_NOISES = (0.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0)
SAFE_METRICS = ("SSIM_mito", "SSIM_cristae")
BAND_METRIC = "cristae_band_vs_GT"
METRICS = (*COLUMNS, BAND_METRIC)
PLOT_METRICS = ("PSNR", "SSIM_mito", "SSIM_cristae", BAND_METRIC)
CONDITIONS_FILE = "conditions_of_use.md"


def mean_width_px(mito: np.ndarray) -> float:
    """Mean mitochondrion width: twice the median distance from the skeleton to the outside of the mask. The median
    ignores the skeleton's spurs and tube ends; on simulated straight tubes of known width (6, 15.6, 30 px) it is
    within 0.3 px of the true width."""
    mito = np.asarray(mito, bool)
    if not mito.any():
        raise CristaeZooError("cannot measure a mitochondrion width: the mask is empty")
    skeleton = morphology.skeletonize(mito)
    edt = ndimage.distance_transform_edt(np.pad(mito, 1))[1:-1, 1:-1]
    return float(2 * np.median(edt[skeleton]))


def rescale_pair(pair: Pair, factor: float) -> Pair:
    """Input, GT and masks resampled by `factor` (bilinear, anti-aliased when shrinking; masks by nearest)."""

    def img(x: np.ndarray) -> np.ndarray:
        return transform.rescale(x.astype(np.float32), factor, order=1, preserve_range=True, anti_aliasing=factor < 1).astype(np.float32)

    def mask(m: np.ndarray | None) -> np.ndarray | None:
        if m is None:
            return None
        return transform.rescale(m.astype(np.float32), factor, order=1, preserve_range=True, anti_aliasing=False) > 0.5

    return Pair(pair.name, img(pair.input), img(pair.gt), mask(pair.mito_mask), mask(pair.cristae_mask))


def redegrade_pairs(pairs: list[Pair], hr_dir: Path, degradation: DegradationConfig, sigma_blur: float, sigma_noise: float) -> list[Pair]:
    """New inputs from the HR images with other σ_blur / σ_noise, with `prepare`'s per-image seeds."""
    names = [f.stem for f in list_images(hr_dir)]
    out = []
    for p in pairs:
        if p.name not in names:
            raise CristaeZooError(f"{hr_dir}: no HR image {p.name}.tif for the test image {p.name}")
        hr = read_image_2d(Path(hr_dir) / f"{p.name}.tif")
        rng = np.random.default_rng([degradation.seed, names.index(p.name)])
        out.append(Pair(p.name, degrade(hr, sigma_blur, sigma_noise, rng, degradation.hr_offset), p.gt, p.mito_mask, p.cristae_mask))
    return out


def _with_value(values: Sequence[float], train: float) -> list[float]:
    vals = sorted({round(float(v), 6) for v in values} | {round(float(train), 6)})
    return vals


def safe_range(
    values: Sequence[float], model: dict[str, list[float]], inp: dict[str, list[float]], train: float, tolerance: float
) -> tuple[float, float]:
    """The contiguous run of `values` around `train` where the model's SAFE_METRICS stay within `tolerance`
    (relative) of their training-condition values and the model beats the input on SSIM_mito."""
    values = list(values)
    i0 = int(np.argmin(np.abs(np.asarray(values) - train)))

    def ok(i: int) -> bool:
        for m in SAFE_METRICS:
            ref, v = model[m][i0], model[m][i]
            if np.isfinite(ref) and not (np.isfinite(v) and v >= ref - tolerance * abs(ref)):
                return False
        return model["SSIM_mito"][i] >= inp["SSIM_mito"][i]

    lo = hi = i0
    while lo - 1 >= 0 and ok(lo - 1):
        lo -= 1
    while hi + 1 < len(values) and ok(hi + 1):
        hi += 1
    return values[lo], values[hi]


@dataclass
class LimitsResult:
    output: Path
    sweeps: dict[str, dict]
    safe: dict[str, tuple[float, float]]
    summary_md: str
    conditions_md: str
    seconds: float
    measured_width_px: float


def run_limits(
    model_dir: Path,
    output: Path,
    data_dir: Path | None = None,
    hr_dir: Path | None = None,
    widths: Sequence[float] = DEFAULT_WIDTHS,
    blurs: Sequence[float] = DEFAULT_BLURS,
    noises: Sequence[float] = DEFAULT_NOISES,
    tolerance: float = 0.10,
    write_conditions: bool = True,
    log: Progress | None = None,
    progress: Callable[[int], None] | None = None,
) -> LimitsResult:
    from cristae_zoo.studies.figures import plot_sweeps

    t0 = time.perf_counter()
    model_dir, output = Path(model_dir), Path(output)
    cfg, data_dir, degradation, restore = model_and_test_data(model_dir, data_dir)
    pairs = load_split(data_dir, "test")
    masks = {p.name: p.mito_mask if p.mito_mask is not None else mitochondria_mask(p.input) for p in pairs}
    # An empty field (the broad simulator draws some) has no mitochondrion to measure a width or score _mito on
    pairs = [p for p in pairs if masks[p.name].any()]
    if not pairs:
        raise CristaeZooError(f"{data_dir}: no test image with mitochondria (the test split is empty or empty fields)")
    restorers = {"model": restore, "Input": lambda x: x}
    rows: list[dict] = []
    sweeps: dict[str, dict] = {}

    def run(kind: str, value: float, cond_pairs: list[Pair]) -> None:
        res = evaluate(cond_pairs, restorers, degradation)
        # Cristae-band energy along the mitochondria, relative to the GT's (1 = as much cristae-like modulation as
        # the truth; < 1 cristae lost; > 1 more than real: artefacts). Restorations are fitted to the GT's scale.
        band = {}
        for pair in cond_pairs:
            mito = pair.mito_mask if pair.mito_mask is not None else mitochondria_mask(pair.input)
            gt_energy = axis_band_energy(percentile_normalize(pair.gt, degradation.p_low, degradation.p_high), mito)
            for method in restorers:
                band[(method, pair.name)] = axis_band_energy(res.restored[method][pair.name], mito) / gt_energy
        for r in res.rows:
            r[BAND_METRIC] = band[(r["method"], r["image"])]
            rows.append({"sweep": kind, "value": value, **r})
        sweep = sweeps[kind]
        for method in restorers:
            for c in METRICS:
                vals = [r[c] for r in res.rows if r["method"] == method]
                sweep["methods"][method][c][0].append(float(np.nanmean(vals)))
                sweep["methods"][method][c][1].append(float(np.nanstd(vals)))
        if progress:
            progress(1)

    def new_sweep(kind: str, label: str, values: list[float], train: float) -> None:
        sweeps[kind] = {
            "label": label, "values": values, "train": train,
            "methods": {m: {c: ([], []) for c in METRICS} for m in restorers},
        }  # fmt: skip

    # Width: resample each image so that its own mean width becomes w.
    measured = {p.name: mean_width_px(masks[p.name]) for p in pairs}
    measured_mean = float(np.mean(list(measured.values())))
    width_values = _with_value(widths, measured_mean) if widths else []
    if width_values:
        new_sweep("width", "mean mitochondrion width (px)", width_values, measured_mean)
        for w in width_values:
            if log:
                log(f"width {w:.1f} px")
            run("width", w, [rescale_pair(p, w / measured[p.name]) if abs(w / measured[p.name] - 1) > 1e-6 else p for p in pairs])

    if hr_dir is not None:
        for kind, label, values, train in (
            ("blur", "σ_blur (px)", blurs, degradation.sigma_blur),
            ("noise", "σ_noise (Gaussian part)", noises, degradation.sigma_noise),
        ):
            if not values:
                continue
            vals = _with_value(values, train)
            new_sweep(kind, label, vals, train)
            for v in vals:
                if log:
                    log(f"{kind} {v:g}")
                sb, sn = (v, degradation.sigma_noise) if kind == "blur" else (degradation.sigma_blur, v)
                run(kind, v, redegrade_pairs(pairs, Path(hr_dir), degradation, sb, sn))
    elif log:
        log("no --hr folder: skipping the blur and noise sweeps")
    if not sweeps:
        raise CristaeZooError("nothing to sweep: give widths, or --hr with blurs / noises")

    safe = {}
    for kind, sw in sweeps.items():
        model = {c: sw["methods"]["model"][c][0] for c in METRICS}
        inp = {c: sw["methods"]["Input"][c][0] for c in METRICS}
        safe[kind] = safe_range(sw["values"], model, inp, sw["train"], tolerance)
        sw["tolerance"] = tolerance

    output.mkdir(parents=True, exist_ok=True)
    write_csv(output / "limits.csv", rows, ["sweep", "value", "method", "image", *METRICS])
    plot_sweeps(sweeps, PLOT_METRICS, output / "limits.png", safe)
    summary_md = limits_markdown(sweeps, safe)
    seconds = time.perf_counter() - t0
    conditions = conditions_markdown(model_dir, data_dir, sweeps, safe, tolerance, measured_mean, degradation, len(pairs))
    atomic_write_text(
        output / "summary.md",
        f"# Limits of use of `{model_dir}`\n\n{len(pairs)} test images with mitochondria of `{data_dir}` (measured mean mitochondrion"
        f" width {measured_mean:.2f} px); {seconds / 60:.1f} min.\n\n{summary_md}\n{conditions}",
    )
    atomic_write_text(output / CONDITIONS_FILE, conditions)
    if write_conditions:
        atomic_write_text(model_dir / CONDITIONS_FILE, conditions)
    return LimitsResult(output, sweeps, safe, summary_md, conditions, seconds, measured_mean)


def limits_markdown(sweeps: dict[str, dict], safe: dict[str, tuple[float, float]]) -> str:
    """Per sweep: value → model PSNR / SSIM_mito / SSIM_cristae (mean ± sd) and the input's SSIM_mito."""
    parts = []
    for kind, sw in sweeps.items():
        rows = []
        m, i = sw["methods"]["model"], sw["methods"]["Input"]
        lo, hi = safe[kind]
        for k, v in enumerate(sw["values"]):
            mark = " (training)" if abs(v - sw["train"]) < 1e-6 else ""
            rows.append([
                f"{v:.2f}{mark}",
                f"{m['PSNR'][0][k]:.2f} ± {m['PSNR'][1][k]:.2f}",
                f"{m['SSIM_mito'][0][k]:.3f} ± {m['SSIM_mito'][1][k]:.3f}",
                f"{m['SSIM_cristae'][0][k]:.3f} ± {m['SSIM_cristae'][1][k]:.3f}",
                f"{i['SSIM_mito'][0][k]:.3f}",
                f"{m[BAND_METRIC][0][k]:.2f} ± {m[BAND_METRIC][1][k]:.2f}",
                "yes" if lo - 1e-9 <= v <= hi + 1e-9 else "no",
            ])  # fmt: skip
        parts.append(
            f"**{sw['label']}** (training: {sw['train']:.2f}):\n\n"
            + markdown_table(
                ["value", "PSNR", "SSIM_mito", "SSIM_cristae", "input SSIM_mito", "cristae band / GT", "safe"], rows
            )
        )
    return "\n".join(parts)


def _why(sweep: dict, k: int, i0: int, tolerance: float = 0.10) -> str:
    """Why tested value k is outside the safe range: the metrics that dropped, or no gain over the input."""
    m, inp = sweep["methods"]["model"], sweep["methods"]["Input"]
    reasons = []
    for metric in SAFE_METRICS:
        ref, v = m[metric][0][i0], m[metric][0][k]
        if np.isfinite(ref) and np.isfinite(v) and v < ref - tolerance * abs(ref):
            reasons.append(f"{metric} {v:.3f} vs {ref:.3f} at training")
    if m["SSIM_mito"][0][k] < inp["SSIM_mito"][0][k]:
        reasons.append(f"no better than the raw input (SSIM_mito {m['SSIM_mito'][0][k]:.3f} vs {inp['SSIM_mito'][0][k]:.3f})")
    band = m.get(BAND_METRIC, ([],))[0]
    if len(band) > k and np.isfinite(band[k]):
        reasons.append(f"cristae-band energy {band[k]:.2f}× the GT's (training {band[i0]:.2f}×)")
    return "; ".join(reasons) or "quality dropped"


def _outside(sweep: dict, band: tuple[float, float], unit: str) -> str:
    values = list(sweep["values"])
    i0 = int(np.argmin(np.abs(np.asarray(values) - sweep["train"])))
    tol = sweep.get("tolerance", 0.10)
    parts = []
    lo_i, hi_i = values.index(band[0]), values.index(band[1])
    if lo_i > 0:
        parts.append(f"at {values[lo_i - 1]:.3g}{unit}: {_why(sweep, lo_i - 1, i0, tol)}")
    if hi_i < len(values) - 1:
        parts.append(f"at {values[hi_i + 1]:.3g}{unit}: {_why(sweep, hi_i + 1, i0, tol)}")
    return (" Just outside — " + "; ".join(parts) + ".") if parts else " (the whole tested range is safe.)"


def conditions_markdown(
    model_dir: Path,
    data_dir: Path,
    sweeps: dict[str, dict],
    safe: dict[str, tuple[float, float]],
    tolerance: float,
    measured_width: float,
    degradation: DegradationConfig,
    n_images: int,
) -> str:
    """The text of `conditions_of_use.md` (no top-level heading: the package README adds its own)."""
    rows = []
    names = {"width": "mean mitochondrion width", "blur": "blur σ_blur (Gaussian PSF)", "noise": "noise σ_noise (Gaussian part)"}
    units = {"width": " px", "blur": " px", "noise": ""}
    for kind, (lo, hi) in safe.items():
        sw = sweeps[kind]
        tested = f"{min(sw['values']):g}–{max(sw['values']):g}{units[kind]}"
        rng = f"{lo:.3g}–{hi:.3g}{units[kind]}"
        if kind == "width":
            rng += f" ({lo * 25:.0f}–{hi * 25:.0f} nm at 25 nm/px)"
        rows.append([names[kind], f"{sw['train']:.3g}{units[kind]}", rng, tested])
    table = markdown_table(["condition", "training", "safe range", "tested"], rows)
    lines = [
        f"Measured with `cristae-zoo study limits` on {datetime.date.today().isoformat()}: the model was applied to the"
        f" {n_images} held-out test images with mitochondria of `{data_dir}` after rescaling them (mitochondrion width)"
        " or re-degrading them (blur, noise). A value is *safe* if the restoration's SSIM on mitochondria and on"
        f" cristae stays within {tolerance:.0%} of its value at the training condition and still beats the raw input"
        " (SSIM on mitochondria); the range is the contiguous run of safe tested values around the training value.",
        "",
        table,
    ]
    if "width" in safe:
        lo, hi = safe["width"]
        lines.append(
            f"- **Rescale your image** so that mitochondria are {lo:.3g}–{hi:.3g} px wide (see *Rescale your image"
            f" first*); the training images measure {measured_width:.3g} px with this study's estimator (twice the"
            f" median skeleton-to-outline distance; the nominal training width is {TRAINING_WIDTH_PX} px)."
            + _outside(sweeps["width"], safe["width"], " px")
        )
    if "blur" in safe:
        lo, hi = safe["blur"]
        lines.append(
            f"- **Blur** (after rescaling): σ_blur {lo:.3g}–{hi:.3g} px (training {degradation.sigma_blur:g} px ="
            f" {degradation.sigma_blur * 2.3548 * 25:.0f} nm FWHM at 25 nm/px)." + _outside(sweeps["blur"], safe["blur"], " px")
        )
    if "noise" in safe:
        lo, hi = safe["noise"]
        lines.append(
            f"- **Noise**: Gaussian σ_noise {lo:.3g}–{hi:.3g} counts on top of the Poisson noise (training"
            f" {degradation.sigma_noise:g})." + _outside(sweeps["noise"], safe["noise"], "")
        )
    lines += [
        "- These ranges come from *simulated* test images and from one parameter at a time; on real data, check the"
        " restoration against a high-resolution image of the same sample, and look at the uncertainty map"
        " (`cristae-zoo predict --ensemble 8`).",
        "",
    ]
    return "\n".join(lines)
