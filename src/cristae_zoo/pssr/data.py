"""PSSR training pairs, drawn on the fly from simulated HR movies (`DATA/hr/*.tif`, (T, Y, X)).

Each draw crappifies a random 5- (or 1-) frame window with fresh noise, normalises every LR frame to [0, 1] (min–max
over the whole frame, as the package's preprocessing does), and crops a random LR patch with its 4× larger HR patch
of the middle frame, in a random dihedral orientation (the paper's augmentation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from cristae_zoo.errors import CristaeZooError
from cristae_zoo.pssr.crappify import crappify, normalize


def split_movies(names: list[str], n_val: int, n_test: int) -> dict[str, list[str]]:
    """The last `n_test` movies are held out for testing, the `n_val` before them for validation (sorted names)."""
    names = sorted(names)
    if len(names) < n_val + n_test + 1:
        raise CristaeZooError(f"{len(names)} movie(s): need at least {n_val + n_test + 1} (train + {n_val} validation + {n_test} test)")
    return {"train": names[: -n_val - n_test], "validation": names[-n_val - n_test : -n_test], "test": names[-n_test:]}


def window_indices(t: int, n_frames: int, length: int) -> list[int]:
    """Frames t-k … t+k (k = n_frames // 2), mirrored at the movie's ends (t-1 ↔ t+1 about frame 0, likewise at the end)."""
    if length < n_frames:
        raise CristaeZooError(f"movie of {length} frame(s): the multi-frame model needs at least {n_frames}")
    k = n_frames // 2
    out = []
    for i in range(t - k, t + k + 1):
        if i < 0:
            i = -i
        if i > length - 1:
            i = 2 * (length - 1) - i
        out.append(i)
    return out


def load_hr_movie(path: Path) -> np.ndarray:
    try:
        movie = np.asarray(tifffile.imread(path), np.float32)
    except Exception as err:  # tifffile raises many types for unreadable files
        raise CristaeZooError(f"{path}: cannot read as TIFF ({type(err).__name__}: {err})") from None
    if movie.ndim != 3:
        raise CristaeZooError(f"{path}: expected a (T, Y, X) time-lapse, got shape {movie.shape}")
    if not np.all(np.isfinite(movie)):  # NaN frames would silently become zeros after normalisation
        raise CristaeZooError(f"{path}: the movie contains NaN or Inf values")
    return normalize(movie)


def normalize_frames(lr: np.ndarray) -> np.ndarray:
    """Min–max per frame over (y, x): the package's `scale_range` (0th/100th percentile, axes y, x)."""
    return np.stack([normalize(f) for f in lr.reshape(-1, *lr.shape[-2:])]).reshape(lr.shape)


def draw_batch(movies: list[np.ndarray], config: Any, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """x (B, p, p, n_frames) LR, y (B, s·p, s·p, 1) HR middle frames (`config`: a PSSR training config)."""
    n, s, p = config.network.n_frames, config.crappifier.scale, config.lr_patch
    xs, ys = [], []
    for _ in range(config.batch_size):
        movie = movies[int(rng.integers(len(movies)))]
        t = int(rng.integers(movie.shape[0]))
        frames = movie[window_indices(t, n, movie.shape[0])]
        lr = normalize_frames(crappify(frames, config.crappifier, rng, normalized=True))
        y0, x0 = (int(rng.integers(0, d // s - p + 1)) for d in movie.shape[1:])
        xp = np.moveaxis(lr[:, y0 : y0 + p, x0 : x0 + p], 0, -1)
        yp = movie[t, s * y0 : s * (y0 + p), s * x0 : s * (x0 + p)][..., None]
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        xp, yp = np.rot90(xp, k), np.rot90(yp, k)
        if flip:
            xp, yp = xp[:, ::-1], yp[:, ::-1]
        xs.append(xp)
        ys.append(yp)
    return np.ascontiguousarray(np.stack(xs), np.float32), np.ascontiguousarray(np.stack(ys), np.float32)
