"""Acquisitions on disk: axes, pixel sizes and metadata in and out (ImageJ, OME-TIFF, plain TIFF, OME-Zarr)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tifffile
import zarr

from cristae_zoo.acquisition import (
    create_zarr,
    open_acquisition,
    output_spec,
    staged_output,
    write_tiff_planes,
)
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.rescale import Training, choose_factor

PROVENANCE = {"software": "test", "rescale_factor": 2.0}


def _stack(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.poisson(20, size=shape) + 100).astype(np.uint16)


def _restore_trivially(acq, out_path, factor=2.0):
    """Write 'restored' planes (the input planes enlarged by an integer factor) through the output path."""
    f = int(factor)
    spec = output_spec(acq, out_path, (acq.plane_shape[0] * f, acq.plane_shape[1] * f), factor, PROVENANCE)
    planes = [np.kron(p, np.ones((f, f), np.float32)) for p in acq.iter_planes()]
    if spec.kind == "ome-zarr":
        array = create_zarr(spec, out_path)
        for index, plane in zip(acq.plane_indices(), planes):
            array[index] = plane
    else:
        write_tiff_planes(spec, out_path, iter(planes))
    return spec, np.stack(planes).reshape(spec.shape)


def test_imagej_hyperstack_round_trip(tmp_path):
    data = _stack((2, 3, 2, 20, 24))  # T Z C Y X
    labels = [f"t{t}z{z}c{c}" for t in range(2) for z in range(3) for c in range(2)]
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.065, 1 / 0.065),
                     metadata={"axes": "TZCYX", "spacing": 0.3, "unit": "um", "finterval": 1.5, "Info": "scope=LLSM",
                               "Labels": labels})  # fmt: skip
    acq = open_acquisition(path, channel=1)
    assert (acq.kind, acq.axes, acq.shape) == ("imagej", "TZCYX", (2, 3, 2, 20, 24))
    assert acq.pixel_size_nm == pytest.approx((65.0, 65.0))
    assert acq.z_step_nm == pytest.approx(300.0) and acq.time_step_s == pytest.approx(1.5)
    assert acq.plane_indices()[:4] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    np.testing.assert_array_equal(next(acq.iter_planes([(1, 2)])), data[1, 2, 1])

    spec, expected = _restore_trivially(acq, tmp_path / "restored.tif")
    back = open_acquisition(spec.path)
    assert (back.kind, back.axes, back.shape, back.dtype) == ("imagej", "TZYX", (2, 3, 40, 48), np.float32)
    assert back.pixel_size_nm == pytest.approx((32.5, 32.5))  # 65 nm / factor 2
    assert back.z_step_nm == pytest.approx(300.0) and back.time_step_s == pytest.approx(1.5)
    meta = back.metadata["imagej"]
    assert meta["Info"].startswith("scope=LLSM") and json.loads(meta["Info"].split("cristae_zoo = ")[1]) == PROVENANCE
    assert meta["Labels"] == [lab for lab in labels if lab.endswith("c1")]  # the kept channel's slice labels
    np.testing.assert_array_equal(tifffile.imread(spec.path), expected)


def test_ome_tiff_round_trip(tmp_path):
    data = _stack((3, 2, 16, 18))  # Z C Y X
    path = tmp_path / "cell.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={
        "axes": "ZCYX", "Name": "cell 1", "PhysicalSizeX": 0.08, "PhysicalSizeY": 0.08, "PhysicalSizeZ": 0.25,
        "Channel": {"Name": ["mito", "lyso"]},
        "Plane": {"PositionZ": [0.0, 0.0, 0.25, 0.25, 0.5, 0.5]},
    })  # fmt: skip
    acq = open_acquisition(path, channel=0)
    assert (acq.kind, acq.axes) == ("ome-tiff", "ZCYX")
    assert acq.pixel_size_nm == pytest.approx((80.0, 80.0)) and acq.z_step_nm == pytest.approx(250.0)

    spec, expected = _restore_trivially(acq, tmp_path / "restored.ome.tif")
    back = open_acquisition(spec.path)
    assert (back.kind, back.axes, back.shape) == ("ome-tiff", "ZYX", (3, 32, 36))
    assert back.pixel_size_nm == pytest.approx((40.0, 40.0)) and back.z_step_nm == pytest.approx(250.0)
    xml = back.metadata["ome_xml"]
    assert 'Name="cell 1"' in xml and 'Name="mito"' in xml and "lyso" not in xml
    assert xml.count("<Plane ") == 3 and "Restored by cristae-zoo" in xml
    np.testing.assert_array_equal(tifffile.imread(spec.path), expected)


def test_plain_tiff_axes_and_resolution(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, _stack((4, 16, 16)), metadata={"axes": "TYX"}, resolution=(1e7 / 50, 1e7 / 50),
                     resolutionunit="CENTIMETER")  # fmt: skip
    acq = open_acquisition(path)
    assert (acq.kind, acq.axes, acq.pixel_size_nm) == ("tiff", "TYX", pytest.approx((50.0, 50.0)))
    spec, _ = _restore_trivially(acq, tmp_path / "out.tif")
    back = open_acquisition(spec.path)
    assert (back.axes, back.shape, back.pixel_size_nm) == ("TYX", (4, 32, 32), pytest.approx((25.0, 25.0)))


def _write_ngff(path, data, version, axes="tczyx", scale=(2.0, 1.0, 300.0, 65.0, 65.0)):
    zarr_format = 3 if version == "0.5" else 2
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    group.create_array("0", shape=data.shape, chunks=(1, 1, 1) + data.shape[-2:], dtype=data.dtype)[...] = data
    units = {"t": ("time", "second"), "c": ("channel", None), "z": ("space", "nanometer")}
    ax = []
    for a in axes:
        kind, unit = units.get(a, ("space", "nanometer"))
        ax.append({"name": a, "type": kind, **({"unit": unit} if unit else {})})
    ms = {"axes": ax, "name": "cell", "datasets": [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": list(scale)}]}]}  # fmt: skip
    omero = {"channels": [{"label": "mito", "color": "00FF00", "window": {"start": 0, "end": 500}},
                          {"label": "lyso", "color": "FF0000"}]}  # fmt: skip
    if version == "0.5":
        group.attrs.update({"ome": {"version": "0.5", "multiscales": [ms], "omero": omero}, "lab": "x"})
    else:
        ms["version"] = "0.4"
        group.attrs.update({"multiscales": [ms], "omero": omero, "lab": "x"})


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_round_trip(tmp_path, version):
    data = _stack((2, 2, 3, 12, 14))  # t c z y x
    path = tmp_path / "in.ome.zarr"
    _write_ngff(path, data, version)
    acq = open_acquisition(path, channel=0)
    assert (acq.kind, acq.axes, acq.metadata["ngff_version"]) == ("ome-zarr", "TCZYX", version)
    assert acq.pixel_size_nm == pytest.approx((65.0, 65.0)) and acq.z_step_nm == pytest.approx(300.0)
    assert acq.time_step_s == pytest.approx(2.0)
    np.testing.assert_array_equal(next(acq.iter_planes([(1, 2)])), data[1, 0, 2])

    spec, expected = _restore_trivially(acq, tmp_path / "out.ome.zarr")
    back = open_acquisition(spec.path)
    assert (back.axes, back.shape, back.metadata["ngff_version"]) == ("TZYX", (2, 3, 24, 28), version)
    assert back.metadata["zarr_format"] == (3 if version == "0.5" else 2)
    assert back.pixel_size_nm == pytest.approx((32.5, 32.5)) and back.z_step_nm == pytest.approx(300.0)
    attrs = back.metadata["attrs"]
    ome = attrs["ome"] if version == "0.5" else attrs
    assert [c["label"] for c in ome["omero"]["channels"]] == ["mito"] and "window" not in ome["omero"]["channels"][0]
    assert attrs["lab"] == "x" and attrs["cristae_zoo"] == PROVENANCE
    np.testing.assert_array_equal(zarr.open_array(spec.path / "0", mode="r")[...], expected)


# ----------------------------------------------------------------------------------------------- bad input


def test_unknown_axes_ask_for_axes(tmp_path):
    path = tmp_path / "pages.tif"
    tifffile.imwrite(path, _stack((5, 16, 16)))  # a plain multi-page file: tifffile cannot tell Z from T
    with pytest.raises(CristaeZooError, match=r"unknown axes order .*--axes") as err:
        open_acquisition(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert open_acquisition(path, axes="zyx").axes == "ZYX"
    with pytest.raises(CristaeZooError, match="does not fit shape"):
        open_acquisition(path, axes="TZYX")


def test_channel_axis_needs_channel(tmp_path):
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, _stack((2, 16, 16)), imagej=True, metadata={"axes": "CYX"})
    with pytest.raises(CristaeZooError, match=r"2 channels.*--channel"):
        open_acquisition(path)
    with pytest.raises(CristaeZooError, match="out of range"):
        open_acquisition(path, channel=2)
    assert open_acquisition(path, channel=1).plane_indices() == [()]


def test_zero_size_and_garbage_files(tmp_path):
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(CristaeZooError, match="empty file"):
        open_acquisition(empty)
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"not a tiff at all" * 10)
    with pytest.raises(CristaeZooError, match="cannot read as TIFF"):
        open_acquisition(garbage)
    with pytest.raises(CristaeZooError, match="not an OME-Zarr"):
        zarr.open_group(tmp_path / "bare.zarr", mode="w")
        open_acquisition(tmp_path / "bare.zarr")


def test_nan_plane_is_named(tmp_path):
    data = _stack((3, 16, 16)).astype(np.float32)
    data[1, 4, 4] = np.nan
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZYX"})
    acq = open_acquisition(path)
    with pytest.raises(CristaeZooError, match=r"plane z=1 contains NaN"):
        list(acq.iter_planes())


def test_missing_pixel_size(tmp_path):
    path = tmp_path / "nopx.tif"
    tifffile.imwrite(path, _stack((16, 16)))
    acq = open_acquisition(path)
    assert acq.pixel_size_nm is None
    with pytest.raises(CristaeZooError, match=r"no pixel size.*--pixel-size"):
        choose_factor(None, None, acq.pixel_size_nm, Training(), name=str(path))
    assert choose_factor(None, 65.0, None, Training(), name="x").factor == pytest.approx(2.6)
    assert open_acquisition(path, pixel_size_nm=65).pixel_size_nm == (65.0, 65.0)


def test_staged_output_is_all_or_nothing(tmp_path):
    target = tmp_path / "out.tif"
    target.write_bytes(b"old")
    with pytest.raises(CristaeZooError, match="--overwrite"):
        with staged_output(target, overwrite=False):
            pass
    with pytest.raises(RuntimeError):
        with staged_output(target, overwrite=True) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.tif"]
    with staged_output(tmp_path / "new.zarr", overwrite=False) as tmp:
        (tmp / "0").mkdir(parents=True)
    assert (tmp_path / "new.zarr" / "0").is_dir() and sorted(os.listdir(tmp_path)) == ["new.zarr", "out.tif"]


@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_planes_read_equal_tifffile_and_are_new_arrays(tmp_path, compression, byteorder):
    """Uncompressed contiguous TIFFs are read through a memory map, others through tifffile's zarr store: both give
    tifffile's values, as new writable arrays (the restore path normalises them in place), and the file is unchanged."""
    data = _stack((3, 2, 40, 33), seed=4)
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, data, byteorder=byteorder, compression=compression, metadata={"axes": "ZCYX"})
    before = path.read_bytes()
    acq = open_acquisition(path, axes="ZCYX", channel=1)
    planes = list(acq.iter_planes())
    assert len(planes) == 3
    for z, plane in enumerate(planes):
        np.testing.assert_array_equal(plane, data[z, 1].astype(np.float32))
        assert plane.dtype == np.float32 and plane.flags.writeable
        plane[:] = -1
    assert path.read_bytes() == before
    assert [p.min() for p in acq.iter_planes()] == [float(data[z, 1].min()) for z in range(3)]
