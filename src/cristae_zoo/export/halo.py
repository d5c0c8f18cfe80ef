"""How much context an output pixel needs: the receptive field of the U-Net and the halo that makes tiling seamless.

`receptive_field` follows every layer of `build_unet` in 1D, tracking for each output position the interval of input
positions it depends on (convs widen it by the kernel radius at their level's scale, 2×2 pooling and nearest
upsampling map between levels, concatenation and the residual add take the union). It depends only on the
architecture, not on the weights, so it is an upper bound that holds for every trained model.

`cut_tiling_errors` measures, for any network, the tiling error per halo on the actual weights: the output next
to a tile border `h` px away, against the whole-image output (the packager records it per axis in the rdf).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from cristae_zoo.config import NetworkConfig
from cristae_zoo.models.unet import divisibility

Interval = tuple[int, int]


def _conv(iv: Interval, radius: int) -> Interval:
    return iv[0] - radius, iv[1] + radius


def receptive_field(network: NetworkConfig) -> int:
    """Largest distance (px) between an output pixel and an input pixel it depends on, over every position."""
    r = network.kernel_size // 2
    step = divisibility(network)
    worst = 0
    for x in range(step):  # the dependency pattern repeats with the period of the pooling grid
        # Walk the graph backwards: an interval of indices at one level → the interval at the level below.
        worst = max(worst, _output_extent(x, network.depth, r))
    return worst


def _output_extent(x: int, depth: int, r: int) -> int:
    """Extent for output position x; levels are walked from the output back to the input."""

    def up_level(level: int, iv: Interval) -> Interval:
        """Input interval (at level 0) that indices `iv` of the decoder output at `level` depend on."""
        # decoder at `level`: two convs, then concat(upsample(decoder(level+1)), skip(level))
        iv = _conv(_conv(iv, r), r)
        coarse = (iv[0] // 2, iv[1] // 2)  # nearest upsampling: fine f reads coarse f // 2
        from_below = decoder(level + 1, coarse)
        from_skip = encoder(level, iv)
        return min(from_below[0], from_skip[0]), max(from_below[1], from_skip[1])

    def decoder(level: int, iv: Interval) -> Interval:
        if level == depth:  # bottleneck: two convs on the pooled encoder output of level depth-1
            iv = _conv(_conv(iv, r), r)
            return encoder(depth - 1, (2 * iv[0], 2 * iv[1] + 1))  # 2x2 max pooling
        return up_level(level, iv)

    def encoder(level: int, iv: Interval) -> Interval:
        """Input interval that encoder output (after its two convs) at `level` indices `iv` depends on."""
        iv = _conv(_conv(iv, r), r)
        if level == 0:
            return iv
        return encoder(level - 1, (2 * iv[0], 2 * iv[1] + 1))

    lo, hi = decoder(0, (x, x))
    lo, hi = min(lo, x), max(hi, x)  # residual add
    return max(x - lo, hi - x)


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def declared_halo(network: NetworkConfig) -> int:
    """The halo written into the rdf: the receptive field rounded up to the network's divisibility."""
    return round_up(receptive_field(network), divisibility(network))


def min_input_size(halo: int, step: int) -> int:
    """Smallest valid input edge: a multiple of `step` with at least one pixel left inside the halo on both sides."""
    return round_up(2 * halo + 1, step)


# Seamless tiling itself lives in `cristae_zoo.tiling` (the predictor's), re-exported for the packager's checks.
from cristae_zoo.tiling import tile_starts, tiled_apply  # noqa: E402,F401


def halo_candidates(declared: int, step: int, most: int = 6) -> list[int]:
    """0, multiples of `step` and `declared` itself: at most `most` halos to measure the tiling error at."""
    grid = list(range(0, declared + 1, max(1, step)))
    if len(grid) > most:
        pick = np.linspace(0, len(grid) - 1, most).round().astype(int)
        grid = [grid[i] for i in sorted(set(pick))]
    return sorted(set(grid) | {0, declared})


def cut_tiling_errors(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    axis: int,
    halos: Sequence[int],
    step: int,
    scale: int = 1,
) -> dict[int, float]:
    """Tiling error per halo along one axis, for any network: max |Δ| of the output's first half when the input is
    cut `h` px beyond that half (the cut is a tile border seen from inside the tile).

    `predict` maps a (B, C, *spatial) float32 tensor to (B, C', *spatial'), spatial' = spatial · `scale` along `axis`;
    `axis` counts from the end (-1 = x). Cuts stay on multiples of `step` (the network's pooling grid)."""
    whole = predict(x)
    size = x.shape[axis]
    half = max(step, (size // 2) // step * step)
    out: dict[int, float] = {}
    for h in halos:
        stop = half + -(-h // step) * step
        if stop > size:
            continue
        part = predict(x[(Ellipsis, slice(0, stop)) + (slice(None),) * (-axis - 1)])
        keep = (Ellipsis, slice(0, half * scale)) + (slice(None),) * (-axis - 1)
        out[int(h)] = float(np.max(np.abs(part[keep] - whole[keep])))
    return out
