"""Pearson r and SSIM per structure and per test image, U-Net vs the trivial baseline (inverted, normalised TL).

Both metrics as in Hsu et al.: Pearson r on the raw values; SSIM (Eq. 2, c1 = (0.01 L)², c2 = (0.03 L)², L = 1)
after percentile-normalising the fluorescence to [0, 1] (1 / 99.9) and mapping each prediction onto it by an
affine least-squares fit (so the network, whose output is in z-score units, and the baseline are compared on the
same scale). SSIM uses scikit-image's `structural_similarity` (7×7 window).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cristae_zoo.core.history import training_run_markdown
from cristae_zoo.labelfree.data import Pair, load_pair


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel() - np.mean(a)
    b = np.asarray(b, np.float64).ravel() - np.mean(b)
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def normalise_target(target: np.ndarray, low: float = 1.0, high: float = 99.9) -> np.ndarray:
    lo, hi = np.percentile(target, [low, high])
    return ((target - lo) / max(hi - lo, 1e-6)).astype(np.float32)


def fit_affine(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    p = np.asarray(prediction, np.float64).ravel()
    a = np.stack([p, np.ones_like(p)], 1)
    coef, *_ = np.linalg.lstsq(a, np.asarray(target, np.float64).ravel(), rcond=None)
    return (coef[0] * prediction + coef[1]).astype(np.float32)


def ssim(prediction: np.ndarray, target: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    t = normalise_target(target)
    return float(structural_similarity(fit_affine(prediction, t), t, data_range=1.0))


def predict_image(model: Any, tl: np.ndarray, divisor: int) -> np.ndarray:
    """Normalised TL (*spatial) → (C, *spatial), reflect-padded to a multiple of `divisor` and cropped back."""
    pad = [(0, (-s) % divisor) for s in tl.shape]
    x = np.pad(tl, pad, mode="reflect")[None, ..., None]
    y = np.asarray(model(x, training=False))[0]
    y = y[tuple(slice(0, s) for s in tl.shape)]
    return np.moveaxis(y, -1, 0).astype(np.float32)


def baseline(tl: np.ndarray, n: int) -> np.ndarray:
    """The trivial baseline: the inverted, normalised TL image, for every structure."""
    return np.repeat(-tl[None], n, axis=0)


def evaluate(model: Any, config: Any, data_dir: Path, names: list[str]) -> list[dict[str, Any]]:
    """One row per (image, structure, method) on `names` (the test split of the training, or the user's pairs).

    Methods: `unet`; `baseline`, the inverted normalised TL; `tl`, the normalised TL itself (its Pearson r is minus
    the baseline's: whether structures look dark or bright in TL depends on the sign of the defocus).
    """
    rows = []
    for name in names:
        pair = load_pair(Path(data_dir), name, config.structures, config.network.ndim, min_size=2)
        for method, pred in (("unet", predict_image(model, pair.tl, config.network.divisor)),
                             ("baseline", baseline(pair.tl, len(config.structures))),
                             ("tl", -baseline(pair.tl, len(config.structures)))):
            for c, s in enumerate(config.structures):
                rows.append({"image": name, "structure": s, "method": method,
                             "pearson_r": pearson(pred[c], pair.targets[c]), "ssim": ssim(pred[c], pair.targets[c])})
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, tuple[float, float]]]:
    out: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    for key in sorted({(r["structure"], r["method"]) for r in rows}):
        sel = [r for r in rows if (r["structure"], r["method"]) == key]
        out[key] = {m: (float(np.mean([r[m] for r in sel])), float(np.std([r[m] for r in sel]))) for m in ("pearson_r", "ssim")}
    return out


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    n = len({r["image"] for r in rows})
    lines = [f"Mean ± sd over {n} test image(s).", "", "| structure | method | Pearson r | SSIM |", "|---|---|---|---|"]
    for (s, m), v in summary(rows).items():
        name = {"unet": "U-Net", "baseline": "inverted TL (baseline)", "tl": "TL as is (sign check)"}[m]
        lines.append(f"| {s} | {name} | {v['pearson_r'][0]:.3f} ± {v['pearson_r'][1]:.3f} | {v['ssim'][0]:.3f} ± {v['ssim'][1]:.3f} |")
    return "\n".join(lines) + "\n"


def training_markdown(model_dir: Path | None, config: Any) -> str:
    """The evaluated run's steps, wall time, budget and kept step (`core.history`); "" without a history."""
    return training_run_markdown(model_dir, config, loss="MSE", val_loss="validation MSE")


def figure(model: Any, config: Any, pair: Pair, dest: Path) -> Path:
    """TL | prediction | fluorescence, one row per structure (3D: the middle plane)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cristae_zoo.io import atomic_path

    structures = config.structures
    pred = predict_image(model, pair.tl, config.network.divisor)
    mid = (lambda a: a[a.shape[0] // 2]) if pair.tl.ndim == 3 else (lambda a: a)
    fig, axes = plt.subplots(len(structures), 3, figsize=(9, 3 * len(structures)), squeeze=False)
    for c, s in enumerate(structures):
        t = normalise_target(pair.targets[c])
        for ax, img, title in ((axes[c, 0], mid(pair.tl), "transmitted light"),
                               (axes[c, 1], mid(fit_affine(pred[c], t)), f"U-Net prediction ({s})"),
                               (axes[c, 2], mid(t), f"fluorescence ({s})")):
            lo, hi = np.percentile(img, [1, 99.8])
            ax.imshow(img, cmap="gray" if title.startswith("trans") else "magma", vmin=lo, vmax=hi)
            ax.set_title(f"{title}\nr = {pearson(pred[c], pair.targets[c]):.2f}" if "U-Net" in title else title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    with atomic_path(Path(dest)) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(dest)
