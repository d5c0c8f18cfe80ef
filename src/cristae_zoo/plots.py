"""PNG figures for results people look at: loss curves, patch locations, restorations with line profiles."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from skimage import measure, morphology  # noqa: E402

from cristae_zoo.io import atomic_path  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def _display_range(image: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(image, [0.5, 99.8])
    return float(lo), float(hi if hi > lo else lo + 1)


def plot_loss_curve(history_csv: Path, path: Path, title: str = "loss") -> None:
    """Training and validation loss against the training step (older histories: against the epoch)."""
    with open(history_csv) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    by_step = "step" in rows[0]
    xs = [int(r["step"]) if by_step else int(r["epoch"]) + 1 for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(xs, [float(r["loss"]) for r in rows], label="training")
    ax.plot(xs, [float(r["val_loss"]) for r in rows], label="validation")
    val = np.array([float(r["val_loss"]) for r in rows])
    if np.isfinite(val).any():
        best = int(np.nanargmin(np.where(np.isfinite(val), val, np.nan)))
        ax.axvline(xs[best], color="grey", ls=":", label=f"best ({'step' if by_step else 'epoch'} {xs[best]})")
    ax.set(xlabel="step" if by_step else "epoch", ylabel=title, title=title)
    ax.legend()
    _save(fig, path)


def plot_patch_overview(items: list, patch_size: int, path: Path) -> None:
    """Each item: ((input, gt, mask), centres). Mask outline in yellow, patches as boxes."""
    n = max(1, len(items))
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    for ax, ((_, gt, mask), centres) in zip(axes[0], items):
        ax.imshow(gt, cmap="magma", vmin=0, vmax=1)
        ax.contour(mask, levels=[0.5], colors="yellow", linewidths=0.5)
        half = patch_size // 2
        for y, x in centres:
            ax.add_patch(plt.Rectangle((x - half, y - half), patch_size, patch_size, fill=False, ec="cyan", lw=0.8))
        ax.set_axis_off()
    fig.suptitle("GT, mitochondria mask (yellow) and sampled patches (cyan)")
    _save(fig, path)


def profile_line(mito: np.ndarray, length: int = 64) -> tuple[tuple[float, float], tuple[float, float]]:
    """A line of `length` px along the axis of a mitochondrion: centred on the skeleton point with the
    straightest neighbourhood, oriented along the local skeleton direction (principal axis)."""
    skeleton = morphology.skeletonize(mito)
    pts = np.argwhere(skeleton)
    h, w = mito.shape
    best, best_score = None, -np.inf
    rng = np.random.default_rng(0)
    for c in pts[rng.permutation(len(pts))[:300]]:
        near = pts[np.sum((pts - c) ** 2, axis=1) <= (length / 2) ** 2]
        if len(near) < length * 0.6:
            continue
        ev, evec = np.linalg.eigh(np.cov((near - c).T))
        d = evec[:, 1]
        a, b = c - d * length / 2, c + d * length / 2
        if min(a.min(), b.min()) < 0 or max(a[0], b[0]) >= h or max(a[1], b[1]) >= w:
            continue
        score = ev[1] / (ev[0] + 1e-6)  # elongated = straight
        if score > best_score:
            best, best_score = (tuple(a), tuple(b)), score
    if best is None:
        return (h / 2, w / 4), (h / 2, 3 * w / 4)
    return best


def plot_restoration(
    images: dict[str, np.ndarray], mito: np.ndarray, path: Path, title: str = "", crop: int = 160
) -> None:
    """Panels (e.g. input / restored / GT) cropped around a line profile along a mitochondrion, and the
    normalised intensity profiles (as in the paper's Fig. 3)."""
    a, b = profile_line(mito)
    h, w = mito.shape
    cy, cx = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
    y0 = int(np.clip(cy - crop / 2, 0, max(0, h - crop)))
    x0 = int(np.clip(cx - crop / 2, 0, max(0, w - crop)))
    n = len(images)
    fig, axes = plt.subplots(1, n + 1, figsize=(3.1 * (n + 1), 3.3))
    for ax, (name, img) in zip(axes, images.items()):
        vmin, vmax = _display_range(img)
        ax.imshow(img[y0 : y0 + crop, x0 : x0 + crop], cmap="magma", vmin=vmin, vmax=vmax)
        ax.plot([a[1] - x0, b[1] - x0], [a[0] - y0, b[0] - y0], color="yellow", lw=1)
        ax.set_title(name)
        ax.set_axis_off()
        prof = measure.profile_line(img, a, b, linewidth=3, mode="reflect")
        lo, hi = prof.min(), prof.max()
        axes[-1].plot((prof - lo) / (hi - lo if hi > lo else 1), label=name)
    axes[-1].set(xlabel="position along the line (px)", ylabel="normalised intensity", title="line profile")
    axes[-1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_rl_sweep(crops: dict[int, np.ndarray], scores: dict[str, list[float]], chosen: int, path: Path) -> None:
    """RL iterations: image crops and the two quantities traded off (cristae contrast vs background speckle)."""
    n = len(crops)
    fig, axes = plt.subplots(1, n + 1, figsize=(2.8 * (n + 1), 3.1))
    for ax, (it, crop) in zip(axes, crops.items()):
        vmin, vmax = _display_range(crop)
        ax.imshow(crop, cmap="magma", vmin=vmin, vmax=vmax)
        label = "HR (raw)" if it == 0 else f"{it} iterations" + (" (default)" if it == chosen else "")
        ax.set_title(label, fontsize=9)
        ax.set_axis_off()
    its = [it for it in crops if it > 0]
    ax = axes[-1]
    for label, values in scores.items():
        ax.plot(its, values, marker="o", label=label)
    ax.axvline(chosen, color="grey", ls=":")
    ax.set(xlabel="RL iterations", xscale="log")
    ax.legend(fontsize=7)
    _save(fig, path)
