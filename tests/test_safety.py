"""Probes of issue 16 (nothing lost, nothing silently wrong) for the readers, rescale factors, staged outputs,
signals, simulate/prepare, configs and package messages. Each test would fail if its class of failure came back.

Fixtures are generated here, small; CLI runs go through the real entry point (`cli.main`: exit code 2 and one
line for user errors), and the signal test runs a real subprocess.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from cristae_zoo.acquisition import open_acquisition, pixel_size_note
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.io import Interrupted, check_target, cleanup_on_signals, staged_dir, staged_file
from cristae_zoo.rescale import Training, choose_factor, parse_rescale

REPO = Path(__file__).resolve().parents[1]
OME_NS = "http://www.openmicroscopy.org/Schemas/OME/2016-06"


# ----------------------------------------------------------------------------------------------------- helpers


def tree_hash(folder: Path) -> str:
    """Hash of every path (hidden ones included) and file content under `folder`."""
    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Hidden partial/old/lock paths that a clean run never leaves."""
    return sorted(p.name for p in Path(folder).rglob(".*") if any(k in p.name for k in (".partial", ".old", ".lock")))


def run_cli(args: list, capsys, monkeypatch) -> tuple[int, str]:
    """`cristae-zoo ARGS` through its entry point: (exit code, stderr)."""
    from cristae_zoo import cli

    monkeypatch.setattr(sys, "argv", ["cristae-zoo", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error:"), err
    for needle in needles:
        assert needle in last, last


def _stack(shape, dtype=np.uint16) -> np.ndarray:
    return (np.random.default_rng(0).random(shape) * 1000).astype(dtype)


def _ome_tiff(path: Path, **pixels_attrs: str) -> Path:
    """A 2D OME-TIFF whose Pixels element has `pixels_attrs` (values written verbatim)."""
    attrs = " ".join(f'{k}="{v}"' for k, v in pixels_attrs.items())
    xml = (f'<?xml version="1.0" encoding="UTF-8"?><OME xmlns="{OME_NS}"><Image ID="Image:0"><Pixels ID="Pixels:0"'
           f' DimensionOrder="XYZCT" Type="uint16" SizeX="32" SizeY="32" SizeZ="1" SizeC="1" SizeT="1" {attrs}>'
           '<Channel ID="Channel:0:0" SamplesPerPixel="1"/><TiffData IFD="0" PlaneCount="1"/></Pixels></Image></OME>')
    tifffile.imwrite(path, _stack((32, 32)), description=xml, metadata=None)
    return path


def _ngff(path: Path, scale: list, units=("second", None, "nanometer", "nanometer"), axes="tzyx",
          dtype="uint16", shape=(2, 1, 32, 32)) -> Path:  # fmt: skip
    group = zarr.open_group(path, mode="w", zarr_format=2)
    arr = group.create_array("0", shape=shape, chunks=(1, 1, 32, 32)[-len(shape):], dtype=dtype)
    if math.prod(shape) < 10**6:
        arr[...] = np.ones(shape, dtype=dtype)
    ax = [{"name": a, "type": "time" if a == "t" else "space", **({"unit": u} if u else {})} for a, u in zip(axes, units)]
    group.attrs.update({"multiscales": [{"version": "0.4", "axes": ax, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}]})  # fmt: skip
    return path


# ------------------------------------------------------------------------------------------- readers: pixel size


def test_72_dpi_tiff_is_no_pixel_size_with_a_clear_message(tmp_path):
    path = tmp_path / "screenshot.tif"
    tifffile.imwrite(path, _stack((32, 32)), resolution=(72, 72), resolutionunit="INCH")
    acq = open_acquisition(path)
    assert acq.pixel_size_nm is None  # not 352778 nm/px → a factor of 14111
    note = pixel_size_note(acq)
    assert note and "72 pixels per inch" in note
    with pytest.raises(CristaeZooError, match="72 pixels per inch.*--pixel-size"):
        choose_factor(None, None, acq.pixel_size_nm, Training(), name=str(path), metadata_note=note)


def test_imagej_inch_unit_and_300_dpi_are_no_pixel_size(tmp_path):
    ij = tmp_path / "ij.tif"
    tifffile.imwrite(ij, _stack((32, 32)), imagej=True, resolution=(72, 72), metadata={"unit": "inch"})
    dpi300 = tmp_path / "print.tif"
    tifffile.imwrite(dpi300, _stack((32, 32)), resolution=(300, 300), resolutionunit="INCH")
    assert open_acquisition(ij).pixel_size_nm is None and open_acquisition(dpi300).pixel_size_nm is None


def test_real_calibrations_are_kept(tmp_path):
    cm = tmp_path / "cm.tif"  # 50 nm/px in px per cm, as many microscope writers do
    tifffile.imwrite(cm, _stack((32, 32)), resolution=(1e7 / 50, 1e7 / 50), resolutionunit="CENTIMETER")
    ij = tmp_path / "ij.tif"
    tifffile.imwrite(ij, _stack((3, 32, 32)), imagej=True, resolution=(1 / 0.065, 1 / 0.065),
                     metadata={"axes": "ZYX", "unit": "um", "spacing": 0.3, "finterval": 0})  # fmt: skip
    assert open_acquisition(cm).pixel_size_nm == pytest.approx((50.0, 50.0))
    acq = open_acquisition(ij)
    assert acq.pixel_size_nm == pytest.approx((65.0, 65.0)) and acq.z_step_nm == pytest.approx(300.0)
    assert acq.time_step_s is None  # ImageJ's finterval=0 means "not set"


@pytest.mark.parametrize("value", ["abc", "NaN", "-0.08", "0", "inf"])
def test_ome_physical_size_invalid_is_refused_with_value(tmp_path, value):
    path = _ome_tiff(tmp_path / f"bad.ome.tif", PhysicalSizeX=value, PhysicalSizeY="0.08")
    with pytest.raises(CristaeZooError, match=f"PhysicalSizeX '{value}'"):
        open_acquisition(path)
    assert open_acquisition(path, pixel_size_nm=80).pixel_size_nm == (80.0, 80.0)  # --pixel-size overrides it


def test_ome_time_increment_checked(tmp_path):
    neg = _ome_tiff(tmp_path / "neg.ome.tif", PhysicalSizeX="0.08", TimeIncrement="-2")
    with pytest.raises(CristaeZooError, match="TimeIncrement '-2'"):
        open_acquisition(neg)
    unit = _ome_tiff(tmp_path / "unit.ome.tif", PhysicalSizeX="0.08", TimeIncrement="2", TimeIncrementUnit="fortnight")
    with pytest.raises(CristaeZooError, match="fortnight"):
        open_acquisition(unit)
    ms = _ome_tiff(tmp_path / "ms.ome.tif", PhysicalSizeX="0.08", TimeIncrement="250", TimeIncrementUnit="ms")
    assert open_acquisition(ms).time_step_s == pytest.approx(0.25)


def test_ome_unknown_length_unit_is_no_pixel_size_with_note(tmp_path):
    path = _ome_tiff(tmp_path / "u.ome.tif", PhysicalSizeX="3", PhysicalSizeXUnit="furlong", PhysicalSizeY="3",
                     PhysicalSizeYUnit="furlong")  # fmt: skip
    acq = open_acquisition(path)
    assert acq.pixel_size_nm is None and "furlong" in (pixel_size_note(acq) or "")


@pytest.mark.parametrize(("meta", "needle"), [
    ({"spacing": "abc"}, "z spacing 'abc'"), ({"spacing": float("nan")}, "z spacing nan"),
    ({"spacing": -0.2}, "z spacing -0.2"), ({"finterval": -1.0}, "finterval"),
])  # fmt: skip
def test_imagej_invalid_steps_refused(tmp_path, meta, needle):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, _stack((3, 32, 32)), imagej=True, resolution=(20, 20),
                     metadata={"axes": "ZYX", "unit": "um", **meta})  # fmt: skip
    with pytest.raises(CristaeZooError, match=needle):
        open_acquisition(path)


@pytest.mark.parametrize("bad", ["abc", float("nan"), -65.0, 0.0])
def test_zarr_invalid_scale_refused(tmp_path, bad):
    yx = _ngff(tmp_path / "yx.zarr", [1.0, 1.0, bad, 65.0])
    with pytest.raises(CristaeZooError, match="scale of axis 'y'"):
        open_acquisition(yx)
    assert open_acquisition(yx, pixel_size_nm=65).pixel_size_nm == (65.0, 65.0)
    t = _ngff(tmp_path / "t.zarr", [bad, 1.0, 65.0, 65.0])
    with pytest.raises(CristaeZooError, match="scale of axis 't'"):
        open_acquisition(t)


def test_zarr_axis_named_twice_refused(tmp_path):
    path = _ngff(tmp_path / "dup.zarr", [1.0, 1.0, 65.0, 65.0], axes="tyyx")
    with pytest.raises(CristaeZooError, match="names axis Y more than once"):
        open_acquisition(path)
    assert open_acquisition(path, axes="TZYX").axes == "TZYX"


def test_zarr_metadata_shape_and_units_checked(tmp_path):
    axes = _ngff(tmp_path / "axes.zarr", [1.0, 65.0, 65.0], units=("second", "nanometer", "nanometer"), axes="tyx")
    with pytest.raises(CristaeZooError, match="names 3 axes but the array"):
        open_acquisition(axes)
    unit = _ngff(tmp_path / "unit.zarr", [2.0, 1.0, 65.0, 65.0], units=("fortnight", None, "nanometer", "nanometer"))
    with pytest.raises(CristaeZooError, match="time unit 'fortnight'"):
        open_acquisition(unit)
    ok = open_acquisition(_ngff(tmp_path / "ok.zarr", [2.0, 1.0, 65.0, 65.0]))
    assert ok.pixel_size_nm == (65.0, 65.0) and ok.time_step_s == 2.0


# --------------------------------------------------------------------------------- readers: dtypes, shapes, data


def test_rgb_tiff_needs_a_channel_and_reads_the_right_one(tmp_path):
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, rgb, photometric="rgb")
    with pytest.raises(CristaeZooError, match="RGB colour image.*--channel"):
        open_acquisition(path)
    acq = open_acquisition(path, channel=1)
    assert acq.plane_shape == (32, 32) and np.all(next(acq.iter_planes()) == 20)  # green, not a 3-plane stack
    with pytest.raises(CristaeZooError, match="colour samples axis"):
        open_acquisition(path, axes="YXZ")


def test_rgb_stack_axes_hint_keeps_the_colour_axis(tmp_path):
    path = tmp_path / "rgbstack.tif"
    tifffile.imwrite(path, np.zeros((4, 32, 32, 3), np.uint8), photometric="rgb")
    with pytest.raises(CristaeZooError, match="--axes ZYXC"):
        open_acquisition(path)


def test_complex_refused(tmp_path):
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, (_stack((32, 32)) + 1j).astype(np.complex64))
    with pytest.raises(CristaeZooError, match="complex.*imaginary"):
        open_acquisition(path)
    z = _ngff(tmp_path / "c.zarr", [1.0, 1.0, 65.0, 65.0], dtype="complex64")
    with pytest.raises(CristaeZooError, match="complex"):
        open_acquisition(z)


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.int32, np.float16])
def test_bool_and_int_types_read(tmp_path, dtype):
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, (_stack((32, 32)) % 2).astype(dtype))
    plane = next(open_acquisition(path).iter_planes())
    assert plane.dtype == np.float32 and set(np.unique(plane)) <= {0.0, 1.0}


def test_nan_and_inf_planes_refused_when_read(tmp_path):
    data = _stack((3, 32, 32)).astype(np.float32)
    data[2, 5, 5] = np.inf
    path = tmp_path / "inf.tif"
    tifffile.imwrite(path, data, metadata={"axes": "ZYX"})
    planes = open_acquisition(path).iter_planes()
    next(planes), next(planes)
    with pytest.raises(CristaeZooError, match="z=2 contains NaN or Inf"):
        next(planes)


def test_truncated_tiff_refused_at_open(tmp_path):
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, _stack((5, 32, 32)), metadata={"axes": "ZYX"})
    cut = tmp_path / "cut.tif"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CristaeZooError, match="truncated.*copy or export"):
        open_acquisition(cut)


def test_ome_declared_planes_missing_refused_not_zero_filled(tmp_path):
    xml = (f'<?xml version="1.0" encoding="UTF-8"?><OME xmlns="{OME_NS}"><Image ID="Image:0"><Pixels ID="Pixels:0"'
           ' DimensionOrder="XYZCT" Type="uint16" SizeX="32" SizeY="32" SizeZ="5" SizeC="1" SizeT="1"'
           ' PhysicalSizeX="0.05" PhysicalSizeY="0.05"><Channel ID="Channel:0:0" SamplesPerPixel="1"/>'
           '<TiffData IFD="0" PlaneCount="5"/></Pixels></Image></OME>')
    path = tmp_path / "cut.ome.tif"
    with tifffile.TiffWriter(path) as tw:  # 3 of the 5 declared planes: tifffile would add 2 planes of zeros
        for i in range(3):
            tw.write(np.full((32, 32), i + 1, np.uint16), description=xml if i == 0 else None, metadata=None,
                     contiguous=False)  # fmt: skip
    with pytest.raises(CristaeZooError, match="declares 5 planes but the file holds only 3"):
        open_acquisition(path)


def test_ome_declared_size_differs_from_data(tmp_path):
    path = tmp_path / "other.ome.tif"
    xml = (f'<?xml version="1.0" encoding="UTF-8"?><OME xmlns="{OME_NS}"><Image ID="Image:0"><Pixels ID="Pixels:0"'
           ' DimensionOrder="XYZCT" Type="uint16" SizeX="64" SizeY="32" SizeZ="1" SizeC="1" SizeT="1"'
           ' PhysicalSizeX="0.05" PhysicalSizeY="0.05"><Channel ID="Channel:0:0" SamplesPerPixel="1"/>'
           '<TiffData IFD="0" PlaneCount="1"/></Pixels></Image></OME>')
    tifffile.imwrite(path, _stack((32, 32)), description=xml, metadata=None)
    with pytest.raises(CristaeZooError, match="declares SizeX=64 but the image data has 32"):
        open_acquisition(path)


def test_huge_declared_size_refused(tmp_path):
    path = tmp_path / "huge.tif"
    tifffile.imwrite(path, _stack((16, 16)).astype(np.uint8))
    with tifffile.TiffFile(path, mode="r+") as tf:  # a corrupt header: 100000 × 100000 px in a 400-byte file
        tf.pages[0].tags["ImageWidth"].overwrite(100_000)
        tf.pages[0].tags["ImageLength"].overwrite(100_000)
    with pytest.raises(CristaeZooError):
        open_acquisition(path)
    z = _ngff(tmp_path / "huge.zarr", [1.0, 1.0, 65.0, 65.0], shape=(1, 1, 70_000, 70_000))
    zarr.open_array(z / "0", mode="r+")[0, 0, :32, :32] = 1  # one chunk stored: the size check is what refuses
    with pytest.raises(CristaeZooError, match="more than 65536"):
        open_acquisition(z)


def test_zarr_without_any_chunk_refused(tmp_path):
    path = _ngff(tmp_path / "meta_only.zarr", [1.0, 1.0, 65.0, 65.0], shape=(1, 1, 2048, 2048))  # no data written
    with pytest.raises(CristaeZooError, match="holds no data"):
        open_acquisition(path)


def test_corrupt_zarr_chunk_is_one_line(tmp_path):
    path = _ngff(tmp_path / "c.zarr", [1.0, 1.0, 65.0, 65.0])
    chunk = next(p for p in (path / "0").rglob("*") if p.is_file() and not p.name.startswith("."))
    chunk.write_bytes(b"not a compressed chunk")
    acq = open_acquisition(path)
    with pytest.raises(CristaeZooError, match="cannot read plane .*truncated or corrupt"):
        list(acq.iter_planes())


def test_garbage_and_empty_files_refused(tmp_path):
    (tmp_path / "empty.tif").write_bytes(b"")
    (tmp_path / "text.tif").write_text("hello, not a tiff")
    for name in ("empty.tif", "text.tif"):
        with pytest.raises(CristaeZooError):
            open_acquisition(tmp_path / name)


# ---------------------------------------------------------------------------------------------- rescale factors


def test_rescale_flag_range():
    assert parse_rescale("50") == 50.0 and parse_rescale("0.05") == 0.05
    for bad in ("51", "0.01", "1e9", "-2", "nan", "inf"):
        with pytest.raises(CristaeZooError, match=f"--rescale {bad}"):
            parse_rescale(bad)


def test_tiny_pixel_size_flag_refused_not_1x1():
    with pytest.raises(CristaeZooError, match=r"--pixel-size.*outside 0.05–50"):
        choose_factor(None, 1e-9, None, Training(), name="x.tif", plane_shape=(512, 512))


def test_absurd_metadata_pixel_size_refused_with_source():
    with pytest.raises(CristaeZooError, match=r"factor 1.411e\+04 \(metadata: the file's pixel size"):
        choose_factor(None, None, (352777.8, 352777.8), Training(), name="x.tif")


def test_rescaled_plane_size_checked():
    with pytest.raises(CristaeZooError, match="into 10 × 10 px"):
        choose_factor(0.1, None, None, Training(), name="x.tif", plane_shape=(100, 100))
    with pytest.raises(CristaeZooError, match="outside 16–65536 px"):
        choose_factor(None, 1250.0, None, Training(), name="x.tif", plane_shape=(2000, 2000))
    assert choose_factor(None, 65.0, None, Training(), name="x.tif", plane_shape=(512, 512)).factor == 2.6


def test_predict_refuses_print_resolution_and_tiny_pixel_size(tmp_path, capsys, monkeypatch):
    image = tmp_path / "screen.tif"
    tifffile.imwrite(image, _stack((64, 64)), resolution=(72, 72), resolutionunit="INCH")
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["predict", REPO / "model_zoo" / "deepcristae", image, "-o", tmp_path / "out.tif"], capsys,
                        monkeypatch)  # fmt: skip
    assert_one_line_error(code, err, "no pixel size")
    code, err = run_cli(["predict", REPO / "model_zoo" / "deepcristae", image, "-o", tmp_path / "out.tif",
                         "--pixel-size", "1e-9"], capsys, monkeypatch)  # fmt: skip
    assert_one_line_error(code, err, "(--pixel-size: --pixel-size 1e-09 nm / 25 nm) is outside 0.05–50")
    assert sorted(os.listdir(tmp_path)) == ["screen.tif"]


# --------------------------------------------------------------------------------------------- staged outputs


def test_staged_file_refuses_existing_and_keeps_it_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("precious")
    with pytest.raises(CristaeZooError, match="already exists; use --overwrite"):
        with staged_file(target) as tmp:
            tmp.write_text("new")
    with pytest.raises(RuntimeError):
        with staged_file(target, overwrite=True) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "precious" and leftovers(tmp_path) == []
    with staged_file(target, overwrite=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and sorted(os.listdir(tmp_path)) == ["out.txt"]


def test_staged_file_keeps_suffix_and_permissions(tmp_path):
    with staged_file(tmp_path / "fig.png") as tmp:
        assert tmp.suffix == ".png" and tmp.name.startswith(".fig.png.")
        tmp.write_bytes(b"x")
    assert (tmp_path / "fig.png").stat().st_mode & 0o044  # readable by others as any output (mkstemp: 0600)


def test_staged_dir_overwrite_only_replaces_own_folder(tmp_path):
    user = tmp_path / "mydata"
    user.mkdir()
    (user / "thesis.docx").write_text("years of work")
    before = tree_hash(user)
    with pytest.raises(CristaeZooError, match="has no rdf.yaml.*refusing"):
        with staged_dir(user, overwrite=True, marker="rdf.yaml") as tmp:
            (tmp / "rdf.yaml").write_text("x")
    assert tree_hash(user) == before
    own = tmp_path / "pkg"
    with staged_dir(own, marker="rdf.yaml") as tmp:
        (tmp / "rdf.yaml").write_text("1")
        (tmp / "old_only.txt").write_text("1")
    with staged_dir(own, overwrite=True, marker="rdf.yaml") as tmp:
        (tmp / "rdf.yaml").write_text("2")
    assert sorted(os.listdir(own)) == ["rdf.yaml"] and leftovers(tmp_path) == []  # nothing of the old one leaks


def test_staged_dir_refuses_to_swallow_inputs(tmp_path):
    data = tmp_path / "runs" / "model"
    data.mkdir(parents=True)
    (data / "weights.keras").write_text("w")
    for target in (tmp_path / "runs", data, data / "sub"):
        with pytest.raises(CristaeZooError, match="input"):
            check_target(target, overwrite=True, inputs=[data])
    assert (data / "weights.keras").read_text() == "w"


def test_empty_existing_folder_is_fine(tmp_path):
    (tmp_path / "out").mkdir()
    with staged_dir(tmp_path / "out", marker="m") as tmp:
        (tmp / "m").write_text("x")
    assert os.listdir(tmp_path / "out") == ["m"]


def test_target_appearing_meanwhile_is_not_replaced(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(CristaeZooError, match="appeared while this run was writing"):
        with staged_file(target) as tmp:
            tmp.write_text("mine")
            target.write_text("theirs")  # another run (or the user) got there first
    assert target.read_text() == "theirs" and leftovers(tmp_path) == []


def test_second_run_on_same_output_refused_while_first_runs(tmp_path):
    target = tmp_path / "out.tif"
    with staged_file(target) as tmp:
        tmp.write_text("first")
        with pytest.raises(CristaeZooError, match="another run is writing this output"):
            with staged_file(target, overwrite=True):
                pass
    assert target.read_text() == "first" and leftovers(tmp_path) == []


def test_stale_lock_of_dead_process_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".out.txt.lock").write_text(f"{dead.stdout.strip()} {os.uname().nodename}\n")
    with staged_file(tmp_path / "out.txt") as tmp:
        tmp.write_text("x")
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]


RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from cristae_zoo.errors import CristaeZooError
    from cristae_zoo.io import staged_dir
    target, go, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    while not go.exists():
        time.sleep(0.01)
    try:
        with staged_dir(target, marker="m") as tmp:
            (tmp / "m").write_text(name)
            time.sleep(0.5)
    except CristaeZooError as err:
        print("refused", err); sys.exit(2)
    print("ok")
""")


def test_two_processes_racing_cannot_both_succeed(tmp_path):
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACER, tmp_path / "out", go, n], stdout=subprocess.PIPE, text=True)
             for n in ("a", "b")]  # fmt: skip
    time.sleep(1.0)
    go.write_text("")
    results = [p.communicate(timeout=120) and p.returncode for p in procs]
    assert sorted(results) == [0, 2]
    winner = "ab"[results.index(0)]
    assert (tmp_path / "out" / "m").read_text() == winner and leftovers(tmp_path) == []


def test_full_disk_inside_block_is_one_line_and_cleans_up(tmp_path):
    target = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(CristaeZooError, match="No space left on device.*nothing was written"):
        with staged_dir(target) as tmp:
            (tmp / "a").write_text("partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert os.listdir(tmp_path) == []  # the staging folder and the parents this run created are gone


def test_unwritable_folder_is_one_line(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "open", read_only)  # as root, chmod cannot make a folder read-only
    with pytest.raises(CristaeZooError, match="Permission denied.*choose a folder you can write to"):
        with staged_file(tmp_path / "out.txt"):
            pass


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_folder_real(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(CristaeZooError, match="cannot write"):
            with staged_dir(ro / "out"):
                pass
    finally:
        ro.chmod(0o755)


# ------------------------------------------------------------------------------------------------------ signals


def test_cleanup_on_signals_raises_in_block_and_restores_handlers():
    before = signal.getsignal(signal.SIGHUP)
    with pytest.raises(Interrupted) as info:
        with cleanup_on_signals(exit_on_signal=False):
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(5)
    assert info.value.signum == signal.SIGHUP and signal.getsignal(signal.SIGHUP) == before
    with pytest.raises(SystemExit) as exited:
        with cleanup_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert exited.value.code == 128 + signal.SIGTERM


SIGNALLED = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from cristae_zoo.io import cleanup_on_signals, staged_dir
    with cleanup_on_signals(), staged_dir(Path(sys.argv[1]) / "out", marker="m") as tmp:
        (tmp / "m").write_text("x")
        print("writing", flush=True)
        time.sleep(60)
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_signal_leaves_nothing_partial(tmp_path, signum):
    proc = subprocess.Popen([sys.executable, "-c", SIGNALLED, tmp_path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum and f"interrupted by {signal.Signals(signum).name}" in err
    assert os.listdir(tmp_path) == []


def test_sigterm_to_simulate_cli_leaves_nothing(tmp_path):
    """The real command: SIGTERM mid-run exits 143 with no output folder, no .partial, no lock."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cristae_zoo.cli", "simulate", tmp_path / "sim", "--n-images", "500",
                             "--size", "64"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and not any(p.name.endswith(".partial") for p in tmp_path.iterdir()):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    time.sleep(0.5)  # some images written into the staging folder
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)


# ------------------------------------------------------------------------------------------- simulate / prepare


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory) -> Path:
    from cristae_zoo.config import SimulationConfig
    from cristae_zoo.data.simulate import simulate_dataset

    root = tmp_path_factory.mktemp("sim")
    shutil.rmtree(root)
    simulate_dataset(SimulationConfig(n_images=5, height=128, width=128, seed=3), root)
    return root / "hr"


def _split(data: Path) -> dict[str, set[str]]:
    return {s: {p.name for p in (data / s / k).iterdir()} for s in ("train", "test") for k in ("input",)}


def test_prepare_rerun_refused_then_rebuilt_cleanly(hr_dir, tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    code, err = run_cli(["prepare", hr_dir, "-o", data, "--n-test", "2", "--rl-iterations", "2"], capsys, monkeypatch)
    assert code == 0, err
    first = tree_hash(data)
    code, err = run_cli(["prepare", hr_dir, "-o", data, "--n-test", "1", "--seed", "5"], capsys, monkeypatch)
    assert_one_line_error(code, err, "already exists", "--overwrite")
    assert tree_hash(data) == first
    (data / "train" / "input" / "stale_from_before.tif").write_bytes(b"x")
    code, err = run_cli(["prepare", hr_dir, "-o", data, "--n-test", "1", "--seed", "5", "--rl-iterations", "2",
                         "--overwrite"], capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    split = _split(data)
    names = {p.name for p in hr_dir.iterdir()}
    assert len(split["test"]) == 1 and split["train"] | split["test"] == names and not split["train"] & split["test"]
    assert (data / "rl_iterations.png").is_file() and leftovers(tmp_path) == []


def test_prepare_overwrite_never_replaces_a_foreign_folder(hr_dir, tmp_path, capsys, monkeypatch):
    mine = tmp_path / "analysis"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    before = tree_hash(mine)
    code, err = run_cli(["prepare", hr_dir, "-o", mine, "--n-test", "1", "--overwrite"], capsys, monkeypatch)
    assert_one_line_error(code, err, "degradation.yaml", "refusing")
    assert tree_hash(mine) == before
    code, err = run_cli(["prepare", hr_dir, "-o", hr_dir.parent, "--n-test", "1", "--overwrite"], capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err  # the folder holding the input


def test_prepare_full_disk_leaves_nothing(hr_dir, tmp_path, capsys, monkeypatch):
    import cristae_zoo.data.prepare as prepare_module

    calls = []

    def write_then_fill(path, image, **kwargs):
        calls.append(path)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, image)

    monkeypatch.setattr(prepare_module, "write_tiff", write_then_fill)
    code, err = run_cli(["prepare", hr_dir, "-o", tmp_path / "data", "--n-test", "1", "--rl-iterations", "2"], capsys,
                        monkeypatch)  # fmt: skip
    assert_one_line_error(code, err, "No space left on device")
    assert os.listdir(tmp_path) == []


def test_simulate_refuses_existing_and_foreign_folders(tmp_path, capsys, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "hr").mkdir()
    (mine / "hr" / "real_sted.tif").write_bytes(b"real data")
    before = tree_hash(mine)
    for extra in ([], ["--overwrite"]):
        code, err = run_cli(["simulate", mine, "--n-images", "1", "--size", "64", *extra], capsys, monkeypatch)
        assert_one_line_error(code, err, str(mine))
    assert tree_hash(mine) == before
    sim = tmp_path / "sim"
    assert run_cli(["simulate", sim, "--n-images", "2", "--size", "64"], capsys, monkeypatch)[0] == 0
    code, err = run_cli(["simulate", sim, "--n-images", "1", "--size", "64", "--overwrite"], capsys, monkeypatch)
    assert code == 0, err
    assert sorted(p.name for p in (sim / "hr").iterdir()) == ["sim_000.tif"]  # sim_001 of the old run is gone


def test_simulate_unwritable_output_is_one_line(tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("tempfile.mkdtemp", full)
    code, err = run_cli(["simulate", tmp_path / "sim", "--n-images", "1", "--size", "64"], capsys, monkeypatch)
    assert_one_line_error(code, err, "cannot write")
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize(("text", "needle"), [
    ("n_images: 3\nheight: [1, 2\nwidth: 4\n", "invalid YAML: line 3"),
    ("a: 1\n\tb: 2\n", "invalid YAML: line 2"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("n_images: -3\n", "option n_images"),
    ("n_imagez: 3\n", "option n_imagez"),
    ("pixel_size_nm: .nan\n", "finite number"),
    ("height: 200000\n", "option height"),  # a 149 GiB allocation otherwise
    ("peak_photons: [100000, 200000]\n", "saturate the 16-bit"),  # silently clipped otherwise
])  # fmt: skip
def test_invalid_yaml_is_one_line(tmp_path, capsys, monkeypatch, text, needle):
    config = tmp_path / "sim.yaml"
    config.write_text(text)
    code, err = run_cli(["simulate", tmp_path / "out", "--config", config], capsys, monkeypatch)
    assert_one_line_error(code, err, str(config), needle)
    assert sorted(os.listdir(tmp_path)) == ["sim.yaml"]


@pytest.mark.parametrize(("text", "needle"), [
    ("sigma_noise: -3\n", "option sigma_noise"),  # a numpy traceback otherwise
    ("sigma_blur: -3\n", "option sigma_blur"),  # silently no blur otherwise
    ("p_low: 99\np_high: 2\n", "p_low 99 must be below p_high 2"),  # silently inverted normalisation otherwise
])  # fmt: skip
def test_invalid_degradation_config_is_one_line(hr_dir, tmp_path, capsys, monkeypatch, text, needle):
    config = tmp_path / "deg.yaml"
    config.write_text(text)
    code, err = run_cli(["prepare", hr_dir, "-o", tmp_path / "data", "--config", config, "--n-test", "1"], capsys,
                        monkeypatch)  # fmt: skip
    assert_one_line_error(code, err, needle)
    assert sorted(os.listdir(tmp_path)) == ["deg.yaml"]


def test_output_under_a_file_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("x")
    code, err = run_cli(["simulate", tmp_path / "afile" / "sim", "--n-images", "1", "--size", "64"], capsys,
                        monkeypatch)  # fmt: skip
    assert_one_line_error(code, err, "is a file, not a folder")


def test_binary_config_is_one_line(tmp_path):
    from cristae_zoo.config import SimulationConfig

    config = tmp_path / "weights.yaml"
    config.write_bytes(bytes(range(256)))
    with pytest.raises(CristaeZooError, match="weights.yaml: (cannot read|invalid YAML)"):
        SimulationConfig.from_yaml(config)


# -------------------------------------------------------------------------------------------------- packages


@pytest.fixture
def package_copy(tmp_path) -> Path:
    """The shipped DeepCristae package without its big TF bundle (not needed to probe the messages)."""
    folder = tmp_path / "pkg"
    shutil.copytree(REPO / "model_zoo" / "deepcristae", folder, ignore=shutil.ignore_patterns("*.zip"))
    (folder / "tf_saved_model.zip").write_bytes(b"")  # present; its hash is wrong, checked after the ONNX one
    return folder


def test_missing_weights_file_is_named(package_copy):
    from cristae_zoo.predict import check_package_files, load_package

    (package_copy / "weights.onnx").unlink()
    with pytest.raises(CristaeZooError, match="weights.onnx is missing from the package") as info:
        load_package(package_copy)
    assert "valid URL" not in str(info.value)
    with pytest.raises(CristaeZooError, match="weights.onnx is missing"):
        check_package_files(package_copy / "rdf.yaml", hashes=False)


def test_changed_weights_file_hash_is_named(package_copy):
    from cristae_zoo.predict import check_package_files

    with open(package_copy / "weights.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(CristaeZooError, match="weights.onnx has changed since packaging: its sha256 differs"):
        check_package_files(package_copy / "rdf.yaml")


def test_missing_file_in_zip_package_is_named(tmp_path):
    import zipfile

    from cristae_zoo.predict import check_package_files

    source = REPO / "model_zoo" / "deepcristae"
    path = tmp_path / "pkg.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for f in source.iterdir():
            if f.name not in ("weights.onnx", "tf_saved_model.zip"):
                zf.write(f, f.name)
    with pytest.raises(CristaeZooError, match="weights.onnx is missing from the package"):
        check_package_files(path, hashes=False)


def test_bioimageio_missing_file_message_is_translated():
    from types import SimpleNamespace

    from cristae_zoo.predict import first_error

    error = SimpleNamespace(loc=("weights", "onnx", "source", "function-after[HttpUrl(), str]"),
                            msg="Input should be a valid URL, relative URL without a base")  # fmt: skip
    text = first_error(SimpleNamespace(errors=[error]))
    assert text.startswith("weights.onnx.source: the file it names is missing") and "HttpUrl" not in text


@pytest.mark.parametrize("fs", ["no_renameat2", "no_renameat2_no_hardlinks"])
def test_no_replace_move_without_renameat2_or_hard_links(tmp_path, monkeypatch, fs):
    import cristae_zoo.io as io_module

    monkeypatch.setattr(io_module, "_RENAMEAT2", None)
    if fs == "no_renameat2_no_hardlinks":
        def no_link(*args, **kwargs):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_link)
    with staged_file(tmp_path / "a.txt") as tmp:
        tmp.write_text("1")
    assert (tmp_path / "a.txt").read_text() == "1"
    with pytest.raises(CristaeZooError, match="appeared while"):
        with staged_file(tmp_path / "b.txt") as tmp:
            tmp.write_text("mine")
            (tmp_path / "b.txt").write_text("theirs")
    assert (tmp_path / "b.txt").read_text() == "theirs" and leftovers(tmp_path) == []


def test_training_images_checked_like_acquisitions(tmp_path):
    from cristae_zoo.io import read_image_2d

    tifffile.imwrite(tmp_path / "c.tif", _stack((32, 32)).astype(np.complex64) + 1j)
    with pytest.raises(CristaeZooError, match="not a real intensity"):
        read_image_2d(tmp_path / "c.tif")
    tifffile.imwrite(tmp_path / "z.tif", _stack((128, 128)), compression="zlib")
    data = (tmp_path / "z.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(CristaeZooError, match="cannot read as TIFF"):
        read_image_2d(tmp_path / "cut.tif")


def test_prepare_refuses_a_mask_of_another_shape(hr_dir, tmp_path, capsys, monkeypatch):
    sim = tmp_path / "sim"
    shutil.copytree(hr_dir.parent, sim)
    first = sorted((sim / "mito_mask").iterdir())[0]
    tifffile.imwrite(first, np.zeros((64, 64), np.uint8))
    code, err = run_cli(["prepare", sim / "hr", "-o", tmp_path / "data", "--n-test", "1"], capsys, monkeypatch)
    assert_one_line_error(code, err, "does not match its HR image")
    assert not (tmp_path / "data").exists()


def test_data_folder_with_a_wrong_mask_is_one_line_when_loaded(hr_dir, tmp_path):
    from cristae_zoo.config import DegradationConfig
    from cristae_zoo.data.prepare import load_split, prepare_dataset

    data = tmp_path / "data"
    prepare_dataset(hr_dir, data, DegradationConfig(n_test=1, rl_iterations=2))
    mask = next((data / "test" / "mito_mask").iterdir())
    mask.write_bytes(b"not a tiff")
    with pytest.raises(CristaeZooError, match="mito_mask.*cannot read as TIFF"):
        load_split(data, "test")
    tifffile.imwrite(mask, np.zeros((8, 8), np.uint8))
    with pytest.raises(CristaeZooError, match="does not match its HR image"):
        load_split(data, "test")


def test_nohup_keeps_ignoring_sighup():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with cleanup_on_signals(exit_on_signal=False):
            os.kill(os.getpid(), signal.SIGHUP)  # ignored, as nohup asked: no Interrupted
            time.sleep(0.1)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
