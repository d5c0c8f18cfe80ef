"""Before/after preview PNG, diagonally split like the paper's Fig. 5c: raw bottom-left, restored top-right.

The picture is a maximum projection over z (of the middle time point) for z-stacks, else the middle plane. The raw
side is shown on the restored grid (rescaled the same way), each side with its own 1–99.8 % display range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cristae_zoo.acquisition import Acquisition
from cristae_zoo.io import atomic_path

MAX_EDGE = 1600  # px; larger projections are shrunk for the PNG
MIN_EDGE = 512  # px; smaller ones are enlarged


def preview_indices(acq: Acquisition) -> list[tuple[int, ...]]:
    """The planes the preview projects: every z of the middle time point, or the middle plane."""
    axes, sizes = acq.plane_axes, acq.sizes
    if not axes:
        return [()]
    t = sizes["T"] // 2 if "T" in axes else None
    if "Z" in axes:
        return [i for i in acq.plane_indices() if t is None or i[axes.index("T")] == t]
    return [(t,)]


def projection(acq: Acquisition, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Max projection of `preview_indices(acq)`, each plane resampled to `shape` if given."""
    from cristae_zoo.rescale import resample

    out: np.ndarray | None = None
    for plane in acq.iter_planes(preview_indices(acq)):
        if shape is not None:
            plane = resample(plane, shape)
        out = plane if out is None else np.maximum(out, plane)
    assert out is not None
    return out


def _display(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [1.0, 99.8])
    return np.clip((image - lo) / max(float(hi - lo), 1e-12), 0, 1)


def diagonal_split(raw: np.ndarray, restored: np.ndarray) -> np.ndarray:
    """One image: `raw` below the anti-diagonal (bottom-left), `restored` above it (top-right), in [0, 1]."""
    h, w = restored.shape
    yy, xx = np.mgrid[:h, :w]
    upper_right = (xx / max(w - 1, 1)) > (yy / max(h - 1, 1))
    return np.where(upper_right, _display(restored), _display(raw))


def save_preview(raw: np.ndarray, restored: np.ndarray, path: Path, title: str) -> Path:
    """Write the diagonally split preview PNG (magma colour map, labels in the corners)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cristae_zoo.rescale import resample

    split = diagonal_split(raw.astype(np.float32), restored.astype(np.float32))
    # Large projections are shrunk; small ones enlarged (so the labels fit), both by a whole image resize.
    scale = min(1.0, MAX_EDGE / max(split.shape)) if max(split.shape) > MIN_EDGE else MIN_EDGE / max(split.shape)
    if scale != 1:
        split = resample(split, (round(split.shape[0] * scale), round(split.shape[1] * scale)))
    h, w = split.shape
    dpi = 100
    fig = plt.figure(figsize=(w / dpi, (h + 40) / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, h / (h + 40)))
    ax.imshow(split, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    ax.plot([0, w - 1], [h - 1, 0], color="white", linewidth=1, alpha=0.8)
    style = {"color": "white", "fontsize": max(9, w // 70), "fontweight": "bold"}
    ax.text(0.02 * w, 0.97 * h, "raw", va="bottom", ha="left", **style)
    ax.text(0.98 * w, 0.03 * h, "restored", va="top", ha="right", **style)
    ax.set_axis_off()
    fig.text(0.5, 1 - 20 / (h + 40), title, ha="center", va="center", fontsize=max(8, min(12, w // 90)))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path
