"""Training losses: SCoP (Eq. 1), plain DSSIM, MAE and MSE.

Targets are passed as two channels, (ground truth, mitochondria mask), so that SCoP gets its per-pixel γ
from the same batch as the target; MAE/MSE/DSSIM ignore the mask channel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from keras import ops

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5

# keras.ops only (no tf.*): the same loss trains under KERAS_BACKEND=tensorflow, torch or jax (tests/test_backends.py
# checks that the values agree). Tensors are (B, H, W, C), channels last, whatever the backend.
Tensor = Any


def _gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    w = np.outer(g, g)
    return (w / w.sum()).astype(np.float32)


def _pad_symmetric(t: Tensor, k: int) -> Tensor:
    """Pad H and W by `k` on each side, mirroring the edge pixel too (numpy's/TF's 'symmetric' mode).

    Built from slices and flips because not every backend's `ops.pad` has a symmetric mode."""
    t = ops.concatenate([ops.flip(t[:, :k], axis=1), t, ops.flip(t[:, -k:], axis=1)], axis=1)
    return ops.concatenate([ops.flip(t[:, :, :k], axis=2), t, ops.flip(t[:, :, -k:], axis=2)], axis=2)


def ssim_map(y: Tensor, y_hat: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-pixel SSIM of (B, H, W, 1) tensors with an 11×11 Gaussian window (σ = 1.5).

    Borders are padded symmetrically, so the map has the image's size and matches scikit-image's
    `structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)`.
    """
    k = SSIM_WINDOW // 2
    kernel = ops.convert_to_tensor(_gaussian_window()[:, :, None, None])

    def blur(t: Tensor) -> Tensor:
        return ops.conv(_pad_symmetric(t, k), kernel, strides=1, padding="valid", data_format="channels_last")

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_y, mu_p = blur(y), blur(y_hat)
    var_y = blur(y * y) - mu_y**2
    var_p = blur(y_hat * y_hat) - mu_p**2
    cov = blur(y * y_hat) - mu_y * mu_p
    return ((2 * mu_y * mu_p + c1) * (2 * cov + c2)) / ((mu_y**2 + mu_p**2 + c1) * (var_y + var_p + c2))


def _split(y_true: Tensor) -> tuple[Tensor, Tensor]:
    return y_true[..., :1], y_true[..., 1:2]


def scop_loss(gamma_mito: float = 1.0, gamma_background: float = 4.0) -> Callable[[Tensor, Tensor], Tensor]:
    """Eq. (1): mean over pixels of ((1 − SSIM_map)/2)^γ, γ = `gamma_mito` on mitochondria, else `gamma_background`.

    (1 − SSIM)/2 lies in [0, 1], so a larger γ shrinks the background's share of the loss."""

    def scop(y_true: Tensor, y_pred: Tensor) -> Tensor:
        target, mask = _split(y_true)
        dssim = ops.clip((1.0 - ssim_map(target, y_pred)) / 2.0, 0.0, 1.0)
        gamma = mask * gamma_mito + (1.0 - mask) * gamma_background
        # pow(0, γ) has an infinite gradient w.r.t. the base at 0 for γ < 1; the epsilon keeps it finite.
        return ops.mean(ops.power(dssim + 1e-12, gamma), axis=[1, 2, 3])

    scop.__name__ = "scop"
    return scop


def dssim_loss(y_true: Tensor, y_pred: Tensor) -> Tensor:
    target, _ = _split(y_true)
    return ops.mean((1.0 - ssim_map(target, y_pred)) / 2.0, axis=[1, 2, 3])


def mae_loss(y_true: Tensor, y_pred: Tensor) -> Tensor:
    target, _ = _split(y_true)
    return ops.mean(ops.abs(target - y_pred), axis=[1, 2, 3])


def mse_loss(y_true: Tensor, y_pred: Tensor) -> Tensor:
    target, _ = _split(y_true)
    return ops.mean(ops.square(target - y_pred), axis=[1, 2, 3])


def get_loss(name: str, gamma_mito: float = 1.0, gamma_background: float = 4.0) -> Callable:
    losses = {"scop": scop_loss(gamma_mito, gamma_background), "dssim": dssim_loss, "mae": mae_loss, "mse": mse_loss}
    if name not in losses:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(losses)}")
    return losses[name]
