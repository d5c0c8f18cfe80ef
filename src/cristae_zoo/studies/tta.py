"""Is the uncertainty map informative? Test-time augmentation (the 8 dihedral transforms) of a model on the test
images, against the ground truth.

Per test image: the single prediction and the TTA mean are evaluated with the metrics of `evaluate.py` (both fitted
to the GT like every restoration), and the TTA standard deviation is compared with the actual error of the TTA
mean, |mean − GT|: Spearman rank correlation over the mitochondria pixels, and the error in the top 10 % most
uncertain mitochondria pixels relative to the error in the other 90 %. A useful map puts its high values where the
restoration is wrong (correlation > 0, ratio > 1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from cristae_zoo.data.degrade import percentile_normalize
from cristae_zoo.data.mask import mitochondria_mask
from cristae_zoo.data.prepare import load_split
from cristae_zoo.evaluate import COLUMNS, fit_affine, image_metrics
from cristae_zoo.io import atomic_write_text, write_tiff
from cristae_zoo.studies.common import Progress, fmt, markdown_table, model_and_test_data, write_csv
from cristae_zoo.uncertainty import dihedral_inverse, predict_with_uncertainty


@dataclass
class TTAResult:
    output: Path
    table_md: str
    rows: list[dict]
    seconds: float


def run_tta_check(
    model_dir: Path, output: Path, data_dir: Path | None = None, n_transforms: int = 8, log: Progress | None = None, progress=None
) -> TTAResult:
    from cristae_zoo.studies.figures import plot_ensemble_image

    t0 = time.perf_counter()
    model_dir, output = Path(model_dir), Path(output)
    cfg, data_dir, degradation, restore = model_and_test_data(model_dir, data_dir)
    rows = []
    for k, pair in enumerate(load_split(data_dir, "test")):
        gt = percentile_normalize(pair.gt, degradation.p_low, degradation.p_high)
        mito = pair.mito_mask if pair.mito_mask is not None else mitochondria_mask(pair.input)
        preds: list[np.ndarray] = []  # in the frame of each transformed input

        def keep(x: np.ndarray) -> np.ndarray:
            y = restore(x)
            preds.append(y)
            return y

        mean, std = predict_with_uncertainty(keep, pair.input, "tta", n_transforms=n_transforms)
        single = fit_affine(preds[0], gt)  # transform 0 is the identity
        fitted = fit_affine(mean, gt)
        # the sd in GT units: the same affine gain as the mean's fit
        gain = float(np.polyfit(mean.ravel(), fitted.ravel(), 1)[0])
        std_gt = std * abs(gain)
        err = np.abs(fitted - gt)
        rho = float(stats.spearmanr(std_gt[mito], err[mito]).statistic)
        top = std_gt[mito] >= np.percentile(std_gt[mito], 90)
        ratio = float(err[mito][top].mean() / max(err[mito][~top].mean(), 1e-12))
        m_single = image_metrics(gt, single, mito, pair.cristae_mask)
        m_tta = image_metrics(gt, fitted, mito, pair.cristae_mask)
        rows.append({
            "image": pair.name, "spearman_sd_vs_error_mito": rho, "error_ratio_top10_sd": ratio,
            "mean_sd_mito": float(std_gt[mito].mean()), "mean_sd_background": float(std_gt[~mito].mean()),
            **{f"single_{c}": m_single[c] for c in COLUMNS}, **{f"tta_{c}": m_tta[c] for c in COLUMNS},
        })  # fmt: skip
        write_tiff(output / f"{pair.name}_tta_mean.tif", fitted)
        write_tiff(output / f"{pair.name}_tta_std.tif", std_gt)
        if k < 2:
            plot_ensemble_image(
                {"input": percentile_normalize(pair.input), "no TTA": single, "GT": gt}, fitted, std_gt, mito,
                output / f"{pair.name}_tta.png", title=f"{pair.name}: {model_dir.name}, mean and sd of {n_transforms} dihedral transforms",
                profiles={f"t{i}": fit_affine(dihedral_inverse(p, i), gt) for i, p in enumerate(preds)} | {"GT": gt},
                profile_title="line profiles (each transform; GT black)",
            )  # fmt: skip
        if progress:
            progress(1)
    seconds = time.perf_counter() - t0
    write_csv(output / "tta.csv", rows)

    def ms(key: str) -> tuple[float, float]:
        v = np.array([r[key] for r in rows], float)
        return float(np.nanmean(v)), float(np.nanstd(v))

    table = markdown_table(
        ["", *(c for c in ("PSNR", "SSIM_mito", "SSIM_cristae"))],
        [[label, *(fmt(*ms(f"{p}_{c}"), c) for c in ("PSNR", "SSIM_mito", "SSIM_cristae"))] for p, label in (("single", "one prediction"), ("tta", f"mean of {n_transforms} transforms"))],
    )  # fmt: skip
    rho, ratio = ms("spearman_sd_vs_error_mito"), ms("error_ratio_top10_sd")
    sd_m, sd_b = ms("mean_sd_mito"), ms("mean_sd_background")
    text = "\n".join(
        [
            f"# Test-time augmentation of `{model_dir}`",
            "",
            f"{len(rows)} test images of `{data_dir}`; {seconds / 60:.1f} min.",
            "",
            table,
            f"- sd (GT units) in mitochondria {sd_m[0]:.4f} ± {sd_m[1]:.4f}, in the background {sd_b[0]:.4f} ± {sd_b[1]:.4f}.",
            f"- Spearman correlation of the sd with the actual error |TTA mean − GT| over mitochondria pixels:"
            f" {rho[0]:.3f} ± {rho[1]:.3f}.",
            f"- Mean error in the 10 % most uncertain mitochondria pixels / in the rest: {ratio[0]:.2f} ± {ratio[1]:.2f}.",
            "",
        ]
    )
    atomic_write_text(output / "summary.md", text)
    return TTAResult(output, text, rows, seconds)
