"""Evaluation with the paper's metrics (NRMSE, PSNR, SSIM; whole image, `_mito` and `_cristae` pixels) and
the conventional baselines (input, 2D median, Wiener, Richardson–Lucy) on the same test images.

Scale: the GT is percentile-normalised (2, 99.8); every restoration is then mapped onto it by the affine
least-squares fit CSBDeep uses for CARE (`normalize_minmse`), so that methods whose outputs live on different
intensity scales are compared on structure, not on gain and offset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage import metrics, restoration

from cristae_zoo.config import DegradationConfig
from cristae_zoo.data.degrade import gaussian_psf, percentile_normalize, richardson_lucy
from cristae_zoo.data.mask import mitochondria_mask
from cristae_zoo.data.prepare import Pair

Restorer = Callable[[np.ndarray], np.ndarray]
METRICS = ("NRMSE", "PSNR", "SSIM")
REGIONS = ("", "_mito", "_cristae")
COLUMNS = tuple(m + r for r in REGIONS for m in METRICS)


def fit_affine(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """α·prediction + β with α, β minimising ‖target − (α·prediction + β)‖² (CSBDeep's normalize_minmse)."""
    p = prediction.astype(np.float64).ravel()
    t = target.astype(np.float64).ravel()
    var = np.var(p)
    alpha = np.cov(p, t, bias=True)[0, 1] / var if var > 0 else 0.0
    beta = t.mean() - alpha * p.mean()
    return (alpha * prediction + beta).astype(np.float32)


def image_metrics(
    gt: np.ndarray, restored: np.ndarray, mito: np.ndarray | None, cristae: np.ndarray | None
) -> dict[str, float]:
    """The nine metrics of Fig. 2b for one image (GT already normalised, restoration fitted to it)."""
    data_range = float(gt.max() - gt.min())
    _, ssim_map = metrics.structural_similarity(
        gt, restored, data_range=data_range, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True
    )
    out: dict[str, float] = {}
    for region, mask in zip(REGIONS, (np.ones(gt.shape, bool), mito, cristae)):
        if mask is None or not mask.any():
            out.update({m + region: float("nan") for m in METRICS})
            continue
        g, r = gt[mask], restored[mask]
        out["NRMSE" + region] = float(metrics.normalized_root_mse(g, r))
        out["PSNR" + region] = float(metrics.peak_signal_noise_ratio(g, r, data_range=data_range))
        out["SSIM" + region] = float(ssim_map[mask].mean())
    return out


# Conventional baselines. Parameters are fixed, documented choices (the paper's Supplementary Note 2.2
# is not in our seed text): the RL/Wiener PSF is the known degradation blur.
def median_baseline(size: int = 5) -> Restorer:
    return lambda x: ndimage.median_filter(x, size=size)


def wiener_baseline(sigma_blur: float, balance: float = 0.05) -> Restorer:
    psf = gaussian_psf(sigma_blur)
    return lambda x: restoration.wiener(percentile_normalize(x), psf, balance=balance, clip=False)


def rl_baseline(sigma_blur: float, iterations: int = 20) -> Restorer:
    return lambda x: richardson_lucy(x, sigma_blur, iterations)


def baselines(degradation: DegradationConfig) -> dict[str, Restorer]:
    return {
        "Input": lambda x: x,
        "Median 2D": median_baseline(),
        "Wiener": wiener_baseline(degradation.sigma_blur),
        "RL": rl_baseline(degradation.sigma_blur),
    }


def padded_restorer(run: Callable[[np.ndarray], np.ndarray], degradation: DegradationConfig, divisor: int) -> Restorer:
    """Percentile-normalise, pad (reflect) to a multiple of `divisor`, `run` on the padded (Y, X) plane, crop."""

    def restore(x: np.ndarray) -> np.ndarray:
        xn = percentile_normalize(x, degradation.p_low, degradation.p_high)
        h, w = xn.shape
        ph, pw = (-h) % divisor, (-w) % divisor
        return np.asarray(run(np.pad(xn, ((0, ph), (0, pw)), mode="reflect")))[:h, :w]

    return restore


def keras_restorer(model, degradation: DegradationConfig, divisor: int) -> Restorer:
    """A channels-last Keras model as a `padded_restorer`."""

    def run(padded: np.ndarray) -> np.ndarray:
        y = model.predict(padded[None, ..., None], verbose=0)
        y = y["output"] if isinstance(y, dict) else y
        return np.asarray(y)[0, ..., 0]

    return padded_restorer(run, degradation, divisor)


@dataclass
class Evaluation:
    rows: list[dict]  # one per (method, image)
    restored: dict[str, dict[str, np.ndarray]]  # method → image name → restored (fitted to GT)

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        """method → metric → (mean, sd) over test images."""
        out: dict[str, dict[str, tuple[float, float]]] = {}
        for method in dict.fromkeys(r["method"] for r in self.rows):
            vals = [r for r in self.rows if r["method"] == method]
            out[method] = {c: (float(np.nanmean([v[c] for v in vals])), float(np.nanstd([v[c] for v in vals]))) for c in COLUMNS}
        return out


def evaluate(
    pairs: list[Pair],
    restorers: dict[str, Restorer],
    degradation: DegradationConfig,
    progress: Callable[[int], None] | None = None,
) -> Evaluation:
    rows, restored = [], {m: {} for m in restorers}
    for pair in pairs:
        gt = percentile_normalize(pair.gt, degradation.p_low, degradation.p_high)
        # Without exact masks (real data), the mitochondria mask comes from the paper's procedure on the GT.
        mito = pair.mito_mask if pair.mito_mask is not None else mitochondria_mask(pair.input)
        for method, restore in restorers.items():
            r = fit_affine(restore(pair.input), gt)
            restored[method][pair.name] = r
            rows.append({"method": method, "image": pair.name, **image_metrics(gt, r, mito, pair.cristae_mask)})
            if progress:
                progress(1)
    return Evaluation(rows, restored)


def summary_markdown(summary: dict[str, dict[str, tuple[float, float]]]) -> str:
    """Metrics table (mean ± sd), best value per column in bold (lowest NRMSE, highest PSNR/SSIM)."""
    methods = list(summary)
    best = {}
    for c in COLUMNS:
        vals = {m: summary[m][c][0] for m in methods if np.isfinite(summary[m][c][0])}
        if vals:
            best[c] = (min if c.startswith("NRMSE") else max)(vals, key=vals.get)
    lines = ["| method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for m in methods:
        cells = []
        for c in COLUMNS:
            mean, sd = summary[m][c]
            cell = "n/a" if not np.isfinite(mean) else f"{mean:.3f} ± {sd:.3f}" if not c.startswith("PSNR") else f"{mean:.2f} ± {sd:.2f}"
            cells.append(f"**{cell}**" if best.get(c) == m else cell)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
