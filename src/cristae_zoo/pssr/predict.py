"""Prediction on LR time-lapses: per frame (PSSR-SF) or by a sliding 5-frame window (PSSR-MF).

The window for frame t is t-2 … t+2, mirrored at the ends (frame 0 uses 2, 1, 0, 1, 2), so a movie of T frames
gives T HR frames. Each LR frame is normalised to [0, 1] (min–max) like the package's preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cristae_zoo.errors import CristaeZooError
from cristae_zoo.pssr.network import PSSRNetworkConfig
from cristae_zoo.pssr.data import normalize_frames, window_indices


def check_movie(movie: np.ndarray, network: PSSRNetworkConfig, what: str) -> np.ndarray:
    """(T, h, w) float32, or a one-line error naming `what` (the file)."""
    movie = np.asarray(movie)
    if movie.ndim == 2 and network.n_frames == 1:
        movie = movie[None]
    if movie.ndim == 2:
        raise CristaeZooError(f"{what}: a single 2D image has no time axis; the multi-frame model needs a (T, Y, X) stack of ≥ {network.n_frames} frames")
    if movie.ndim != 3:
        raise CristaeZooError(f"{what}: expected a (T, Y, X) time-lapse, got {movie.ndim} axes {movie.shape}")
    if movie.shape[0] < network.n_frames:
        raise CristaeZooError(f"{what}: {movie.shape[0]} frame(s); the multi-frame model needs at least {network.n_frames}")
    h, w = movie.shape[1:]
    if h % network.divisor or w % network.divisor:
        raise CristaeZooError(f"{what}: frames of {h}×{w} px; height and width must be divisible by {network.divisor} (crop or pad)")
    return movie.astype(np.float32)


def windows(n_total: int, n_frames: int) -> list[list[int]]:
    """One window of frame indices per output frame."""
    return [window_indices(t, n_frames, n_total) for t in range(n_total)]


def predict_movie(model: Any, movie: np.ndarray, network: PSSRNetworkConfig, what: str = "input",
                  progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(T, h, w) raw LR → (T, s·h, s·w) float32 HR on the training targets' [0, 1] scale."""
    lr = normalize_frames(check_movie(movie, network, what))
    out = []
    for idx in windows(len(lr), network.n_frames):
        x = np.moveaxis(lr[idx], 0, -1)[None]
        out.append(np.asarray(model(x, training=False))[0, ..., 0])
        if progress:
            progress(1)
    return np.stack(out).astype(np.float32)
