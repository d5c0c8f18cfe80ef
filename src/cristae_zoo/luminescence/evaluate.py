"""The paper's readouts on held-out scenes, next to PSNR and SSIM: input vs restoration vs long exposure.

- mask MAE (Boothe et al., cytoplasmic NanoLuc): objects by Fiji's "Mean" auto threshold (above the image mean),
  objects ≤ 100 px removed; mean absolute difference between the candidate's and the ground truth's binary masks
  (a fraction of pixels; Fiji's SNR plugin on 8-bit masks reports 255× this);
- Pearson r in masks (H2B): ground-truth objects by the "Triangle" threshold, objects ≤ 5 px removed; Pearson
  correlation of raw intensities of candidate and ground truth inside them (Coloc2);
- PSNR and SSIM (`labelfree.evaluate.ssim`) against the ground truth normalised to 1/99.9 percentiles, after an
  affine least-squares fit of the candidate onto it (the candidates are in ADU or normalised units).
Ground truth is the simulator's noise-free scene (`gt/`); the long exposure (`long/`) is shown as a reference,
since it was the paper's ground truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cristae_zoo.core.history import training_run_markdown
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.labelfree.data import read_image
from cristae_zoo.labelfree.evaluate import fit_affine, normalise_target, pearson, ssim
from cristae_zoo.luminescence.modes import normalize, read_input
from cristae_zoo.luminescence.predict import predict_image

MEAN_MIN_OBJECT = 100  # px, objects must be larger (paper, cytoplasmic NanoLuc)
TRIANGLE_MIN_OBJECT = 5  # px (paper, H2B)
METHODS = {"input": "input", "restoration": "CARE restoration", "long": "long exposure (reference)"}


def objects(image: np.ndarray, threshold: float, min_object: int) -> np.ndarray:
    """Pixels above `threshold`, without connected objects of at most `min_object` px."""
    from skimage.morphology import remove_small_objects

    return remove_small_objects(np.asarray(image) > threshold, max_size=min_object)


def mean_mask(image: np.ndarray) -> np.ndarray:
    return objects(image, float(np.mean(image)), MEAN_MIN_OBJECT)


def triangle_mask(image: np.ndarray) -> np.ndarray:
    from skimage.filters import threshold_triangle

    return objects(image, float(threshold_triangle(np.asarray(image, np.float64))), TRIANGLE_MIN_OBJECT)


def mask_mae(candidate: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean(mean_mask(candidate) != mean_mask(gt)))


def pearson_in_mask(candidate: np.ndarray, gt: np.ndarray) -> float:
    mask = triangle_mask(gt)
    if not mask.any():
        raise CristaeZooError("ground truth has no object above its triangle threshold")
    return pearson(candidate[mask], gt[mask])


def psnr(candidate: np.ndarray, gt: np.ndarray) -> float:
    t = normalise_target(gt)
    mse = float(np.mean((fit_affine(candidate, t) - t) ** 2))
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def image_metrics(candidate: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    return {"psnr": psnr(candidate, gt), "ssim": ssim(candidate, gt), "mask_mae": mask_mae(candidate, gt),
            "pearson_in_mask": pearson_in_mask(candidate, gt)}  # fmt: skip


def evaluate(model: Any, config: Any, data_dir: Path, names: list[str], gt_dir: str = "gt",
             reference_dir: str = "long", tile: int | None = None) -> list[dict[str, Any]]:
    """One row per (image, method) on `names` (the model's test split, or the user's images)."""
    data_dir = Path(data_dir)
    rows = []
    for name in names:
        raw = read_input(data_dir / config.mode.input_dir / name, config.mode, config.network.ndim)
        gt = read_image(data_dir / gt_dir / name, config.network.ndim)
        if gt.shape != raw.shape:
            raise CristaeZooError(f"{data_dir / gt_dir / name}: ground truth {gt.shape} differs from the input {raw.shape}")
        candidates = {"input": raw, "restoration": predict_image(model, normalize(raw), config.network, tile=tile)[0]}
        if (data_dir / reference_dir / name).is_file():
            candidates["long"] = read_image(data_dir / reference_dir / name, config.network.ndim)
        for method, image in candidates.items():
            rows.append({"mode": config.mode.mode, "image": name, "method": method, **image_metrics(image, gt)})
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    out = {}
    for method in [m for m in METHODS if any(r["method"] == m for r in rows)]:
        sel = [r for r in rows if r["method"] == method]
        out[method] = {k: (float(np.mean([r[k] for r in sel])), float(np.std([r[k] for r in sel])))
                       for k in ("psnr", "ssim", "mask_mae", "pearson_in_mask")}  # fmt: skip
    return out


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    n = len({r["image"] for r in rows})
    lines = [f"Mode `{rows[0]['mode']}`, mean ± sd over {n} held-out scene(s); ground truth = noise-free scene.", "",
             "| | PSNR (dB) | SSIM | mask MAE | Pearson r in masks |", "|---|---|---|---|---|"]  # fmt: skip
    for method, v in summary(rows).items():
        cells = [f"{v[k][0]:.{d}f} ± {v[k][1]:.{d}f}" for k, d in (("psnr", 2), ("ssim", 3), ("mask_mae", 4), ("pearson_in_mask", 3))]
        lines.append(f"| {METHODS[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def training_markdown(model_dir: Path | None, config: Any) -> str:
    """The evaluated run's steps, wall time, budget and kept step (`core.history`); "" without a history."""
    return training_run_markdown(model_dir, config, loss=f"{config.loss} NLL")


def figure(model: Any, config: Any, name: str, dest: Path, data_dir: Path, gt_dir: str = "gt",
           reference_dir: str = "long") -> Path:
    """Middle plane of input | restoration (mean) | Laplace scale | long exposure | ground truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cristae_zoo.io import atomic_path

    data_dir = Path(data_dir)
    raw = read_input(data_dir / config.mode.input_dir / name, config.mode, config.network.ndim)
    mean, scale = predict_image(model, normalize(raw), config.network)
    panels = [("input", raw), ("restoration (mean)", mean), ("predicted scale (uncertainty)", scale)]
    if (data_dir / reference_dir / name).is_file():
        panels.append(("long exposure", read_image(data_dir / reference_dir / name, config.network.ndim)))
    gt = read_image(data_dir / gt_dir / name, config.network.ndim)
    panels.append(("ground truth", gt))
    mid = (lambda a: a[a.shape[0] // 2]) if raw.ndim == 3 else (lambda a: a)
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4))
    for ax, (title, img) in zip(axes, panels):
        lo, hi = np.percentile(mid(img), [1, 99.8])
        ax.imshow(mid(img), cmap="viridis" if "scale" in title else "magma", vmin=lo, vmax=hi)
        if title in ("input", "restoration (mean)", "long exposure"):
            m = image_metrics(img, gt)
            title += f"\nPSNR {m['psnr']:.1f}  r {m['pearson_in_mask']:.2f}  MAE {m['mask_mae']:.3f}"
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{config.mode.mode}: {name}, z = {raw.shape[0] // 2 if raw.ndim == 3 else 0}", fontsize=9)
    fig.tight_layout()
    with atomic_path(Path(dest)) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return Path(dest)
