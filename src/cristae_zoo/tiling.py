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
    in_place: bool = False,
) -> np.ndarray:
    """Apply `fn` to `image` in tiles over its last `spatial` axes (default: all axes).

    Leading (non-spatial) axes go to `fn` whole. `fn` returns the tile's result with the tile's spatial shape times
    `scale` per axis, preceded by any leading axes of its own (e.g. (batch, channels out)); the result has those
    leading axes and the image's spatial shape times `scale`. `inner`, `halo`, `min_size` and `scale` are one value
    for every spatial axis or one per axis, in input pixels.

    `in_place`: write the result into `image` itself and return it (float32 `image`, a result of the image's own
    shape: `scale` 1 and as many leading values). A tile's result waits until no later tile's window reads the
    region it replaces, so the result equals the out-of-place one; what waits is about one row of tiles, so the
    memory is the image plus a band of tiles rather than two images (an 8192² plane: 256 MiB less).
    """
    nd = image.ndim if spatial is None else spatial
    lead = image.shape[: image.ndim - nd]
    shape = image.shape[image.ndim - nd :]
    inner_, halo_, min_, scale_ = (per_axis(v, nd) for v in (inner, halo, min_size, scale))
    tiles = []  # (put region in input px, input window) in raster order
    for starts in itertools.product(*(tile_starts(s, i) for s, i in zip(shape, inner_))):
        stops = [min(a + i, s) for a, i, s in zip(starts, inner_, shape)]
        tiles.append((list(zip(starts, stops)), [window(a, b, s, h, m) for a, b, s, h, m in zip(starts, stops, shape, halo_, min_)]))
    if in_place:
        if any(k != 1 for k in scale_) or image.dtype != np.float32:
            raise ValueError("tiled_apply(in_place=True) needs scale 1 and a float32 image")
        # the last tile whose window reads each tile's region: that region may be replaced once it has run
        last_reader = [max(j for j, (_, win) in enumerate(tiles) if all(wa < b and a < wb for (a, b), (wa, wb) in zip(put, win)))
                       for put, _ in tiles]  # fmt: skip
    out: np.ndarray | None = image if in_place else None
    pending: dict[int, list[tuple[tuple[slice, ...], np.ndarray]]] = {}
    for i, (put_px, windows) in enumerate(tiles):
        block = image[(Ellipsis, *(slice(wa, wb) for wa, wb in windows))]
        pred = np.asarray(fn(block))
        if out is None:
            out = np.empty(pred.shape[: pred.ndim - nd] + tuple(s * k for s, k in zip(shape, scale_)), np.float32)
        keep = tuple(slice((a - wa) * k, (b - wa) * k) for (a, b), (wa, _), k in zip(put_px, windows, scale_))
        put = tuple(slice(a * k, b * k) for (a, b), k in zip(put_px, scale_))
        if not in_place:
            out[(Ellipsis, *put)] = pred[(Ellipsis, *keep)]
            continue
        if pred.shape[: pred.ndim - nd] != lead:
            raise ValueError(f"tiled_apply(in_place=True): fn returned leading axes {pred.shape[: pred.ndim - nd]}, the image has {lead}")
        pending.setdefault(last_reader[i], []).append((put, np.array(pred[(Ellipsis, *keep)], np.float32)))
        for region, values in pending.pop(i, []):  # every tile that reads these regions has run
            out[(Ellipsis, *region)] = values
    assert out is not None and not pending, f"empty image {image.shape} (lead axes {lead})"
    return out
