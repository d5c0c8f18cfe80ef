"""Laplace negative log-likelihood, the loss of CARE's probabilistic networks (CSBDeep `probabilistic=True`).

For a target y and a predicted Laplace(μ, b): −log p(y) = log(2b) + |y − μ| / b. Minimising it over μ gives the
conditional median, over b the mean absolute deviation: b is a per-pixel uncertainty in the target's units.

Noise2noise needs the conditional *mean* of the noisy target (its expectation is the clean signal); the median of
a photon-starved acquisition is not (at 2 s most voxels' median is the background even on a mitochondrion).
`gaussian_nll` (−log N(y | μ, σ)) has the mean as its minimiser and keeps a per-pixel scale σ: the loss for
noise2noise on skewed, photon-starved noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def laplace_nll(y_true: Any, y_pred: Any) -> Any:
    """Keras loss: `y_pred[..., 0]` = μ, `y_pred[..., 1]` = b > 0; mean over every pixel of the batch."""
    from keras import ops

    mu, scale = y_pred[..., 0:1], y_pred[..., 1:2]
    return ops.mean(ops.log(2.0 * scale) + ops.abs(y_true - mu) / scale)


def laplace_nll_numpy(y: np.ndarray, mu: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Per-pixel −log p(y | μ, b), float64 (the reference the Keras loss is checked against)."""
    y, mu, scale = (np.asarray(a, np.float64) for a in (y, mu, scale))
    return np.log(2.0 * scale) + np.abs(y - mu) / scale


def gaussian_nll(y_true: Any, y_pred: Any) -> Any:
    """Keras loss: `y_pred[..., 0]` = μ, `y_pred[..., 1]` = σ > 0: mean of ½ log(2π σ²) + (y − μ)² / (2σ²)."""
    from keras import ops

    mu, sigma = y_pred[..., 0:1], y_pred[..., 1:2]
    return ops.mean(0.5 * ops.log(2.0 * np.pi * sigma * sigma) + 0.5 * ops.square((y_true - mu) / sigma))


LOSSES = {"laplace": laplace_nll, "gaussian": gaussian_nll}
