"""PNG figures of the trust studies (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402
from skimage import measure  # noqa: E402

from cristae_zoo.plots import _display_range as _range  # noqa: E402
from cristae_zoo.plots import _save as save  # noqa: E402
from cristae_zoo.plots import profile_line  # noqa: E402


def densest_window(mask: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the size×size window with the most mask pixels."""
    h, w = mask.shape
    size = min(size, h, w)
    density = ndimage.uniform_filter(mask.astype(np.float32), size, mode="constant")
    half = size // 2
    inner = density[half : h - size + half + 1, half : w - size + half + 1]
    y, x = np.unravel_index(int(np.argmax(inner)), inner.shape)
    return int(y), int(x)


def plot_ensemble_image(
    panels: dict[str, np.ndarray],
    mean: np.ndarray,
    std: np.ndarray,
    mito: np.ndarray,
    path: Path,
    title: str,
    profiles: dict[str, np.ndarray] | None = None,
    crop: int = 192,
    profile_title: str = "line profiles (each training; GT black)",
) -> None:
    """Fig. 4g–k style: a few single predictions, the mean, the normalised standard-deviation map (own colour bar),
    and line profiles along a mitochondrion of every prediction (`profiles`, all K of them) and the GT."""
    a, b = profile_line(mito)
    h, w = mito.shape
    c = min(crop, h, w)
    cy, cx = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
    y0 = int(np.clip(cy - c / 2, 0, h - c))
    x0 = int(np.clip(cx - c / 2, 0, w - c))
    sl = (slice(y0, y0 + c), slice(x0, x0 + c))
    shown = {**panels, "mean": mean}
    n = len(shown) + 2
    fig, axes = plt.subplots(1, n, figsize=(2.9 * n, 3.3), constrained_layout=True)
    shared = _range(mean)  # predictions share the mean's display range; input and GT get their own
    for ax, (name, img) in zip(axes, shown.items()):
        vmin, vmax = _range(img) if name.lower() in ("input", "gt") else shared
        ax.imshow(img[sl], cmap="magma", vmin=vmin, vmax=vmax)
        ax.plot([a[1] - x0, b[1] - x0], [a[0] - y0, b[0] - y0], color="yellow", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    ax = axes[-2]
    im = ax.imshow(std[sl], cmap="viridis", vmin=0, vmax=max(float(np.percentile(std, 99.9)), 1e-6))
    ax.contour(mito[sl], levels=[0.5], colors="white", linewidths=0.4)
    ax.set_title("normalised sd", fontsize=9)
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax = axes[-1]
    for name, img in (profiles or {}).items():
        prof = measure.profile_line(img, a, b, linewidth=3, mode="reflect")
        is_gt = name.lower().startswith("gt")
        ax.plot(prof, color="black" if is_gt else None, lw=1.6 if is_gt else 0.8, alpha=1 if is_gt else 0.8,
                label=name if is_gt else None)  # fmt: skip
    ax.set(xlabel="position along the mitochondrion (px)", ylabel="intensity (GT-normalised)")
    ax.set_title(profile_title, fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    save(fig, path)


def plot_sweeps(
    sweeps: dict[str, dict],
    metrics: Sequence[str],
    path: Path,
    safe: dict[str, tuple[float, float] | None] | None = None,
) -> None:
    """One row per sweep (parameter → metric mean ± sd per method), one column per metric; the training value is a
    dashed vertical line, the safe range a green band.

    sweeps[name] = {"label": str, "values": [...], "train": float, "methods": {method: {metric: (means, sds)}}}"""
    rows = len(sweeps)
    fig, axes = plt.subplots(rows, len(metrics), figsize=(3.6 * len(metrics), 3.0 * rows), squeeze=False)
    for row, (name, sweep) in zip(axes, sweeps.items()):
        x = np.asarray(sweep["values"], dtype=float)
        for ax, metric in zip(row, metrics):
            for method, res in sweep["methods"].items():
                mean, sd = (np.asarray(v, dtype=float) for v in res[metric])
                style = dict(ls="--", color="grey") if method == "Input" else {}
                ax.errorbar(x, mean, yerr=sd, marker="o", ms=3, capsize=2, label=method, **style)
            ax.axvline(sweep["train"], color="black", ls=":", lw=1, label="training condition")
            band = (safe or {}).get(name)
            if band is not None:
                ax.axvspan(band[0], band[1], color="tab:green", alpha=0.12, label="safe range")
            ax.set(xlabel=sweep["label"], ylabel=metric)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)


def plot_gallery(rows: dict[str, dict[str, np.ndarray]], path: Path, title: str = "", same_range: bool = False) -> None:
    """A grid of crops: one row per case, one column per source (input, model outputs, GT)."""
    names = list(rows)
    cols = list(next(iter(rows.values())))
    fig, axes = plt.subplots(len(names), len(cols), figsize=(2.6 * len(cols), 2.7 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        ref = _range(rows[name][cols[-1]]) if same_range else None
        for c, col in enumerate(cols):
            ax = axes[r, c]
            img = rows[name].get(col)
            if img is not None:
                vmin, vmax = ref or _range(img)
                ax.imshow(img, cmap="magma", vmin=vmin, vmax=vmax)
            if r == 0:
                ax.set_title(col, fontsize=9)
            if c == 0:
                ax.text(-0.08, 0.5, name, transform=ax.transAxes, rotation=90, va="center", ha="right", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, path)


def plot_bars(table: dict[str, dict[str, tuple[float, float]]], metrics: Sequence[str], path: Path, title: str = "") -> None:
    """Grouped bars (mean ± sd) of a few metrics per method."""
    methods = list(table)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        means = [table[m][metric][0] for m in methods]
        sds = [table[m][metric][1] for m in methods]
        ax.bar(range(len(methods)), means, yerr=sds, capsize=3, color=[f"C{i}" for i in range(len(methods))])
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=9)
        finite = [m for m in means if np.isfinite(m)]
        if finite and not metric.startswith("PSNR"):
            lo = min(finite)
            ax.set_ylim(max(0, lo - 0.15 * abs(lo)), None)
        elif finite:
            ax.set_ylim(min(finite) - 2, None)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, path)
