"""Microscopy acquisitions on disk: TIFF (ImageJ hyperstack, OME-TIFF, plain) and OME-Zarr (NGFF 0.4 and 0.5).

An `Acquisition` describes a file without loading it: its axes (letters T, Z, C, Y, X in the file's order), shape,
pixel size, z step and time step, and the format-specific metadata to carry over to the restored file. Planes are
read one at a time through a lazy array (tifffile's zarr view of a TIFF, or the zarr array itself), so a stack of
any length streams through in bounded memory.

The restored file has the input's axes without the channel axis (one channel is restored), in the canonical order
T, Z, Y, X that both ImageJ hyperstacks and OME-Zarr require, float32 values, and the pixel size divided by the
rescale factor. Its metadata is the input's: the ImageJ properties (info, labels, units, z spacing, frame
interval), the whole OME-XML (instrument, channel, plane positions, annotations) with only the pixel description
updated, or the OME-Zarr attributes (omero channel settings, any extra keys); plus a `cristae_zoo` record of how it
was made. A zarr output is written only at full resolution (no pyramid levels).
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from cristae_zoo.errors import CristaeZooError

KNOWN_AXES = "TZCYX"
CANONICAL = "TZYX"  # output order (ImageJ and OME-NGFF both put time before z)
TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIXES = (".zarr",)
KINDS = ("imagej", "ome-tiff", "tiff", "ome-zarr")

# tifffile's axis letters → ours; S (samples, e.g. RGB) is a channel axis. Others (Q, I, ...) are unknown.
_TIFFFILE_AXES = {"T": "T", "Z": "Z", "C": "C", "S": "C", "Y": "Y", "X": "X"}
_NM_PER_UNIT = {
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0,
    "um": 1e3, "µm": 1e3, "\\u00B5m": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3, "micrometre": 1e3,
    "mm": 1e6, "millimeter": 1e6, "cm": 1e7, "centimeter": 1e7, "m": 1e9, "meter": 1e9,
    "inch": 2.54e7, "a": 0.1, "angstrom": 0.1, "Å": 0.1,
}  # fmt: skip
_S_PER_UNIT = {"s": 1.0, "sec": 1.0, "second": 1.0, "ms": 1e-3, "millisecond": 1e-3, "us": 1e-6, "µs": 1e-6,
               "microsecond": 1e-6, "ns": 1e-9, "nanosecond": 1e-9, "min": 60.0, "minute": 60.0, "h": 3600.0,
               "hour": 3600.0, "d": 86400.0, "day": 86400.0}  # fmt: skip
_OME_NS = "http://www.openmicroscopy.org/Schemas/OME/2016-06"


#: Units that say "not calibrated" rather than naming an unknown length unit.
_UNCALIBRATED_UNITS = ("", "pixel", "pixels", "px", "none", "reference frame", "referenceframe")
#: Pixel sizes read from TIFF resolution tags outside this range (nm) are not a microscope's: 72/96/300 dpi
#: screen and print resolutions give 85–353 µm, a calibration typo gives pm. Treated as "no pixel size".
PLAUSIBLE_PIXEL_NM = (0.01, 50_000.0)
#: A resolution in pixels per *inch* coarser than this (nm/px) is a print resolution, not a calibration.
_PRINT_RESOLUTION_NM = 1_000.0
#: Largest plane side read (px): a 65536² float32 plane is already 16 GiB; larger declared sizes are corrupt
#: headers far more often than real images.
MAX_PLANE_SIDE = 65536
#: Pixel types that convert to float32 without losing meaning (bool, unsigned, signed, float).
_READABLE_DTYPE_KINDS = "buif"


def nm_per_unit(unit: str | None) -> float | None:
    return _NM_PER_UNIT.get(str(unit).strip().lower()) if unit else None


def _is_uncalibrated(unit: Any) -> bool:
    return unit is None or str(unit).strip().lower() in _UNCALIBRATED_UNITS


def physical_value(path: Path, raw: Any, where: str, *, allow_zero: bool = False, pixel: bool = False) -> float | None:
    """`raw` (a number or a numeric string read from metadata) as a finite positive float; None for no value.

    Anything else (text, NaN, Inf, a negative number, zero unless `allow_zero`, where zero then means "not set")
    is a one-line `CristaeZooError` naming the file, the metadata field (`where`) and the value: a corrupt
    calibration must not flow silently into a rescale factor or the restored file's metadata. `pixel`: the value
    is a pixel size, so the message also offers `--pixel-size`."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if math.isfinite(value) and (value > 0 or (allow_zero and value == 0)):
        return value or None
    fix = " or give the pixel size with --pixel-size NM" if pixel else ""
    raise CristaeZooError(
        f"{path}: invalid {where} {raw!r} in the metadata (expected a positive number); fix the file's calibration"
        f" (e.g. Fiji: Image > Properties…){fix}"
    )


def _pixel_or_problem(read: Any) -> tuple[Any, dict[str, str]]:
    """Run `read()` (which reads the pixel size); an invalid value becomes a `pixel_size_problem` entry for the
    metadata rather than an error here, because `--pixel-size` may override it (see `open_acquisition`)."""
    try:
        return read(), {}
    except CristaeZooError as err:
        return None, {"pixel_size_problem": str(err)}


def _checked_pixel(path: Path, pixel: tuple[float, float], source: str, *, per_inch: bool) -> tuple[
        tuple[float, float] | None, str | None]:  # fmt: skip
    """A pixel size from TIFF resolution tags, or None and a note saying why it was not used as one."""
    size = math.sqrt(pixel[0] * pixel[1])
    if per_inch and size >= _PRINT_RESOLUTION_NM:
        dpi = 2.54e7 / size
        return None, (f"its {source} say {dpi:.4g} pixels per inch ({size:.4g} nm/px), a screen or print resolution,"
                      " not a microscope pixel size")  # fmt: skip
    lo, hi = PLAUSIBLE_PIXEL_NM
    if not lo <= size <= hi:
        return None, f"its {source} gives {size:.4g} nm/px, outside the plausible {lo:g}–{hi:g} nm for a microscope"
    return pixel, None


def _check_readable(acq: Acquisition) -> None:
    """Pixel type, plane size and declared-size checks common to every format (before any pixel is read)."""
    if acq.dtype.kind not in _READABLE_DTYPE_KINDS:
        what = "complex values (the imaginary part would be lost)" if acq.dtype.kind == "c" else f"{acq.dtype} values"
        raise CristaeZooError(
            f"{acq.path}: pixel type {acq.dtype} holds {what}; save the intensities as integers or real floats"
            " (e.g. the magnitude) and try again"
        )
    if any(n < 0 for n in acq.shape) or 0 in acq.shape:
        raise CristaeZooError(f"{acq.path}: empty image (shape {acq.shape})")
    sizes = acq.sizes
    for a in "YX":
        if sizes.get(a, 0) > MAX_PLANE_SIDE:
            raise CristaeZooError(
                f"{acq.path}: declares planes of {sizes.get('Y')} × {sizes.get('X')} px, more than {MAX_PLANE_SIDE} px"
                " a side (a corrupt header, or a mosaic to crop or bin first)"
            )


# --------------------------------------------------------------------------------------------------- description


@dataclass(frozen=True)
class Acquisition:
    """A TIFF or OME-Zarr acquisition, described without loading its pixels."""

    path: Path
    kind: str  # imagej | ome-tiff | tiff | ome-zarr
    axes: str  # one letter of TZCYX per dimension, in the file's order
    shape: tuple[int, ...]
    dtype: np.dtype
    pixel_size_nm: tuple[float, float] | None = None  # (y, x)
    z_step_nm: float | None = None
    time_step_s: float | None = None
    channel: int | None = None  # the channel that is read when the file has a C axis
    metadata: dict[str, Any] = field(default_factory=dict)  # format-specific, carried over to the output

    @property
    def sizes(self) -> dict[str, int]:
        return dict(zip(self.axes, self.shape))

    @property
    def plane_axes(self) -> str:
        """The non-spatial axes that planes are iterated over (canonical order, channel excluded)."""
        return "".join(a for a in CANONICAL if a in self.axes and a not in "YX")

    @property
    def plane_shape(self) -> tuple[int, int]:
        return self.sizes["Y"], self.sizes["X"]

    def plane_indices(self) -> list[tuple[int, ...]]:
        """(t, z)-style indices of every plane, in the canonical (output) order."""
        return list(product(*(range(self.sizes[a]) for a in self.plane_axes)))

    @property
    def n_planes(self) -> int:
        return math.prod(self.sizes[a] for a in self.plane_axes)

    def plane_label(self, index: tuple[int, ...]) -> str:
        return ", ".join(f"{a.lower()}={i}" for a, i in zip(self.plane_axes, index)) or "the image"

    def file_key(self, index: tuple[int, ...]) -> tuple[Any, ...]:
        """Index into the file's array for plane `index` (slices for Y and X, the chosen channel for C)."""
        where = dict(zip(self.plane_axes, index))
        key: list[Any] = []
        for a in self.axes:
            if a in "YX":
                key.append(slice(None))
            elif a == "C":
                key.append(self.channel or 0)
            else:
                key.append(where[a])
        return tuple(key)

    def read_plane(self, array: Any, index: tuple[int, ...]) -> np.ndarray:
        """Plane `index` as float32 (Y, X) from the lazy `array` of `open_array`; NaN/Inf → CristaeZooError."""
        try:
            plane = np.asarray(array[self.file_key(index)])
        except Exception as err:  # truncated strips, corrupt or missing-codec zarr chunks: many exception types
            raise CristaeZooError(
                f"{self.path}: cannot read plane {self.plane_label(index)} ({type(err).__name__}: {err}); the file is"
                " truncated or corrupt: copy or export it again"
            ) from None
        if self.axes.index("Y") > self.axes.index("X"):
            plane = plane.T
        plane = plane.astype(np.float32, copy=False)
        if not np.isfinite(plane).all():
            where = f"plane {self.plane_label(index)}" if self.plane_axes else "the image"
            raise CristaeZooError(
                f"{self.path}: {where} contains NaN or Inf values; replace them (e.g. Fiji:"
                " Process > Math > Remove NaNs…) or leave that plane out"
            )
        return plane

    @contextmanager
    def open_array(self) -> Iterator[Any]:
        """A lazy array over the file (indexing reads only what is asked for, into a new array)."""
        if self.kind == "array":  # an in-memory array (the Python API: `cristae_zoo.load(...).predict(array)`)
            yield self.metadata["array"]
            return
        if self.kind == "ome-zarr":
            import zarr

            try:
                array = zarr.open_array(self.path / self.metadata["dataset_path"], mode="r")
            except Exception as err:  # removed or rewritten since it was described
                raise CristaeZooError(f"{self.path}: cannot read ({type(err).__name__}: {err})") from None
            yield array
            return
        import tifffile

        # Only opening is translated into "cannot read": an OSError raised in the caller's block (a full disk
        # while writing the output) must keep its own message.
        try:
            tf = tifffile.TiffFile(self.path)
        except (OSError, tifffile.TiffFileError) as err:
            raise CristaeZooError(f"{self.path}: cannot read ({err})") from None
        with tf:
            series = tf.series[0]
            contiguous = _ContiguousTiff.of(self.path, tf)
            if contiguous is not None:
                yield contiguous
                return
            import zarr

            store = series.aszarr()
            try:
                yield zarr.open_array(store, mode="r")
            finally:
                store.close()

    def iter_planes(self, indices: Iterable[tuple[int, ...]] | None = None) -> Iterator[np.ndarray]:
        with self.open_array() as array:
            for index in self.plane_indices() if indices is None else indices:
                yield self.read_plane(array, index)


class _ContiguousTiff:
    """The image data of an uncompressed TIFF whose planes lie one after another (`series.dataoffset`), indexed like
    the zarr view of it: each read is one `np.fromfile`-like copy out of a memory map, without zarr's per-chunk
    machinery (or its 0.3 s import). Reads return new arrays, as zarr's do: callers normalise them in place."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype):
        self._map = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
        self.shape, self.dtype, self.ndim = shape, dtype, len(shape)

    @classmethod
    def of(cls, path: Path, tf: Any) -> _ContiguousTiff | None:
        """The view of open TiffFile `tf`'s first series, or None where it is not one contiguous uncompressed block."""
        series = tf.series[0]
        if series.dataoffset is None:
            return None
        on_disk = np.dtype(series.dtype).newbyteorder(tf.byteorder)  # tifffile reports native order
        try:
            return cls(path, series.dataoffset, tuple(series.shape), on_disk)
        except (OSError, ValueError):  # shorter than described (rewritten since): zarr reports it per plane
            return None

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.array(self._map[key])


def describe(acq: Acquisition) -> str:
    """One line: kind, axes and shape, pixel size, steps."""
    dims = " × ".join(f"{a}{n}" for a, n in zip(acq.axes, acq.shape))
    px = f"{acq.pixel_size_nm[1]:.4g} nm/px" if acq.pixel_size_nm else "no pixel size"
    extra = []
    if acq.z_step_nm:
        extra.append(f"z step {acq.z_step_nm:.4g} nm")
    if acq.time_step_s:
        extra.append(f"time step {acq.time_step_s:.4g} s")
    if acq.channel is not None:
        extra.append(f"channel {acq.channel}")
    return f"{acq.kind} {dims} {acq.dtype}, {px}" + (", " + ", ".join(extra) if extra else "")


# --------------------------------------------------------------------------------------------------------- open


def is_zarr(path: Path) -> bool:
    path = Path(path)
    return path.suffix.lower() in ZARR_SUFFIXES or (path.is_dir() and any(
        (path / f).exists() for f in (".zattrs", "zarr.json", ".zgroup")))  # fmt: skip


def is_acquisition(path: Path) -> bool:
    path = Path(path)
    if path.name.startswith("."):
        return False
    return (path.is_file() and path.suffix.lower() in TIFF_SUFFIXES) or (path.is_dir() and is_zarr(path))


def list_acquisitions(folder: Path) -> list[Path]:
    """TIFF files and OME-Zarr folders directly in `folder`, sorted by name."""
    folder = Path(folder)
    found = sorted(p for p in folder.iterdir() if is_acquisition(p))
    if not found:
        raise CristaeZooError(f"{folder}: no TIFF files (*.tif, *.tiff) or OME-Zarr folders (*.zarr) in this folder")
    return found


def open_acquisition(
    path: Path | str, *, axes: str | None = None, channel: int | None = None, pixel_size_nm: float | None = None
) -> Acquisition:
    """Describe `path`; `axes` overrides the file's axes, `channel` picks one channel, `pixel_size_nm` overrides
    the file's pixel size. Bad input (unknown axes, a channel axis without `channel`, ...) → `CristaeZooError`."""
    path = Path(path)
    if not path.exists():
        raise CristaeZooError(f"{path}: file not found")
    if is_zarr(path):
        acq = _open_zarr(path)
    elif path.is_file():
        acq = _open_tiff(path)
    else:
        raise CristaeZooError(f"{path}: not a TIFF file or an OME-Zarr folder")
    acq = _apply_axes(acq, axes)
    acq = _apply_channel(acq, channel)
    _check_readable(acq)
    if pixel_size_nm is not None:
        if not (math.isfinite(pixel_size_nm) and pixel_size_nm > 0):
            raise CristaeZooError(f"--pixel-size {pixel_size_nm}: expected a positive size in nm")
        meta = {k: v for k, v in acq.metadata.items() if k not in ("pixel_size_problem", "pixel_size_note")}
        acq = replace(acq, pixel_size_nm=(float(pixel_size_nm), float(pixel_size_nm)), metadata=meta)
    elif "pixel_size_problem" in acq.metadata:  # a corrupt calibration is an error unless the user overrides it
        raise CristaeZooError(acq.metadata["pixel_size_problem"])
    return acq


def pixel_size_note(acq: Acquisition) -> str | None:
    """Why the file's metadata gave no pixel size although it has a calibration (a 72-dpi resolution, an unknown
    unit), for the "no pixel size" message; None when there is nothing to explain."""
    note = acq.metadata.get("pixel_size_note")
    return str(note) if note else None


def _apply_axes(acq: Acquisition, axes: str | None) -> Acquisition:
    if axes is not None:
        axes = axes.strip().upper()
        ok = len(axes) == len(acq.shape) and set(axes) <= set(KNOWN_AXES) and len(set(axes)) == len(axes)
        if not ok or not {"Y", "X"} <= set(axes):
            raise CristaeZooError(
                f"{acq.path}: --axes {axes} does not fit shape {acq.shape}; expected one letter of T, Z, C, Y, X per"
                f" dimension ({len(acq.shape)} letters, including Y and X), e.g. {'ZYX' if len(acq.shape) == 3 else 'TZYX'}"
            )
        _check_samples_axis(acq, axes)
        return replace(acq, axes=axes)
    twice = sorted({a for a in acq.axes if a in KNOWN_AXES and acq.axes.count(a) > 1})
    if twice:
        raise CristaeZooError(
            f"{acq.path}: the metadata names axis {', '.join(twice)} more than once (axes"
            f" {acq.metadata.get('file_axes', acq.axes)!r}, shape {acq.shape}); give the axes with --axes, e.g."
            f" --axes {_guess_axes('', len(acq.shape)).split(' or ')[0]}"
        )
    unknown = "".join(a for a in acq.axes if a not in KNOWN_AXES)
    if unknown or not {"Y", "X"} <= set(acq.axes):
        guess = _guess_axes(str(acq.metadata.get("file_axes", acq.axes)), len(acq.shape))
        raise CristaeZooError(
            f"{acq.path}: unknown axes order {acq.metadata.get('file_axes', acq.axes)!r} (shape {acq.shape});"
            f" give the axes with --axes, e.g. --axes {guess.split(' or ')[0]} ({guess})"
        )
    return acq


def _guess_axes(file_axes: str, ndim: int) -> str:
    """A suggestion for --axes: the file's known letters kept (S, colour samples, as C), unknown ones filled
    with Z then T from the plane outwards."""
    if len(file_axes) != ndim or not set(file_axes) & set("YXS"):
        return {2: "YX", 3: "ZYX or TYX", 4: "TZYX", 5: "TZCYX"}.get(ndim, "TZYX")
    letters = [_TIFFFILE_AXES.get(a, "?") for a in file_axes]
    free = [a for a in "ZT" if a not in letters]
    for i in reversed(range(len(letters))):
        if letters[i] == "?" and free:
            letters[i] = free.pop(0)
    guess = "".join(letters)
    return guess if "?" not in guess else "TZYX"


def _check_samples_axis(acq: Acquisition, axes: str) -> None:
    """--axes must keep an RGB(A) file's colour samples axis (tifffile's S) a channel: calling it Z or X would
    read red, green and blue as planes or columns."""
    file_axes = str(acq.metadata.get("file_axes", ""))
    if len(file_axes) == len(axes) and "S" in file_axes and axes[file_axes.index("S")] != "C":
        i = file_axes.index("S")
        raise CristaeZooError(
            f"{acq.path}: --axes {axes} calls the colour samples axis (dimension {i}, size {acq.shape[i]}, RGB) "
            f"{axes[i]}; mark it C and choose the mitochondria channel with --channel N"
        )


def _apply_channel(acq: Acquisition, channel: int | None) -> Acquisition:
    n = acq.sizes.get("C")
    if n is None:
        if channel not in (None, 0):
            raise CristaeZooError(f"{acq.path}: --channel {channel} given but the image has no channel axis")
        return acq
    if channel is None:
        if n == 1:
            return replace(acq, channel=0)
        colour = "S" in str(acq.metadata.get("file_axes", "")) and n in (3, 4)
        what = f"is an RGB{'A' if n == 4 else ''} colour image" if colour else f"has a channel axis with {n} channels"
        raise CristaeZooError(
            f"{acq.path}: {what} (axes {acq.axes}, shape {acq.shape}); choose the"
            f" mitochondria channel with --channel N (0 to {n - 1})"
        )
    if not 0 <= channel < n:
        raise CristaeZooError(f"{acq.path}: --channel {channel} out of range (the image has {n} channels: 0 to {n - 1})")
    return replace(acq, channel=channel)


def _open_tiff(path: Path) -> Acquisition:
    import tifffile

    size = path.stat().st_size
    if size == 0:
        raise CristaeZooError(f"{path}: empty file (0 bytes)")
    try:
        with tifffile.TiffFile(path) as tf:
            series = tf.series[0]
            file_axes, shape, dtype = series.axes, tuple(series.shape), np.dtype(series.dtype)
            page = tf.pages.first
            tags = {t.name: t.value for t in page.tags.values() if t.name in ("XResolution", "YResolution",
                                                                                "ResolutionUnit")}  # fmt: skip
            if tf.is_ome and tf.ome_metadata:
                kind, meta = "ome-tiff", {"ome_xml": tf.ome_metadata}
            elif tf.is_imagej:
                kind, meta = "imagej", {"imagej": dict(tf.imagej_metadata or {})}
            else:
                kind, meta = "tiff", {}
            for name in ("Software", "Artist", "DateTime", "HostComputer"):
                if name in page.tags:
                    meta.setdefault("tags", {})[name] = page.tags[name].value
            _check_tiff_extent(path, size, series, page, dtype)
    except CristaeZooError:
        raise
    except Exception as err:  # tifffile raises many types for unreadable files
        raise CristaeZooError(f"{path}: cannot read as TIFF ({type(err).__name__}: {err})") from None
    axes = "".join(_TIFFFILE_AXES.get(a, "?") for a in file_axes)
    meta["file_axes"] = file_axes
    acq = Acquisition(path=path, kind=kind, axes=axes, shape=shape, dtype=dtype, metadata=meta)
    if kind == "ome-tiff":
        return _ome_physical(acq)
    return _tiff_physical(acq, tags)


def _check_tiff_extent(path: Path, file_size: int, series: Any, first_page: Any, dtype: np.dtype) -> None:
    """Refuse a TIFF whose pixel data, as declared, ends beyond the end of the file (an interrupted copy or
    download): tifffile would otherwise read zeros or fail on some plane deep into a run."""
    declared = math.prod(series.shape) * dtype.itemsize
    offset = getattr(series, "dataoffset", None)
    ends = []
    if offset is not None:  # contiguous data (ImageJ hyperstacks, tifffile's shaped files): one extent
        ends.append(int(offset) + declared)
    offsets, counts = tuple(first_page.dataoffsets or ()), tuple(first_page.databytecounts or ())
    ends.extend(int(o) + int(c) for o, c in zip(offsets, counts) if c)
    end = max(ends, default=0)
    if end > file_size:
        raise CristaeZooError(
            f"{path}: truncated: the header declares pixel data up to byte {end:,} ({'×'.join(map(str, series.shape))}"
            f" {dtype}) but the file has {file_size:,} bytes; copy or export the file again"
        )
    # tifffile fills the planes an OME-XML declares but the file lacks with zeros (pages None): silently wrong.
    if offset is None:
        pages = list(getattr(series, "pages", None) or [])
        missing = sum(page is None for page in pages)
        if missing:
            raise CristaeZooError(
                f"{path}: the metadata declares {len(pages)} planes but the file holds only {len(pages) - missing}"
                " (truncated, or the OME-XML belongs to another file); copy or export the file again"
            )


def _tiff_physical(acq: Acquisition, tags: dict[str, Any]) -> Acquisition:
    """Pixel size from the resolution tags (px per unit), the unit from ImageJ metadata or the ResolutionUnit.

    The resolution tags of a plain TIFF are usually a screen or print resolution (72, 96, 300 dpi) written by
    default; such values, and any other implausible pixel size from these tags, are recorded as a
    `pixel_size_note` and the file counts as having no pixel size (the user then gives --pixel-size or
    --rescale) instead of turning into a rescale factor of thousands."""
    path, ij = acq.path, acq.metadata.get("imagej", {})
    notes: dict[str, str] = {}
    unit_nm, per_inch, unit_name = None, False, None
    if acq.kind == "imagej":
        unit_name = ij.get("unit")
        unit_nm = nm_per_unit(unit_name)
        per_inch = unit_nm == _NM_PER_UNIT["inch"]
        if unit_nm is None and not _is_uncalibrated(unit_name):
            notes["pixel_size_note"] = f"its ImageJ unit {unit_name!r} is not a known length unit"
    else:
        resolution_unit = int(tags.get("ResolutionUnit", 1))
        if resolution_unit in (2, 3):  # inch, centimeter; 1 = none (no absolute unit: no pixel size)
            unit_nm, per_inch = (2.54e7, True) if resolution_unit == 2 else (1e7, False)
            unit_name = "inch" if per_inch else "cm"
    pixel = None
    if unit_nm is not None and "XResolution" in tags and "YResolution" in tags:
        rx, ry = (_ratio(tags[k]) for k in ("XResolution", "YResolution"))
        if rx and ry and math.isfinite(rx) and math.isfinite(ry) and rx > 0 and ry > 0:
            source = "ImageJ calibration" if acq.kind == "imagej" and not per_inch else "resolution tags"
            pixel, note = _checked_pixel(path, (unit_nm / ry, unit_nm / rx), source, per_inch=per_inch)
            if note:
                notes["pixel_size_note"] = note
        elif acq.kind == "imagej":
            notes["pixel_size_note"] = f"its resolution tags ({tags['XResolution']}, {tags['YResolution']}) are zero"
    z = physical_value(path, ij.get("spacing"), "ImageJ z spacing")
    z_nm = z * unit_nm if z and unit_nm and not per_inch else None  # a z step in inches is as bogus as 72 dpi
    # ImageJ writes finterval=0 for "not set" (its default frame interval).
    dt = physical_value(path, ij.get("finterval"), "ImageJ frame interval (finterval)", allow_zero=True)
    return replace(acq, pixel_size_nm=pixel, z_step_nm=z_nm, time_step_s=dt, metadata={**acq.metadata, **notes})


def _ratio(value: Any) -> float | None:
    try:
        num, den = value
        return float(num) / float(den) if den else None
    except (TypeError, ValueError):
        try:
            return float(value) if value else None
        except (TypeError, ValueError):
            return None


def _ome_physical(acq: Acquisition) -> Acquisition:
    path = acq.path
    try:
        root = ET.fromstring(acq.metadata["ome_xml"])
    except ET.ParseError as err:
        raise CristaeZooError(
            f"{path}: the OME-XML in the file is not valid XML ({err}); re-export the file (e.g. with Bio-Formats)"
        ) from None
    pixels = _ome_pixels(root)
    if pixels is None:
        return acq
    notes: dict[str, str] = {}

    def size(attr: str, *, pixel: bool) -> float | None:
        value = physical_value(path, pixels.get(attr), f"OME-XML {attr}", pixel=pixel)
        if value is None:
            return None
        unit = pixels.get(attr + "Unit", "µm")  # the OME schema's default unit
        factor = nm_per_unit(unit)
        if factor is None and not _is_uncalibrated(unit):
            notes.setdefault("pixel_size_note", f"its OME-XML {attr}Unit {unit!r} is not a known length unit")
        return value * factor if factor else None

    def pixel_size() -> tuple[float, float] | None:
        px, py = size("PhysicalSizeX", pixel=True), size("PhysicalSizeY", pixel=True)
        return (py or px, px or py) if (px or py) else None  # type: ignore[return-value]

    pixel, problem = _pixel_or_problem(pixel_size)
    dt = physical_value(path, pixels.get("TimeIncrement"), "OME-XML TimeIncrement", allow_zero=True)
    dt_s = None
    if dt is not None:
        unit = pixels.get("TimeIncrementUnit", "s")
        per = _S_PER_UNIT.get(str(unit).strip().lower())
        if per is None:  # guessing seconds would write a wrong frame interval into the restored file
            raise CristaeZooError(
                f"{path}: unknown OME-XML TimeIncrementUnit {unit!r}; expected s, ms, µs, min or h (fix the metadata)"
            )
        dt_s = dt * per
    _check_ome_sizes(acq, pixels)
    return replace(acq, pixel_size_nm=pixel, z_step_nm=size("PhysicalSizeZ", pixel=False), time_step_s=dt_s,
                   metadata={**acq.metadata, **notes, **problem})  # fmt: skip


def _check_ome_sizes(acq: Acquisition, pixels: ET.Element) -> None:
    """The OME-XML's SizeX/SizeY must describe the pixel data that tifffile found; otherwise the metadata belongs
    to another image (an edited or concatenated file) and its physical sizes cannot be trusted."""
    sizes = acq.sizes
    for a in "XY":
        declared = pixels.get(f"Size{a}")
        if declared is None or a not in acq.axes:
            continue
        try:
            n = int(declared)
        except ValueError:
            raise CristaeZooError(f"{acq.path}: invalid OME-XML Size{a} {declared!r} (expected a positive integer)") from None
        if n != sizes[a]:
            raise CristaeZooError(
                f"{acq.path}: the OME-XML declares Size{a}={n} but the image data has {sizes[a]} px along {a};"
                " the metadata does not describe this image: re-export the file"
            )


def _ome_pixels(root: ET.Element) -> ET.Element | None:
    image = root.find(f"{{{_OME_NS}}}Image")
    return None if image is None else image.find(f"{{{_OME_NS}}}Pixels")


def _open_zarr(path: Path) -> Acquisition:
    import zarr

    try:
        group = zarr.open_group(path, mode="r")
        attrs = dict(group.attrs)
    except Exception as err:  # zarr raises several types for missing or broken stores
        raise CristaeZooError(f"{path}: cannot read as OME-Zarr ({type(err).__name__}: {err})") from None
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else attrs
    multiscales = ome.get("multiscales")
    if not multiscales or not isinstance(multiscales, list) or not isinstance(multiscales[0], dict):
        raise CristaeZooError(f"{path}: not an OME-Zarr image (no 'multiscales' in the group attributes)")
    ms = multiscales[0]
    version = str(ome.get("version") or ms.get("version") or "0.4")
    datasets = ms.get("datasets")
    if not datasets or not isinstance(datasets, list) or not isinstance(datasets[0], dict) or "path" not in datasets[0]:
        raise CristaeZooError(f"{path}: the OME-Zarr multiscales lists no datasets (expected datasets[0].path)")
    dataset = datasets[0]
    try:
        array = group[str(dataset["path"])]
        shape, dtype = tuple(array.shape), np.dtype(array.dtype)
        # Metadata without a single stored chunk is an interrupted copy or write, not an image of fill values.
        stored = array.nchunks_initialized if 0 not in shape else 1
    except KeyError:
        raise CristaeZooError(f"{path}: the OME-Zarr dataset {dataset['path']!r} is missing") from None
    except Exception as err:  # a broken .zarray / zarr.json
        raise CristaeZooError(
            f"{path}: cannot read the OME-Zarr dataset {dataset['path']!r} ({type(err).__name__}: {err})"
        ) from None
    if stored == 0:
        raise CristaeZooError(
            f"{path}: the OME-Zarr dataset {dataset['path']!r} declares shape {shape} but holds no data (no chunk is"
            " stored): the copy or the acquisition was interrupted; copy or export it again"
        )
    axes_meta = ms.get("axes") or [{"name": n} for n in "tczyx"[-len(shape):]]
    axes_meta = [a if isinstance(a, dict) else {"name": a} for a in axes_meta]
    if len(axes_meta) != len(shape):
        raise CristaeZooError(
            f"{path}: the OME-Zarr metadata names {len(axes_meta)} axes but the array {dataset['path']!r} has"
            f" {len(shape)} dimensions (shape {shape}); fix the multiscales axes"
        )
    names = [str(a.get("name", "")).lower() for a in axes_meta]
    axes = "".join(n.upper() if n in ("t", "c", "z", "y", "x") else "?" for n in names)
    scale = [1.0] * len(shape)
    notes: dict[str, str] = {}
    for transforms in (dataset.get("coordinateTransformations", []), ms.get("coordinateTransformations", [])):
        for t in transforms or []:
            if isinstance(t, dict) and t.get("type") == "scale":
                values = t.get("scale")
                if not isinstance(values, list) or len(values) != len(shape):
                    raise CristaeZooError(
                        f"{path}: the OME-Zarr scale {values!r} does not have one value per axis ({len(shape)})"
                    )
                checked = []
                for name, v in zip(names, values):
                    if name in ("y", "x"):  # a bad pixel size may be overridden with --pixel-size
                        value, problem = _pixel_or_problem(lambda: physical_value(
                            path, v, f"OME-Zarr scale of axis {name!r}", pixel=True))  # fmt: skip
                        notes.update(problem)
                    else:
                        value = physical_value(path, v, f"OME-Zarr scale of axis {name!r}")
                    checked.append(math.nan if value is None else value)
                scale = [s * v for s, v in zip(scale, checked)]
    physical: dict[str, float | None] = {}
    for a, meta, s in zip(axes, axes_meta, scale):
        unit = meta.get("unit")
        if a in "ZYX":
            f = nm_per_unit(unit)
            if f is None and not _is_uncalibrated(unit) and a in "YX":
                notes["pixel_size_note"] = f"its OME-Zarr unit {unit!r} of axis {a.lower()} is not a known length unit"
            physical[a] = s * f if f and math.isfinite(s) else None
        elif a == "T":
            per = _S_PER_UNIT.get(str(unit).strip().lower()) if unit else None
            if unit and per is None:
                raise CristaeZooError(f"{path}: unknown OME-Zarr time unit {unit!r} (expected e.g. second, millisecond)")
            physical[a] = s * per if per and math.isfinite(s) else None
    pixel = (physical["Y"], physical["X"]) if physical.get("Y") and physical.get("X") else None
    meta = {
        "ngff_version": version,
        "zarr_format": group.metadata.zarr_format,
        "dataset_path": dataset["path"],
        "attrs": attrs,
        "file_axes": "".join(names),
        "chunks": tuple(array.chunks),
        **notes,
    }
    return Acquisition(path=path, kind="ome-zarr", axes=axes, shape=shape, dtype=dtype, pixel_size_nm=pixel,
                       z_step_nm=physical.get("Z"), time_step_s=physical.get("T"), metadata=meta)  # fmt: skip


# ------------------------------------------------------------------------------------------------------ output


@dataclass(frozen=True)
class OutputSpec:
    """The restored file: canonical axes (TZYX subset), float32, and the metadata carried over."""

    path: Path
    kind: str
    axes: str
    shape: tuple[int, ...]
    pixel_size_nm: tuple[float, float] | None
    z_step_nm: float | None
    time_step_s: float | None
    source: Acquisition
    provenance: dict[str, Any] = field(default_factory=dict)
    channel_names: tuple[str, ...] = ()  # several output channels (a C axis in `axes`), e.g. label-free's mito, DNA

    @property
    def plane_shape(self) -> tuple[int, int]:
        return self.shape[-2], self.shape[-1]

    @property
    def n_planes(self) -> int:
        return math.prod(self.shape[:-2])


def output_kind(source: Acquisition, output: Path) -> str:
    """OME-Zarr for a .zarr output, OME-TIFF for .ome.tif(f), else the input's kind (ImageJ for a zarr input)."""
    name = output.name.lower()
    if name.endswith(ZARR_SUFFIXES):
        return "ome-zarr"
    if name.endswith((".ome.tif", ".ome.tiff")):
        return "ome-tiff"
    if not name.endswith(TIFF_SUFFIXES):
        raise CristaeZooError(f"{output}: unknown output format (expected .tif, .tiff, .ome.tif or .zarr)")
    if source.kind == "ome-zarr":
        return "imagej"
    if source.kind == "ome-tiff":
        return "imagej"  # a .tif name for an OME input: ImageJ hyperstack (the .ome.tif name keeps OME)
    return source.kind


def output_spec(
    source: Acquisition,
    output: Path,
    plane_shape: tuple[int, int],
    factor: float,
    provenance: dict[str, Any],
    *,
    axes: str | None = None,
    channel_names: tuple[str, ...] = (),
) -> OutputSpec:
    """What the restored file will be: `plane_shape` is the restored plane size, `factor` the scale applied (the
    pixel size follows from the plane sizes). `axes`: the output's axes (default: the input's in canonical order,
    channel dropped); with a C axis, `channel_names` gives its channels."""
    axes = axes or "".join(a for a in CANONICAL if a in source.axes)
    if ("C" in axes) != bool(channel_names):
        raise ValueError(f"output axes {axes!r} and channel names {channel_names!r} disagree")
    shape = tuple(len(channel_names) if a == "C" else source.sizes[a] for a in axes if a not in "YX") + tuple(
        plane_shape
    )
    pixel = None
    if source.pixel_size_nm is not None:
        sy, sx = source.pixel_size_nm[0] * source.plane_shape[0], source.pixel_size_nm[1] * source.plane_shape[1]
        pixel = (sy / plane_shape[0], sx / plane_shape[1])  # same field of view, more pixels
    return OutputSpec(path=Path(output), kind=output_kind(source, Path(output)), axes=axes, shape=shape,
                      pixel_size_nm=pixel, z_step_nm=source.z_step_nm, time_step_s=source.time_step_s,
                      source=source, provenance=provenance, channel_names=tuple(channel_names))  # fmt: skip


# ---------------------------------------------------------------------------------------------- writing TIFF


def write_tiff_planes(spec: OutputSpec, path: Path, planes: Iterable[np.ndarray]) -> None:
    """Stream float32 planes (canonical order) into a TIFF of `spec.kind` at `path` (a temporary path)."""
    import tifffile

    kwargs: dict[str, Any] = {"shape": spec.shape, "dtype": np.float32, "photometric": "minisblack"}
    source_tags = spec.source.metadata.get("tags", {})
    if "Artist" in source_tags:
        kwargs["extratags"] = [(315, "s", 0, str(source_tags["Artist"]), True)]
    if "DateTime" in source_tags:
        kwargs["datetime"] = str(source_tags["DateTime"])
    px = spec.pixel_size_nm
    if spec.kind == "imagej":
        meta = _imagej_metadata(spec)
        kwargs.update(imagej=True, metadata=meta)
        if px:
            unit_nm = nm_per_unit(meta.get("unit")) or 1e3
            kwargs["resolution"] = (unit_nm / px[1], unit_nm / px[0])
    elif spec.kind == "ome-tiff":
        kwargs.update(description=_ome_xml(spec), metadata=None)
        if px:
            kwargs.update(resolution=(1e7 / px[1], 1e7 / px[0]), resolutionunit="CENTIMETER")
    else:
        kwargs["metadata"] = {"axes": spec.axes, "cristae_zoo": json.dumps(spec.provenance)}
        if px:
            kwargs.update(resolution=(1e7 / px[1], 1e7 / px[0]), resolutionunit="CENTIMETER")
    if len(spec.shape) == 2:
        planes = list(planes)
        data: Any = planes[0]
        kwargs.pop("shape"), kwargs.pop("dtype")
    else:
        data = iter(planes)
    tifffile.imwrite(path, data, bigtiff=_needs_bigtiff(spec) and spec.kind != "imagej", **kwargs)


def _needs_bigtiff(spec: OutputSpec) -> bool:
    return math.prod(spec.shape) * 4 > 3.9 * 2**30


def _imagej_metadata(spec: OutputSpec) -> dict[str, Any]:
    """The input's ImageJ properties, with sizes, units and steps of the output."""
    source = spec.source.metadata.get("imagej", {}) if spec.source.kind == "imagej" else {}
    keep = ("Info", "Properties", "loop", "fps", "Labels", "Ranges", "LUTs", "mode")
    meta: dict[str, Any] = {k: copy.deepcopy(v) for k, v in source.items() if k in keep}
    meta.pop("Ranges", None), meta.pop("LUTs", None)  # display ranges of the raw counts do not fit restored values
    meta["mode"] = "grayscale"
    if "Labels" in meta:
        meta["Labels"] = _selected_labels(spec, meta["Labels"])
        if meta["Labels"] is None:
            meta.pop("Labels")
    meta["axes"] = spec.axes
    unit = str(source.get("unit", "um")) if nm_per_unit(source.get("unit")) else "um"
    meta["unit"] = "um" if unit in ("micron", "\\u00B5m") else unit
    unit_nm = nm_per_unit(meta["unit"]) or 1e3
    if spec.z_step_nm:
        meta["spacing"] = spec.z_step_nm / unit_nm
    if spec.time_step_s:
        meta["finterval"] = spec.time_step_s
    info = str(meta.get("Info", "")).rstrip()
    meta["Info"] = (info + "\n" if info else "") + "cristae_zoo = " + json.dumps(spec.provenance)
    return meta


def _selected_labels(spec: OutputSpec, labels: Any) -> list[str] | None:
    """The ImageJ slice labels of the planes that are kept (one channel), or None if they do not line up."""
    src = spec.source
    if spec.channel_names or not isinstance(labels, list) or len(labels) != math.prod(src.shape[:-2]):
        return None  # several output channels: the input's labels do not line up
    order = [a for a in src.axes if a not in "YX"]
    grid = list(product(*(range(src.sizes[a]) for a in order)))
    where = {idx: lab for idx, lab in zip(grid, labels)}
    out = []
    for index in src.plane_indices():
        pos = dict(zip(src.plane_axes, index))
        pos["C"] = src.channel or 0
        out.append(where[tuple(pos[a] for a in order)])
    return out


def _ome_xml(spec: OutputSpec) -> str:
    """The input's OME-XML (or a new one) with the Pixels element describing the restored planes."""
    ET.register_namespace("", _OME_NS)
    src = spec.source
    if src.kind == "ome-tiff":
        root = ET.fromstring(src.metadata["ome_xml"])
        for image in root.findall(f"{{{_OME_NS}}}Image")[1:]:  # only the first series is restored
            root.remove(image)
    else:
        root = ET.Element(f"{{{_OME_NS}}}OME")
        image = ET.SubElement(root, f"{{{_OME_NS}}}Image", ID="Image:0", Name=src.path.name)
        ET.SubElement(image, f"{{{_OME_NS}}}Pixels", ID="Pixels:0")
    root.set("UUID", f"urn:uuid:{uuid.uuid4()}")
    root.set("Creator", "cristae-zoo")
    image = root.find(f"{{{_OME_NS}}}Image")
    pixels = _ome_pixels(root)
    assert image is not None and pixels is not None
    sizes = dict(zip(spec.axes, spec.shape))
    pixels.set("DimensionOrder", "XYCZT" if spec.channel_names else "XYZCT")  # our planes: T outer, then Z, C
    pixels.set("Type", "float")
    pixels.attrib.pop("SignificantBits", None)
    pixels.attrib.pop("BigEndian", None)
    for a in "XYZT":
        pixels.set(f"Size{a}", str(sizes.get(a, 1)))
    pixels.set("SizeC", str(max(1, len(spec.channel_names))))
    if spec.pixel_size_nm:
        for a, v in zip("YX", spec.pixel_size_nm):
            pixels.set(f"PhysicalSize{a}", f"{v:.6g}")
            pixels.set(f"PhysicalSize{a}Unit", "nm")
    if spec.z_step_nm and pixels.get("PhysicalSizeZ") is None:
        pixels.set("PhysicalSizeZ", f"{spec.z_step_nm:.6g}")
        pixels.set("PhysicalSizeZUnit", "nm")
    if spec.time_step_s and pixels.get("TimeIncrement") is None:
        pixels.set("TimeIncrement", f"{spec.time_step_s:.6g}")
        pixels.set("TimeIncrementUnit", "s")
    channel = src.channel or 0
    channels = pixels.findall(f"{{{_OME_NS}}}Channel")
    for i, ch in enumerate(channels):
        if i != channel:
            pixels.remove(ch)
    kept = pixels.find(f"{{{_OME_NS}}}Channel")
    if kept is None:
        kept = ET.Element(f"{{{_OME_NS}}}Channel")
        pixels.insert(0, kept)
    kept.set("ID", "Channel:0:0")
    kept.set("SamplesPerPixel", "1")
    for i, channel_name in enumerate(spec.channel_names):  # the package's output channels replace the input's one
        el = kept if i == 0 else ET.Element(f"{{{_OME_NS}}}Channel")
        el.set("ID", f"Channel:0:{i}")
        el.set("SamplesPerPixel", "1")
        el.set("Name", channel_name)
        if i:
            pixels.insert(list(pixels).index(kept) + i, el)
    for tag in ("TiffData", "BinData", "MetadataOnly"):
        for el in pixels.findall(f"{{{_OME_NS}}}{tag}"):
            pixels.remove(el)
    planes = pixels.findall(f"{{{_OME_NS}}}Plane")
    for plane in planes:
        pixels.remove(plane)
        if int(plane.get("TheC", 0)) == channel and not spec.channel_names:
            plane.set("TheC", "0")
            pixels.append(plane)  # plane positions and time stamps of the kept channel
    position = list(pixels).index(kept) + max(1, len(spec.channel_names))
    pixels.insert(position, ET.Element(f"{{{_OME_NS}}}TiffData", IFD="0", PlaneCount=str(spec.n_planes)))
    description = image.find(f"{{{_OME_NS}}}Description")
    if description is None:
        description = ET.Element(f"{{{_OME_NS}}}Description")
        image.insert(0, description)
    note = "Restored by cristae-zoo: " + json.dumps(spec.provenance)
    description.text = (description.text + "\n" if description.text else "") + note
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(root, encoding="unicode")


# ----------------------------------------------------------------------------------------------- writing zarr


def ngff_metadata(spec: OutputSpec) -> tuple[dict[str, Any], int]:
    """Group attributes of the restored OME-Zarr and its zarr format (NGFF 0.5 → zarr v3, else v2 with 0.4)."""
    src = spec.source
    version = src.metadata.get("ngff_version", "0.4") if src.kind == "ome-zarr" else "0.4"
    version = "0.5" if str(version).startswith("0.5") else "0.4"
    axes, scale = [], []
    for a in spec.axes:
        if a == "T":
            axes.append({"name": "t", "type": "time", "unit": "second"})
            scale.append(spec.time_step_s or 1.0)
        elif a == "Z":
            axes.append({"name": "z", "type": "space", "unit": "nanometer"})
            scale.append(spec.z_step_nm or 1.0)
        elif a == "C":
            axes.append({"name": "c", "type": "channel"})
            scale.append(1.0)
        else:
            axes.append({"name": a.lower(), "type": "space", "unit": "nanometer"})
            scale.append(spec.pixel_size_nm[0 if a == "Y" else 1] if spec.pixel_size_nm else 1.0)
    for ax, a in zip(axes, spec.axes):  # unknown physical size: no unit rather than a wrong one
        if a == "C":
            continue
        if (a == "T" and not spec.time_step_s) or (a == "Z" and not spec.z_step_nm) or (
                a in "YX" and not spec.pixel_size_nm):  # fmt: skip
            ax.pop("unit")
    source_attrs = copy.deepcopy(src.metadata.get("attrs", {})) if src.kind == "ome-zarr" else {}
    ome = source_attrs.pop("ome", None) if isinstance(source_attrs.get("ome"), dict) else None
    container = ome if ome is not None else source_attrs
    old_ms = (container.get("multiscales") or [{}])[0]
    ms: dict[str, Any] = {
        "axes": axes,
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
        "name": old_ms.get("name", src.path.stem),
    }
    if "metadata" in old_ms:
        ms["metadata"] = old_ms["metadata"]
    if version == "0.4":
        ms["version"] = "0.4"
    out: dict[str, Any] = {k: v for k, v in container.items() if k not in ("multiscales", "omero", "version")}
    out["multiscales"] = [ms]
    omero = container.get("omero")
    if isinstance(omero, dict) and omero.get("channels"):
        omero = dict(omero)
        chans = omero["channels"]
        ch = dict(chans[min(src.channel or 0, len(chans) - 1)])
        ch.pop("window", None)  # display window of the raw counts does not fit restored values
        omero["channels"] = [ch] if not spec.channel_names else [{"label": n} for n in spec.channel_names]
        out["omero"] = omero
    elif spec.channel_names:
        out["omero"] = {"channels": [{"label": n} for n in spec.channel_names]}
    if version == "0.5":
        out["version"] = "0.5"
        attrs = {k: v for k, v in source_attrs.items() if k not in ("multiscales", "omero")}
        attrs["ome"] = out
    else:
        attrs = out
    attrs["cristae_zoo"] = spec.provenance
    return attrs, (3 if version == "0.5" else 2)


def create_zarr(spec: OutputSpec, path: Path) -> Any:
    """Create the restored OME-Zarr at `path` (attributes and an empty array); returns the array."""
    import zarr

    attrs, zarr_format = ngff_metadata(spec)
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    chunks = tuple([1] * (len(spec.shape) - 2) + [min(n, 1024) for n in spec.plane_shape])
    kwargs: dict[str, Any] = {"dimension_names": [a.lower() for a in spec.axes]} if zarr_format == 3 else {}
    array = group.create_array("0", shape=spec.shape, chunks=chunks, dtype="float32", fill_value=0.0, **kwargs)
    group.attrs.update(attrs)
    return array


def open_zarr_output(path: Path) -> Any:
    import zarr

    return zarr.open_array(Path(path) / "0", mode="r+")


# --------------------------------------------------------------------------------------------- atomic outputs


@contextmanager
def staged_output(target: Path, *, overwrite: bool, inputs: Iterable[Path] = ()) -> Iterator[Path]:
    """A temporary path beside `target` (a TIFF file, or an OME-Zarr folder) that replaces `target` only if the
    block succeeds; on any failure (or SIGTERM/SIGHUP inside `io.cleanup_on_signals`) it is removed and `target`
    is left as it was. Another run writing the same target makes this one fail (`io.staged_file`/`staged_dir`)."""
    from cristae_zoo.io import staged_dir, staged_file

    target = Path(target)
    if is_zarr(target) or target.name.lower().endswith(ZARR_SUFFIXES):
        # plan() never points a run at a folder that is not an OME-Zarr, so no marker file is required here.
        with staged_dir(target, overwrite=overwrite, inputs=inputs) as tmp:
            yield tmp
    else:
        with staged_file(target, overwrite=overwrite, inputs=inputs) as tmp:
            yield tmp


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
