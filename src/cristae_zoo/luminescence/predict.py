"""Prediction of mean and Laplace scale, whole or in tiles (2D or 3D), and on files.

The image is reflect-padded to a multiple of the network's divisor and cropped back. With a tile size, it is
predicted in tiles with `halo` px of context on every side (`export.halo.tiled_apply`, one window per tile,
windows never crossing the image border), which equals the whole-image prediction once the halo covers the
receptive field (`labelfree.network.receptive_radius`, rounded up to the divisor).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cristae_zoo.errors import CristaeZooError
from cristae_zoo.tiling import tiled_apply
from cristae_zoo.labelfree.network import LabelFreeNetworkConfig, receptive_radius


def seamless_halo(network: LabelFreeNetworkConfig) -> int:
    return -(-receptive_radius(network) // network.divisor) * network.divisor


def run_model(model: Any, image: np.ndarray) -> np.ndarray:
    """Channels-last [mean, scale] model on one normalised image (*spatial) → (2, *spatial)."""
    y = np.asarray(model(image[None, ..., None], training=False))[0]
    return np.moveaxis(y, -1, 0).astype(np.float32)


def predict_image(model: Any, image: np.ndarray, network: LabelFreeNetworkConfig,
                  tile: int | Sequence[int] | None = None, halo: int | None = None) -> np.ndarray:
    """(2, *spatial) = [mean, scale] of a normalised image; tiled in tiles of `tile` px (per axis or all) if given."""
    if image.ndim != network.ndim:
        raise CristaeZooError(f"image has {image.ndim} axes {image.shape}, the model is {network.ndim}D")
    step = network.divisor
    pad = [(0, (-s) % step) for s in image.shape]
    x = np.pad(image, pad, mode="reflect") if any(p for _, p in pad) else image
    if tile is None:
        y = run_model(model, x)
    else:
        halo = seamless_halo(network) if halo is None else halo
        if any(t % step for t in np.atleast_1d(tile)) or halo % step:
            raise CristaeZooError(f"tile {tile} and halo {halo} must be multiples of {step} (2**depth)")
        y = tiled_apply(lambda t: run_model(model, t), x, tile, halo, min_size=step)
    return y[(slice(None), *(slice(0, s) for s in image.shape))]
