"""Evaluation as in the paper: PSNR and SSIM against the HR frame, and SNR = (I_max − μ_bg)/σ_bg, for bilinear 4×
upsampling of the LR input, PSSR-SF and PSSR-MF on the same held-out movies (every frame; MF mirrors at the ends).

The background for the SNR is every pixel farther than `BACKGROUND_MARGIN` HR px from a mitochondrion of the
simulation's ground-truth mask. PSNR/SSIM use scikit-image with data_range 1 on the HR movie's [0, 1] scale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from scipy import ndimage as ndi

from cristae_zoo.core.history import training_run
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.pssr.data import load_hr_movie, normalize_frames

BACKGROUND_MARGIN = 4


def bilinear(lr: np.ndarray, scale: int) -> np.ndarray:
    """Bilinear ×scale of the last two axes (half-pixel centres, edge clamped: TF's and torch's bilinear resize)."""
    from skimage.transform import resize

    shape = lr.shape[:-2] + tuple(scale * s for s in lr.shape[-2:])
    return resize(lr, shape, order=1, mode="edge", anti_aliasing=False).astype(np.float32)


def snr(image: np.ndarray, background: np.ndarray) -> float:
    """(I_max − μ_bg) / σ_bg (the paper's SNR; background = boolean mask)."""
    bg = image[background]
    return float((image.max() - bg.mean()) / max(bg.std(), 1e-12))


def background_mask(mask: np.ndarray, margin: int = BACKGROUND_MARGIN) -> np.ndarray:
    return ~ndi.binary_dilation(mask, iterations=margin)


def frame_metrics(pred: np.ndarray, hr: np.ndarray, background: np.ndarray) -> dict[str, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    pred = np.asarray(pred, np.float64)
    hr = np.asarray(hr, np.float64)
    return {"psnr": float(peak_signal_noise_ratio(hr, np.clip(pred, 0, 1), data_range=1.0)),
            "ssim": float(structural_similarity(hr, pred, data_range=1.0)), "snr": snr(pred, background)}  # fmt: skip


def restore_all(data_dir: Path, names: list[str], models: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """{movie: {"hr", "lr", "mask", "bilinear", <model name>...}} for every movie in `names`."""
    from cristae_zoo.pssr.predict import predict_movie

    out = {}
    for name in names:
        hr = load_hr_movie(data_dir / "hr" / name)
        lr = np.asarray(tifffile.imread(data_dir / "lr" / name), np.float32)
        mask = np.asarray(tifffile.imread(data_dir / "mask" / name)) > 0
        scale = hr.shape[-1] // lr.shape[-1]
        movie = {"hr": hr, "lr": lr, "mask": mask, "bilinear": bilinear(normalize_frames(lr), scale)}
        for key, (model, cfg) in models.items():
            movie[key] = predict_movie(model, lr, cfg.network, str(data_dir / "lr" / name))
        out[name] = movie
    return out


def evaluate(restored: dict[str, dict[str, np.ndarray]], methods: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name, movie in restored.items():
        for t in range(len(movie["hr"])):
            bg = background_mask(movie["mask"][t])
            for method in methods:
                m = frame_metrics(movie[method][t], movie["hr"][t], bg)
                rows.append({"movie": name, "frame": t, "method": method, **m})
            # the ground truth's own SNR, for reference (PSNR/SSIM against itself are meaningless)
            rows.append({"movie": name, "frame": t, "method": "hr", "psnr": float("nan"), "ssim": float("nan"),
                         "snr": snr(movie["hr"][t], bg)})  # fmt: skip
    return rows


def summary_markdown(rows: list[dict[str, Any]], labels: dict[str, str]) -> str:
    n_movies = len({r["movie"] for r in rows})
    n_frames = len({(r["movie"], r["frame"]) for r in rows})
    lines = [f"Mean ± sd over {n_frames} frames of {n_movies} held-out simulated movies.", "",
             "| method | PSNR (dB) | SSIM | SNR |", "|---|---|---|---|"]  # fmt: skip
    for method, label in labels.items():
        sel = [r for r in rows if r["method"] == method]
        if not sel:
            continue
        cell = lambda k, sel=sel: f"{np.mean([r[k] for r in sel]):.3f} ± {np.std([r[k] for r in sel]):.3f}"
        psnr = "—" if method == "hr" else cell("psnr")
        ssim = "—" if method == "hr" else cell("ssim")
        lines.append(f"| {label} | {psnr} | {ssim} | {cell('snr')} |")
    return "\n".join(lines) + "\n"


def data_markdown(data_dir: Path) -> str:
    """One line on how the held-out LR inputs were made (the crappifier recorded in the data's `movies.yaml`)."""
    import yaml

    path = Path(data_dir) / "movies.yaml"
    try:
        crap = (yaml.safe_load(path.read_text()) or {}).get("crappifier") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        crap = {}
    if not crap:
        return ""
    from cristae_zoo.pssr.crappify import CrappifierConfig

    c = CrappifierConfig(**crap)
    if c.noise == "local_variance":
        noise = (f"the authors' {c.modality} crappifier (BPHO-Salk/PSSR `utils/crappifiers.py`): salt and pepper"
                 f" {100 * c.sp_fraction:g} % each, Gaussian noise of local variance {c.lvar_gain:g} × the image smoothed"
                 f" with σ = {c.lvar_sigma:g} px")  # fmt: skip
    else:
        noise = f"constant Gaussian noise σ = {c.sigma * 255:g}/255, salt and pepper {100 * c.sp_fraction:g} % each"
    return (f"Test inputs: the LR movies of `{Path(data_dir)}/lr`, crappified once at simulation with {noise},"
            f" then {c.scale}× downsampling (spline order {c.spline_order}) and 8-bit rounding.\n")


def training_markdown(label: str, model_dir: Path | None, config: Any) -> str:
    """One line on how a model folder was trained, from its config and `history.csv` (steps, wall time, start)."""
    run = training_run(model_dir)
    if run is None:
        return ""
    start = f"fine-tuned from `{config.init_from}`" if config.init_from else "trained from scratch"
    budget = f"; wall-time budget {config.max_minutes:g} min per run" if getattr(config, "max_minutes", None) else ""
    c = config.crappifier
    return (f"- {label}: {start}, {run.steps} of {config.steps} steps of {config.batch_size} patches of"
            f" {config.lr_patch}×{config.lr_patch} LR px, one-cycle peak learning rate {config.learning_rate:g}, training"
            f" crappifier {c.modality}/{c.noise}; wall time {run.seconds / 60:.1f} min{budget}; best validation MSE"
            f" {run.best_val_loss:.4g} at step {run.best_step} (the kept weights).\n")


def fission_event(data_dir: Path, restored: dict[str, dict[str, np.ndarray]], half: int = 24) -> tuple[str, dict[str, Any]]:
    """A fission event of the held-out movies that is clear to see: inside the frame, and the ground-truth mask
    around its site is one object two frames before and two objects two frames after (no other mitochondrion
    crossing it). Falls back to the first fission event inside the frame."""
    events = json.loads((data_dir / "events.json").read_text())
    candidates = []
    for name, movie in restored.items():
        T, H, W = movie["mask"].shape
        for e in events.get(name, []):
            y, x = round(e["y"]), round(e["x"])
            if e["kind"] != "fission" or not (half <= y < H - half and half <= x < W - half):
                continue
            crop = (slice(y - half, y + half), slice(x - half, x + half))
            n = [ndi.label(movie["mask"][min(max(e["frame"] + d, 0), T - 1)][crop])[1] for d in (-2, 2)]
            candidates.append((n != [1, 2], name, e))
    if not candidates:
        raise CristaeZooError(f"{data_dir}: no fission event inside the frame in the held-out movies {sorted(restored)}")
    _, name, event = min(candidates, key=lambda c: c[0])
    return name, event


def fission_figure(movie: dict[str, np.ndarray], event: dict[str, Any], labels: dict[str, str], dest: Path, half: int = 24) -> Path:
    """Rows: methods; columns: frames before, at and after the fission; crops of 2·half HR px around the site."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cristae_zoo.io import atomic_path

    T = movie["hr"].shape[0]
    frames = [min(max(event["frame"] + d, 0), T - 1) for d in (-2, 0, 2)]
    cy, cx = (round(event[k]) for k in ("y", "x"))
    crop = (slice(cy - half, cy + half), slice(cx - half, cx + half))
    s = movie["hr"].shape[-2] // movie["lr"].shape[-2]
    rows = {"lr": np.repeat(np.repeat(normalize_frames(movie["lr"]), s, axis=1), s, axis=2)} | {k: movie[k] for k in labels}
    names = {"lr": "LR input (nearest)"} | labels
    fig = Figure(figsize=(2.2 * len(frames), 2.2 * len(rows)), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), len(frames), squeeze=False)
    for r, (key, movie_k) in enumerate(rows.items()):
        for c, t in enumerate(frames):
            ax = axes[r, c]
            ax.imshow(np.clip(movie_k[t][crop], 0, 1), cmap="magma", vmin=0, vmax=1, interpolation="nearest")
            ax.annotate("", xy=(half - 0.5, half - 3.5), xytext=(half - 0.5, half - 12.5),
                        arrowprops={"arrowstyle": "->", "color": "cyan", "lw": 1})  # the fission site
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {t} ({t - event['frame']:+d})", fontsize=9)
            if c == 0:
                ax.set_ylabel(names[key], fontsize=8)
    fig.suptitle("mitochondrial fission (held-out simulated movie)", fontsize=10)
    fig.tight_layout()
    with atomic_path(Path(dest)) as tmp:
        fig.savefig(tmp, format="png")
    return Path(dest)
