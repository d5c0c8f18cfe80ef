"""Seamless tiling over the trailing spatial axes of an array, for networks whose output may be larger than their
input (PSSR's 4× super-sampling).

A tile is `inner` px plus `halo` px of context on each side, clipped at the array's border (a border tile simply
ends there, as the whole array does), so with a sufficient halo the tiled result equals the untiled one. All tile
corners stay on multiples of `inner` and `halo`, which must be multiples of the network's size step; windows are
widened inwards to at least `min_size`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np


def tile_starts(size: int, inner: int) -> list[int]:
    return list(range(0, size, inner))


def per_axis(value: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    return (int(value),) * ndim if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)


def window(start: int, stop: int, size: int, halo: int, min_size: int) -> tuple[int, int]:
    """The input window [a, b) of the tile [start, stop): the halo on each side, clipped, at least `min_size`."""
    a, b = max(0, start - halo), min(size, stop + halo)
    if b - a < min_size:
        a = max(0, b - min_size)
        b = min(size, a + min_size)
    return a, b


def tiled_apply(
    fn: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    inner: int | Sequence[int],
    halo: int | Sequence[int],
    min_size: int | Sequence[int] = 1,
    *,
    spatial: int | None = None,
    scale: int | Sequence[int] = 1,
) -> np.ndarray:
    """Apply `fn` to `image` in tiles over its last `spatial` axes (default: all axes).

    Leading (non-spatial) axes go to `fn` whole. `fn` returns the tile's result with the tile's spatial shape times
    `scale` per axis, preceded by any leading axes of its own (e.g. (batch, channels out)); the result has those
    leading axes and the image's spatial shape times `scale`. `inner`, `halo`, `min_size` and `scale` are one value
    for every spatial axis or one per axis, in input pixels.
    """
    nd = image.ndim if spatial is None else spatial
    lead = image.shape[: image.ndim - nd]
    shape = image.shape[image.ndim - nd :]
    inner_, halo_, min_, scale_ = (per_axis(v, nd) for v in (inner, halo, min_size, scale))
    out: np.ndarray | None = None
    for starts in itertools.product(*(tile_starts(s, i) for s, i in zip(shape, inner_))):
        stops = [min(a + i, s) for a, i, s in zip(starts, inner_, shape)]
        windows = [window(a, b, s, h, m) for a, b, s, h, m in zip(starts, stops, shape, halo_, min_)]
        block = image[(Ellipsis, *(slice(wa, wb) for wa, wb in windows))]
        pred = np.asarray(fn(block))
        if out is None:
            out = np.empty(pred.shape[: pred.ndim - nd] + tuple(s * k for s, k in zip(shape, scale_)), np.float32)
        keep = tuple(slice((a - wa) * k, (b - wa) * k) for a, b, (wa, _), k in zip(starts, stops, windows, scale_))
        put = tuple(slice(a * k, b * k) for a, b, k in zip(starts, stops, scale_))
        out[(Ellipsis, *put)] = pred[(Ellipsis, *keep)]
    assert out is not None, f"empty image {image.shape} (lead axes {lead})"
    return out
