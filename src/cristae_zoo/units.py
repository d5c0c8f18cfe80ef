"""How a microscope file is cut into the units a package's network sees, and how its outputs are put back.

A unit is one network input without the batch axis: (channels in, [z], y, x). What it is follows from the
package's `TensorDescription` and the file's axes:

- a 2D package on a YX / ZYX / TYX / TZYX file: one unit per plane (every t and z), one channel;
- a 3D (ZYX) package: one unit per time point, the whole z-stack;
- a frames-as-channels package (PSSR-MF, 2k+1 frames): one unit per time point (and z), the frames t−k … t+k
  with the edges mirrored (t−1 → t+1 at the first frame), so the output has one frame per input frame.

`UnitPlan` is picklable (axes and numbers only), so Dask workers can read their own units. The output has the
file's axes in canonical order, the input channel axis dropped and, for a package with several output channels
(label-free: mitochondria and DNA), a C axis of its own: TZCYX in TIFF (ImageJ's order) and TCZYX in OME-Zarr
(NGFF's order).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np

from cristae_zoo.core.tensors import TensorDescription
from cristae_zoo.errors import CristaeZooError


@dataclass(frozen=True)
class UnitPlan:
    plane_axes: str  # the acquisition's non-spatial axes (canonical order, channel excluded), e.g. "TZ"
    sizes: tuple[tuple[str, int], ...]  # their sizes
    iter_axes: str  # the axes iterated over, one unit per index: plane_axes minus what the unit spans
    spatial: str  # "yx" or "zyx"
    n_frames: int  # frames per window (frames-as-channels), else 1
    n_out: int

    @property
    def size(self) -> dict[str, int]:
        return dict(self.sizes)

    def indices(self) -> list[tuple[int, ...]]:
        """Index (over `iter_axes`) of every unit, in the canonical (output) order."""
        return list(product(*(range(self.size[a]) for a in self.iter_axes)))

    def planes(self, index: tuple[int, ...]) -> list[list[tuple[int, ...]]]:
        """The acquisition planes that make unit `index`: one list per input channel, each with one plane per z of
        the unit (a single plane for a 2D unit). Plane indices are over `plane_axes`."""
        where = dict(zip(self.iter_axes, index))

        def plane(**over: int) -> tuple[int, ...]:
            pos = where | over
            return tuple(pos[a] for a in self.plane_axes)

        zs = range(self.size["Z"]) if self.spatial == "zyx" else [None]
        if self.n_frames > 1:
            t, n = where["T"], self.size["T"]
            frames = [mirrored(t + d, n) for d in range(-(self.n_frames // 2), self.n_frames // 2 + 1)]
            return [[plane(T=f, **({} if z is None else {"Z": z})) for z in zs] for f in frames]
        return [[plane(**({} if z is None else {"Z": z})) for z in zs]]


def mirrored(i: int, n: int) -> int:
    """Index i reflected into 0..n-1 without repeating the edge (-1 → 1, n → n-2), as PSSR's training windows."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    i = i % period
    return i if i < n else period - i


def plan_units(acq: Any, tensors: TensorDescription, name: str) -> UnitPlan:
    """The unit plan of acquisition `acq` for a package described by `tensors`; a one-line `CristaeZooError`
    naming the file and the axes the package expects when the file cannot fill them."""
    td = tensors
    plane_axes = acq.plane_axes
    sizes = tuple((a, acq.sizes[a]) for a in plane_axes)
    expects = _expectation(td)
    if td.n_in > 1 and not td.frames_as_channels:
        raise CristaeZooError(
            f"{name}: the package takes {td.n_in} input channels ({', '.join(td.input_channels)}); predicting"
            " multi-channel inputs from files is not supported yet (predict the array through the Python API)"
        )
    iter_axes = plane_axes
    if td.spatial_axes == "zyx":
        if "Z" not in plane_axes or acq.sizes["Z"] < 2:
            raise CristaeZooError(f"{name}: axes {acq.axes} {tuple(acq.shape)}; the package expects {expects}")
        iter_axes = iter_axes.replace("Z", "")
    if td.frames_as_channels:
        n = td.n_in
        if "T" not in plane_axes:
            raise CristaeZooError(
                f"{name}: axes {acq.axes} {tuple(acq.shape)} have no time axis; the package expects {expects}"
                " (give --axes TYX if the file's axes are unknown)"
            )
        if acq.sizes["T"] < n:
            raise CristaeZooError(
                f"{name}: {acq.sizes['T']} frame(s); the package expects {expects} of at least {n} frames"
            )
    return UnitPlan(plane_axes=plane_axes, sizes=sizes, iter_axes=iter_axes, spatial=td.spatial_axes,
                    n_frames=td.n_frames, n_out=td.n_out)  # fmt: skip


def _expectation(td: TensorDescription) -> str:
    if td.frames_as_channels:
        return f"a TYX movie ({td.n_in} consecutive frames per output frame)"
    if td.spatial_axes == "zyx":
        return "a ZYX z-stack (or TZYX)"
    return "YX planes (2D, or ZYX/TYX/TZYX stacks restored plane by plane)"


def read_unit(acq: Any, array: Any, plan: UnitPlan, index: tuple[int, ...], shape: tuple[int, int]) -> np.ndarray:
    """Unit `index` as float32 (channels, [z], y, x), every plane resampled to `shape` (the rescaled plane)."""
    planes = plan.planes(index)
    unit = None  # (C, Z or 1, Y, X), filled plane by plane: no stacked copies of full planes
    for c, zs in enumerate(planes):
        for z, p in enumerate(zs):
            plane = acq.read_plane(array, p)
            if tuple(plane.shape) != tuple(shape):  # rescale (skimage, imported only when needed)
                from cristae_zoo.rescale import resample

                plane = resample(plane, shape)
            if len(planes) == 1 and len(zs) == 1 and plane.dtype == np.float32 and plane.flags.c_contiguous:
                unit = plane[None, None]  # one plane, already float32: no copy at all
                break
            if unit is None:
                unit = np.empty((len(planes), len(zs), *shape), np.float32)
            unit[c, z] = plane
    assert unit is not None
    return unit if plan.spatial == "zyx" else unit[:, 0]


def output_axes(acq_axes: str, n_out: int, kind: str) -> str:
    """The output's axes: canonical TZYX subset of the input's (channel dropped), plus C for several output
    channels (TZCYX in TIFF, TCZYX in OME-Zarr)."""
    base = "".join(a for a in "TZYX" if a in acq_axes)
    if n_out <= 1:
        return base
    order = "TCZYX" if kind == "ome-zarr" else "TZCYX"
    return "".join(a for a in order if a in base or a == "C")


def unit_in_output(unit: np.ndarray, plan: UnitPlan, out_axes: str) -> np.ndarray:
    """A predicted unit (C_out, [z], y, x) arranged as the output's axes that a unit spans (C and/or Z, then Y, X)."""
    labels = "C" + plan.spatial.upper()
    if "C" not in out_axes:
        unit, labels = unit[0], labels[1:]
    order = [a for a in out_axes if a in labels]
    return np.transpose(unit, [labels.index(a) for a in order])


def output_index(plan: UnitPlan, index: tuple[int, ...], out_axes: str) -> tuple[Any, ...]:
    """Where unit `index` goes in the output array (ints for the iterated axes, slices for the rest)."""
    where = dict(zip(plan.iter_axes, index))
    return tuple(where[a] if a in where else slice(None) for a in out_axes)


def output_planes(unit: np.ndarray, plan: UnitPlan, out_axes: str) -> list[np.ndarray]:
    """A predicted unit as (y, x) planes in the output's plane order (for streaming into a TIFF)."""
    arranged = unit_in_output(unit, plan, out_axes)
    return list(arranged.reshape(-1, *arranged.shape[-2:]))
