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
               "microsecond": 1e-6, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}  # fmt: skip
_OME_NS = "http://www.openmicroscopy.org/Schemas/OME/2016-06"


def nm_per_unit(unit: str | None) -> float | None:
    return _NM_PER_UNIT.get(str(unit).strip().lower()) if unit else None


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
        plane = np.asarray(array[self.file_key(index)])
        if self.axes.index("Y") > self.axes.index("X"):
            plane = plane.T
        plane = plane.astype(np.float32, copy=False)
        if not np.isfinite(plane).all():
            raise CristaeZooError(f"{self.path}: plane {self.plane_label(index)} contains NaN or Inf values")
        return plane

    @contextmanager
    def open_array(self) -> Iterator[Any]:
        """A lazy array over the file (indexing reads only what is asked for)."""
        import zarr

        if self.kind == "ome-zarr":
            yield zarr.open_array(self.path / self.metadata["dataset_path"], mode="r")
            return
        import tifffile

        try:
            with tifffile.TiffFile(self.path) as tf:
                store = tf.series[0].aszarr()
                try:
                    yield zarr.open_array(store, mode="r")
                finally:
                    store.close()
        except OSError as err:
            raise CristaeZooError(f"{self.path}: cannot read ({err})") from None

    def iter_planes(self, indices: Iterable[tuple[int, ...]] | None = None) -> Iterator[np.ndarray]:
        with self.open_array() as array:
            for index in self.plane_indices() if indices is None else indices:
                yield self.read_plane(array, index)


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
    if pixel_size_nm is not None:
        if not pixel_size_nm > 0:
            raise CristaeZooError(f"--pixel-size {pixel_size_nm}: expected a positive size in nm")
        acq = replace(acq, pixel_size_nm=(float(pixel_size_nm), float(pixel_size_nm)))
    if min(acq.plane_shape) < 1 or 0 in acq.shape:
        raise CristaeZooError(f"{path}: empty image (shape {acq.shape})")
    return acq


def _apply_axes(acq: Acquisition, axes: str | None) -> Acquisition:
    if axes is not None:
        axes = axes.strip().upper()
        ok = len(axes) == len(acq.shape) and set(axes) <= set(KNOWN_AXES) and len(set(axes)) == len(axes)
        if not ok or not {"Y", "X"} <= set(axes):
            raise CristaeZooError(
                f"{acq.path}: --axes {axes} does not fit shape {acq.shape}; expected one letter of T, Z, C, Y, X per"
                f" dimension ({len(acq.shape)} letters, including Y and X), e.g. {'ZYX' if len(acq.shape) == 3 else 'TZYX'}"
            )
        return replace(acq, axes=axes)
    unknown = "".join(a for a in acq.axes if a not in KNOWN_AXES)
    if unknown or not {"Y", "X"} <= set(acq.axes):
        guess = {2: "YX", 3: "ZYX or TYX", 4: "TZYX", 5: "TZCYX"}.get(len(acq.shape), "TZYX")
        raise CristaeZooError(
            f"{acq.path}: unknown axes order {acq.metadata.get('file_axes', acq.axes)!r} (shape {acq.shape});"
            f" give the axes with --axes, e.g. --axes {guess.split(' or ')[0]} ({guess})"
        )
    return acq


def _apply_channel(acq: Acquisition, channel: int | None) -> Acquisition:
    n = acq.sizes.get("C")
    if n is None:
        if channel not in (None, 0):
            raise CristaeZooError(f"{acq.path}: --channel {channel} given but the image has no channel axis")
        return acq
    if channel is None:
        if n == 1:
            return replace(acq, channel=0)
        raise CristaeZooError(
            f"{acq.path}: has a channel axis with {n} channels (axes {acq.axes}, shape {acq.shape}); choose the"
            f" mitochondria channel with --channel N (0 to {n - 1})"
        )
    if not 0 <= channel < n:
        raise CristaeZooError(f"{acq.path}: --channel {channel} out of range (the image has {n} channels: 0 to {n - 1})")
    return replace(acq, channel=channel)


def _open_tiff(path: Path) -> Acquisition:
    import tifffile

    if path.stat().st_size == 0:
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


def _tiff_physical(acq: Acquisition, tags: dict[str, Any]) -> Acquisition:
    """Pixel size from the resolution tags (px per unit), the unit from ImageJ metadata or the ResolutionUnit."""
    ij = acq.metadata.get("imagej", {})
    unit_nm = None
    if acq.kind == "imagej":
        unit_nm = nm_per_unit(ij.get("unit"))
    elif int(tags.get("ResolutionUnit", 1)) in (2, 3):  # inch, centimeter; 1 = none
        unit_nm = 2.54e7 if int(tags["ResolutionUnit"]) == 2 else 1e7
    pixel = None
    if unit_nm is not None and "XResolution" in tags and "YResolution" in tags:
        rx, ry = (_ratio(tags[k]) for k in ("XResolution", "YResolution"))
        if rx and ry:
            pixel = (unit_nm / ry, unit_nm / rx)
    z = float(ij["spacing"]) * unit_nm if ij.get("spacing") and unit_nm else None
    dt = float(ij["finterval"]) if ij.get("finterval") else None
    return replace(acq, pixel_size_nm=pixel, z_step_nm=z, time_step_s=dt)


def _ratio(value: Any) -> float | None:
    try:
        num, den = value
        return float(num) / float(den) if den else None
    except (TypeError, ValueError):
        return float(value) if value else None


def _ome_physical(acq: Acquisition) -> Acquisition:
    pixels = _ome_pixels(ET.fromstring(acq.metadata["ome_xml"]))
    if pixels is None:
        return acq

    def size(attr: str) -> float | None:
        value = pixels.get(attr)
        if value is None:
            return None
        factor = nm_per_unit(pixels.get(attr + "Unit", "µm"))
        return float(value) * factor if factor else None

    px, py = size("PhysicalSizeX"), size("PhysicalSizeY")
    dt = pixels.get("TimeIncrement")
    dt_s = float(dt) * _S_PER_UNIT.get(pixels.get("TimeIncrementUnit", "s"), 1.0) if dt else None
    pixel = (py or px, px or py) if (px or py) else None
    return replace(acq, pixel_size_nm=pixel, z_step_nm=size("PhysicalSizeZ"), time_step_s=dt_s)  # type: ignore[arg-type]


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
    if not multiscales:
        raise CristaeZooError(f"{path}: not an OME-Zarr image (no 'multiscales' in the group attributes)")
    ms = multiscales[0]
    version = str(ome.get("version") or ms.get("version") or "0.4")
    dataset = ms["datasets"][0]
    try:
        array = group[dataset["path"]]
    except KeyError:
        raise CristaeZooError(f"{path}: the OME-Zarr dataset {dataset['path']!r} is missing") from None
    shape, dtype = tuple(array.shape), np.dtype(array.dtype)
    axes_meta = ms.get("axes") or [{"name": n} for n in "tczyx"[-len(shape):]]
    axes_meta = [a if isinstance(a, dict) else {"name": a} for a in axes_meta]
    names = [str(a.get("name", "")).lower() for a in axes_meta]
    axes = "".join(n.upper() if n in ("t", "c", "z", "y", "x") else "?" for n in names)
    scale = [1.0] * len(shape)
    for transforms in (dataset.get("coordinateTransformations", []), ms.get("coordinateTransformations", [])):
        for t in transforms:
            if t.get("type") == "scale":
                scale = [s * float(v) for s, v in zip(scale, t["scale"])]
    physical: dict[str, float | None] = {}
    for a, meta, s in zip(axes, axes_meta, scale):
        unit = meta.get("unit")
        if a in "ZYX":
            f = nm_per_unit(unit)
            physical[a] = s * f if f else None
        elif a == "T":
            physical[a] = s * _S_PER_UNIT[unit] if unit in _S_PER_UNIT else None
    pixel = (physical["Y"], physical["X"]) if physical.get("Y") and physical.get("X") else None
    meta = {
        "ngff_version": version,
        "zarr_format": group.metadata.zarr_format,
        "dataset_path": dataset["path"],
        "attrs": attrs,
        "file_axes": "".join(names),
        "chunks": tuple(array.chunks),
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
    source: Acquisition, output: Path, plane_shape: tuple[int, int], factor: float, provenance: dict[str, Any]
) -> OutputSpec:
    """What the restored file will be: `plane_shape` is the restored plane size, `factor` the rescale applied."""
    axes = "".join(a for a in CANONICAL if a in source.axes)
    shape = tuple(source.sizes[a] for a in axes if a not in "YX") + tuple(plane_shape)
    pixel = None
    if source.pixel_size_nm is not None:
        sy, sx = source.pixel_size_nm[0] * source.plane_shape[0], source.pixel_size_nm[1] * source.plane_shape[1]
        pixel = (sy / plane_shape[0], sx / plane_shape[1])  # same field of view, more pixels
    return OutputSpec(path=Path(output), kind=output_kind(source, Path(output)), axes=axes, shape=shape,
                      pixel_size_nm=pixel, z_step_nm=source.z_step_nm, time_step_s=source.time_step_s,
                      source=source, provenance=provenance)  # fmt: skip


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
    if not isinstance(labels, list) or len(labels) != math.prod(src.shape[:-2]):
        return None
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
    pixels.set("DimensionOrder", "XYZCT")  # our planes: T outer, then Z
    pixels.set("Type", "float")
    pixels.attrib.pop("SignificantBits", None)
    pixels.attrib.pop("BigEndian", None)
    for a in "XYZT":
        pixels.set(f"Size{a}", str(sizes.get(a, 1)))
    pixels.set("SizeC", "1")
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
    for tag in ("TiffData", "BinData", "MetadataOnly"):
        for el in pixels.findall(f"{{{_OME_NS}}}{tag}"):
            pixels.remove(el)
    planes = pixels.findall(f"{{{_OME_NS}}}Plane")
    for plane in planes:
        pixels.remove(plane)
        if int(plane.get("TheC", 0)) == channel:
            plane.set("TheC", "0")
            pixels.append(plane)  # plane positions and time stamps of the kept channel
    position = list(pixels).index(kept) + 1
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
        else:
            axes.append({"name": a.lower(), "type": "space", "unit": "nanometer"})
            scale.append(spec.pixel_size_nm[0 if a == "Y" else 1] if spec.pixel_size_nm else 1.0)
    for ax, a in zip(axes, spec.axes):  # unknown physical size: no unit rather than a wrong one
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
        omero["channels"] = [ch]
        out["omero"] = omero
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
def staged_output(target: Path, *, overwrite: bool) -> Iterator[Path]:
    """A temporary path beside `target` (file or folder) that replaces `target` only if the block succeeds; on
    any failure it is removed and `target` is left as it was."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise CristaeZooError(f"{target}: already exists; use --overwrite to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        yield tmp
        if target.exists():  # --overwrite: move the old one aside, then swap
            old = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.old"
            os.replace(target, old)
            os.replace(tmp, target)
            _remove(old)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
