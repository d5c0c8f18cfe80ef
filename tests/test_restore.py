"""Restoring whole acquisitions: stacks, rescale, batches and tiles, folders, outputs, Dask, and bad input."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import tifffile
import zarr
from typer.testing import CliRunner

from cristae_zoo.acquisition import open_acquisition
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.export.testing import synthetic_mito_image
from cristae_zoo.predict import Restorer, predict_image
from cristae_zoo.rescale import resample
from cristae_zoo.restore import RestoreOptions, restore_path


@pytest.fixture
def app(zoo_app):
    return zoo_app


pytestmark = pytest.mark.usefixtures("scratch_cwd")


def _tzyx(t=2, z=3, shape=(60, 70)):
    return np.stack([np.stack([synthetic_mito_image(shape, seed=10 * i + j) for j in range(z)]) for i in range(t)])


def _hyperstack(path, data, pixel_um=0.05, axes="TZYX"):
    tifffile.imwrite(path, data.astype(np.uint16), imagej=True, resolution=(1 / pixel_um, 1 / pixel_um),
                     metadata={"axes": axes, "unit": "um", "spacing": 0.2, "finterval": 3.0})  # fmt: skip
    return path


def _ngff(path, data, pixel_nm=50.0):
    """A minimal OME-Zarr 0.4 (t, z, y, x) with one chunk per plane."""
    group = zarr.open_group(path, mode="w", zarr_format=2)
    group.create_array("0", shape=data.shape, chunks=(1, 1) + data.shape[-2:], dtype="uint16")[...] = data
    axes = [{"name": "t", "type": "time", "unit": "second"}, {"name": "z", "type": "space", "unit": "nanometer"},
            {"name": "y", "type": "space", "unit": "nanometer"}, {"name": "x", "type": "space", "unit": "nanometer"}]
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [{"path": "0",
        "coordinateTransformations": [{"type": "scale", "scale": [3.0, 200.0, pixel_nm, pixel_nm]}]}]}]  # fmt: skip
    return path


def _one_line(result) -> str:
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    return lines[-1]


# ------------------------------------------------------------------------------------------------ the restorer


def test_batch_equals_one_plane_at_a_time(tiny_package):
    planes = np.stack([synthetic_mito_image((70, 90), seed=s) for s in range(3)])
    planes[1] *= 3  # each plane is normalised with its own percentiles
    with Restorer(tiny_package) as r:
        batch = r.predict(planes)
        single = np.stack([r.predict(p[None])[0] for p in planes])
    np.testing.assert_allclose(batch, single, atol=1e-5)
    np.testing.assert_allclose(single[0], predict_image(tiny_package, planes[0]), atol=1e-6)


def test_tiled_batch_equals_untiled(tiny_package):
    planes = np.stack([synthetic_mito_image((203, 190), seed=s) for s in range(2)])  # not a multiple of the step
    ticks = []
    with Restorer(tiny_package, tile=None) as r:
        untiled = r.predict(planes)
    with Restorer(tiny_package, tile=64) as r:
        tiled = r.predict(planes, progress=lambda done, total: ticks.append(total))
    assert ticks and ticks[-1] > 4
    np.testing.assert_allclose(tiled, untiled, atol=1e-5)
    with Restorer(tiny_package, tile=64) as r:  # the restore path's own arrays: the tiles write into them
        units = planes[:, None].astype(np.float32)
        in_place = r.predict_units(units, overwrite_input=True)[:, 0]
    np.testing.assert_allclose(in_place, tiled, atol=1e-6)


def test_tiles_are_balanced_and_equal_untiled(tiny_package):
    """Tiles are as few as fit `tile` and of equal size (one or two window shapes, so ONNX Runtime's arena reuses
    its blocks): never more tiles than full tiles plus a remainder, and the same result as untiled."""
    with Restorer(tiny_package, tile=96) as r:
        td = r.tensors
        for n in (96, 97, 150, 203, 256, 300, 1000):
            (inner, _), (halo, _) = r._layout((n, n))
            h, step = td.halo.get("y", 0), max(1, td.step.get("y", 1))
            if n <= 96:
                assert inner == n and halo == 0
                continue
            widest = (96 // step * step - 2 * h) // step * step
            k = -(-n // widest)
            assert inner % step == 0 and inner <= widest and -(-n // inner) == k, (n, inner, widest)
            windows = {min(n, a + inner + h) - max(0, a - h) for a in range(0, n, inner)}
            assert len(windows) <= 3 and max(windows) <= 96, (n, windows)
        planes = np.stack([synthetic_mito_image((250, 203), seed=s) for s in range(2)])
        tiled = r.predict(planes)
    with Restorer(tiny_package, tile=None) as r:
        np.testing.assert_allclose(tiled, r.predict(planes), atol=1e-5)


def test_conditions_measures_are_exact_and_streaming_equals_check():
    """The one-copy noise measure equals its reference definition (data.mask.noise_sigma on float64) bit for bit,
    the structure measure the same definitions on the every-second-pixel grid (residuals from the full-resolution
    neighbours), and the streaming check (one plane at a time, crops kept) reports what `check` reports."""
    from cristae_zoo.conditions import ConditionsOfUse, check, check_stream, relative_noise, structure_snr
    from cristae_zoo.data.mask import noise_sigma

    rng = np.random.default_rng(0)
    planes = [synthetic_mito_image((301, 257), seed=1).astype(np.float32),
              rng.normal(100, 5, (700, 650)).astype(np.float32), rng.integers(0, 50, (64, 65)).astype(np.uint16)]  # fmt: skip
    for p in planes:
        q = np.asarray(p, np.float64)
        h, w = (q.shape[0] - 1) // 2 * 2, (q.shape[1] - 1) // 2 * 2
        grid = q[:h:2, :w:2]
        r = (2 * grid - q[1 : h + 1 : 2, :w:2] - q[:h:2, 1 : w + 1 : 2]) / np.sqrt(6)
        sigma = 1.4826 * np.median(np.abs(r - np.median(r)))
        p50, p995 = np.percentile(grid, [50.0, 99.5])
        assert structure_snr(p) == pytest.approx(float((p995 - p50) / sigma), rel=1e-12)
        full = float((np.percentile(q, 99.5) - np.median(q)) / noise_sigma(q))
        assert structure_snr(p) == pytest.approx(full, rel=0.1)  # the subsample measures what the plane shows
        lo, hi = np.percentile(q, [2.0, 99.8])
        assert relative_noise(p) == float(noise_sigma(q) / max(hi - lo, 1e-12))
    conditions = ConditionsOfUse(width_px=(5.0, 30.0), max_relative_noise=0.5, min_structure_snr=4.0)
    big = [synthetic_mito_image((700, 700), seed=s).astype(np.float32) for s in range(3)]
    expected = check(conditions, big, big[1:])
    streamed = check_stream(conditions, ((p, True, i > 0) for i, p in enumerate(big)))
    assert streamed.measured == expected.measured and streamed.outside == expected.outside


# ------------------------------------------------------------------------------------------------ acquisitions


def test_stack_is_restored_plane_by_plane(tiny_package, tmp_path):
    data = _tzyx()
    src = _hyperstack(tmp_path / "stack.tif", data, pixel_um=0.0375)  # 37.5 nm → factor 1.5
    (result,) = restore_path(tiny_package, src, tmp_path / "out.tif", RestoreOptions(batch=4))
    assert result.choice.factor == pytest.approx(1.5) and result.choice.source == "metadata"
    out = tifffile.imread(result.output)
    assert out.shape == (2, 3, 90, 105) and out.dtype == np.float32
    back = open_acquisition(result.output)
    assert back.axes == "TZYX" and back.pixel_size_nm == pytest.approx((25.0, 25.0))
    assert back.z_step_nm == pytest.approx(200.0) and back.time_step_s == pytest.approx(3.0)
    for t, z in [(0, 0), (1, 2)]:
        plane = resample(data[t, z].astype(np.float32), (90, 105))
        np.testing.assert_allclose(out[t, z], predict_image(tiny_package, plane), atol=1e-5)


@pytest.mark.parametrize("weights", ["tensorflow", "torchscript"])
def test_other_weights_formats(tiny_package, tmp_path, weights):
    src = _hyperstack(tmp_path / "stack.tif", _tzyx(t=1, z=2), pixel_um=0.025)
    (result,) = restore_path(tiny_package, src, tmp_path / "out.tif", RestoreOptions(weights=weights, workers=2))
    (reference,) = restore_path(tiny_package, src, tmp_path / "ref.tif", RestoreOptions(weights="onnx"))
    assert "weights" in result.spec.provenance and result.spec.provenance["weights"] != "onnx"
    np.testing.assert_allclose(tifffile.imread(result.output), tifffile.imread(reference.output), atol=1e-4)


def test_units_at_once_bit_identical_and_bounded(tiny_package, tmp_path, monkeypatch):
    """By default a stack of one-tile planes runs one plane per core, each on its own single-threaded ONNX Runtime
    session: bit-identical to one session on all cores, never more sessions than planes at once."""
    import onnxruntime as ort

    from cristae_zoo import predict as predict_module
    from cristae_zoo import restore as restore_module

    for module in (predict_module, restore_module):  # 2 cores, whatever machine runs the test
        monkeypatch.setattr(module, "cpu_cores", lambda: 2)
    threads = []
    original = ort.InferenceSession.__init__

    def record(self, path, options=None, **kw):
        threads.append(options.intra_op_num_threads if options is not None else None)
        original(self, path, options, **kw)

    monkeypatch.setattr(ort.InferenceSession, "__init__", record)
    src = _hyperstack(tmp_path / "stack.tif", _tzyx(t=2, z=3), pixel_um=0.025)
    (auto,) = restore_path(tiny_package, src, tmp_path / "auto.tif", RestoreOptions(batch=1))
    assert threads == [1, 1]  # two sessions of one thread (6 planes, 2 at once)
    threads.clear()
    (one,) = restore_path(tiny_package, src, tmp_path / "one.tif", RestoreOptions(batch=1, workers=1))
    assert threads == [0]  # one session, ONNX Runtime's default threads (0: all cores)
    np.testing.assert_array_equal(tifffile.imread(auto.output), tifffile.imread(one.output))


def test_units_at_once_rules(tiny_package, monkeypatch):
    from cristae_zoo import restore as restore_module
    from cristae_zoo.restore import units_at_once

    r = Restorer(tiny_package, tile=128)
    auto = RestoreOptions()
    assert units_at_once(r, auto, 2, (100, 100), 5) == 2
    assert units_at_once(r, auto, 2, (100, 100), 1) == 1  # one batch: nothing to run beside it
    assert units_at_once(r, auto, 2, (300, 300), 5) == 1  # tiled planes: one at a time (one arena)
    assert units_at_once(r, RestoreOptions(workers=3), 2, (300, 300), 5) == 3  # asked for
    assert units_at_once(r, RestoreOptions(scheduler="local"), 2, (100, 100), 5) == 1
    monkeypatch.setattr(restore_module, "available_memory", lambda: 2 * 2 * 1024 * 100 * 100 - 1)
    assert units_at_once(r, auto, 2, (100, 100), 5) == 1  # two arenas would take over half the free memory


def test_in_order_starts_at_once_keeps_order_and_cancels():
    """The first `window` items run before anyone iterates (the conditions check runs beside them); results come
    in order; cancel() drops what has not started."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from cristae_zoo.distributed import InOrder

    started, release = [], threading.Event()

    def work(i):
        started.append(i)
        release.wait(5)
        return i * i

    with ThreadPoolExecutor(2) as pool:
        run = InOrder(pool, work, range(6), window=3)
        deadline = time.monotonic() + 5
        while len(started) < 2 and time.monotonic() < deadline:
            pass
        assert sorted(started) == [0, 1]  # two threads busy, the third item queued, nothing iterated yet
        release.set()
        assert list(run) == [0, 1, 4, 9, 16, 25]
        release.clear()
        started.clear()
        refused = InOrder(pool, work, range(6), window=3)
        refused.cancel()  # e.g. --strict refused after the check: the queued item never runs
        release.set()
    assert len(started) <= 2


def test_lend_runner_waits_for_a_free_runner(tiny_package):
    import threading
    import time

    r = Restorer(tiny_package)
    with r.lend_runner(1) as first:
        got = []
        t = threading.Thread(target=lambda: got.append(r.lend_runner(1).__enter__()))
        t.start()
        time.sleep(0.2)
        assert not got  # the only runner is lent: the second call waits
    t.join(5)
    assert got == [first]  # and then gets the same session
    with r.lend_runner(2) as a, r.lend_runner(2) as b:
        assert a is not b and a is not first


def test_resample_back_and_pixel_size_option(tiny_package, tmp_path):
    src = tmp_path / "plane.tif"
    tifffile.imwrite(src, synthetic_mito_image((64, 72)).astype(np.uint16))  # no pixel size
    options = RestoreOptions(pixel_size_nm=50.0, resample_back=True)
    (result,) = restore_path(tiny_package, src, tmp_path / "out.tif", options)
    assert result.choice.factor == pytest.approx(2.0) and result.choice.source == "--pixel-size"
    back = open_acquisition(result.output)
    assert back.shape == (64, 72) and back.pixel_size_nm == pytest.approx((50.0, 50.0))


def test_ome_zarr_in_and_out_with_channel(tiny_package, tmp_path):
    data = _tzyx(t=1, z=2)
    src = _ngff(tmp_path / "in.zarr", data)
    (result,) = restore_path(tiny_package, src, tmp_path / "out.zarr", RestoreOptions(rescale=1.0))
    out = zarr.open_array(result.output / "0", mode="r")
    assert out.shape == (1, 2, 60, 70) and out.chunks == (1, 1, 60, 70)
    np.testing.assert_allclose(out[0, 1], predict_image(tiny_package, data[0, 1]), atol=1e-5)
    back = open_acquisition(result.output)
    assert back.pixel_size_nm == pytest.approx((50.0, 50.0)) and back.metadata["attrs"]["cristae_zoo"]["rescale_factor"] == 1.0


def test_folder_of_files_and_overwrite(tiny_package, tmp_path, app):
    folder = tmp_path / "acquisitions"
    folder.mkdir()
    _hyperstack(folder / "a.tif", _tzyx(t=1, z=2))
    _hyperstack(folder / "b.tif", _tzyx(t=2, z=1), axes="TZYX")
    _ngff(folder / "c.zarr", _tzyx(t=1, z=1))
    (folder / "notes.txt").write_text("not an image")
    args = ["predict", str(tiny_package), str(folder), "-o", str(tmp_path / "restored"), "--rescale", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path / "restored")) == ["a.tif", "b.tif", "c.zarr"]
    before = {p: (folder / p).stat().st_mtime_ns for p in ("a.tif", "b.tif")}

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "already exists; use --overwrite" in _one_line(again)
    again = CliRunner().invoke(app, [*args, "--overwrite"])
    assert again.exit_code == 0, again.output
    assert before == {p: (folder / p).stat().st_mtime_ns for p in ("a.tif", "b.tif")}  # inputs untouched
    assert not [p for p in os.listdir(tmp_path / "restored") if p.startswith(".")]  # no partial files left


def test_refuses_to_overwrite_inputs(tiny_package, tmp_path):
    src = _hyperstack(tmp_path / "in.tif", _tzyx(t=1, z=1))
    with pytest.raises(CristaeZooError, match="refusing to overwrite an input"):
        restore_path(tiny_package, src, src, RestoreOptions(overwrite=True))
    zsrc = _ngff(tmp_path / "in.zarr", _tzyx(t=1, z=1))
    with pytest.raises(CristaeZooError, match="refusing to overwrite an input"):
        restore_path(tiny_package, zsrc, zsrc, RestoreOptions(overwrite=True))


def test_cli_preview_and_auto_rescale(tiny_package, tmp_path, app):
    src = _hyperstack(tmp_path / "stack.tif", _tzyx(t=2, z=2, shape=(96, 96)))
    out = tmp_path / "out.tif"
    result = CliRunner().invoke(app, ["predict", str(tiny_package), str(src), "-o", str(out), "--rescale", "auto",
                                      "--preview"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "(auto: mitochondria" in result.output.replace("\n", " ")
    png = tmp_path / "out.preview.png"
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and min(im.size) >= 256


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (lambda p: tifffile.imwrite(p, np.ones((5, 32, 32), np.uint16)), [], "--axes"),
        (lambda p: tifffile.imwrite(p, np.ones((2, 32, 32), np.uint16), imagej=True, metadata={"axes": "CYX"}),
         ["--rescale", "1"], "--channel"),  # fmt: skip
        (lambda p: tifffile.imwrite(p, np.ones((32, 32), np.uint16)), [], "--pixel-size"),
        (lambda p: p.write_bytes(b""), [], "empty file"),
    ],
    ids=["unknown-axes", "channel-axis", "no-pixel-size", "zero-size"],
)
def test_bad_input_is_one_line(tiny_package, tmp_path, app, make, args, message):
    src = tmp_path / "bad.tif"
    make(src)
    before = src.read_bytes()
    result = CliRunner().invoke(app, ["predict", str(tiny_package), str(src), "-o", str(tmp_path / "o.tif"), *args])
    assert result.exit_code == 2, result.output
    line = _one_line(result)
    assert message in line and "bad.tif" in line and "Traceback" not in result.output
    assert sorted(os.listdir(tmp_path)) == ["bad.tif"] and src.read_bytes() == before


def test_nan_plane_midway_removes_partial_output(tiny_package, tmp_path, app):
    data = _tzyx(t=1, z=6).astype(np.float32)
    data[0, 4, 10, 10] = np.nan
    src = tmp_path / "nan.tif"
    tifffile.imwrite(src, data, imagej=True, metadata={"axes": "TZYX"})
    result = CliRunner().invoke(app, ["predict", str(tiny_package), str(src), "-o", str(tmp_path / "o.tif"),
                                      "--rescale", "1", "--batch", "1"])  # fmt: skip
    assert result.exit_code == 2 and "plane z=4 contains NaN" in _one_line(result)
    assert sorted(os.listdir(tmp_path)) == ["nan.tif"]


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_disk_full_midway(tiny_package, tmp_path, monkeypatch, suffix):
    import cristae_zoo.distributed as distributed

    src = _hyperstack(tmp_path / "in.tif", _tzyx(t=1, z=4))
    before = src.read_bytes()
    real = distributed.restore_batch
    calls = []

    def filling_up(job, batch):
        calls.append(batch)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(job, batch)

    monkeypatch.setattr(distributed, "restore_batch", filling_up)
    out = tmp_path / f"out{suffix}"
    with pytest.raises(CristaeZooError, match="(disk full|No space left on device).*(partial output was removed|nothing was written)") as err:
        restore_path(tiny_package, src, out, RestoreOptions(rescale=1.0, batch=1))
    assert str(out) in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["in.tif"] and src.read_bytes() == before


# ------------------------------------------------------------------------------------------------------ Dask


def test_dask_cluster_equals_single_process(tiny_package, tmp_path):
    """Two worker processes of a LocalCluster, reading and writing OME-Zarr chunks, give the single-process result."""
    from distributed import LocalCluster

    src = _ngff(tmp_path / "in.zarr", _tzyx(t=3, z=2))
    options = RestoreOptions(rescale=1.5, batch=1)
    (single,) = restore_path(tiny_package, src, tmp_path / "single.zarr", options)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        (dist,) = restore_path(tiny_package, src, tmp_path / "dask.zarr",
                               RestoreOptions(rescale=1.5, batch=1, scheduler=cluster.scheduler_address))  # fmt: skip
        assert "2 workers" in dist.engine
    a = zarr.open_array(single.output / "0", mode="r")[...]
    b = zarr.open_array(dist.output / "0", mode="r")[...]
    assert a.shape == (3, 2, 90, 105)
    np.testing.assert_array_equal(a, b)
    tiff = restore_path(tiny_package, src, tmp_path / "threads.tif", RestoreOptions(rescale=1.5, workers=2))[0]
    np.testing.assert_array_equal(tifffile.imread(tiff.output), a)


def test_bad_scheduler_address(tiny_package, tmp_path):
    src = _ngff(tmp_path / "in.zarr", _tzyx(t=1, z=1))
    with pytest.raises(CristaeZooError, match="--scheduler tcp://127.0.0.1:1: cannot connect"):
        restore_path(tiny_package, src, tmp_path / "o.zarr", RestoreOptions(rescale=1.0, scheduler="tcp://127.0.0.1:1"))
    assert not (tmp_path / "o.zarr").exists()


# ------------------------------------------------------------------------------ uncertainty: predict --ensemble


def test_cli_ensemble_tta_writes_mean_and_std(tiny_package, tmp_path, app):
    from cristae_zoo.uncertainty import predict_with_uncertainty

    data = _tzyx(t=1, z=2, shape=(64, 72))[0]
    src = _hyperstack(tmp_path / "stack.tif", data, axes="ZYX")
    out = tmp_path / "out.tif"
    result = CliRunner().invoke(app, ["predict", str(tiny_package), str(src), "-o", str(out), "--rescale", "1",
                                      "--ensemble", "8"])  # fmt: skip
    assert result.exit_code == 0, result.output
    mean, std = tifffile.imread(out), tifffile.imread(tmp_path / "out_std.tif")
    assert mean.shape == std.shape == (2, 64, 72)
    back = open_acquisition(tmp_path / "out_std.tif")  # same axes and pixel size as the restoration
    assert back.axes == "ZYX" and back.pixel_size_nm == pytest.approx((50.0, 50.0))
    for z in range(2):  # the same statistics computed directly, plane by plane
        m, s = predict_with_uncertainty(lambda im: predict_image(tiny_package, im), data[z].astype(np.float32))
        np.testing.assert_allclose(mean[z], m, atol=1e-5)
        np.testing.assert_allclose(std[z], s, atol=1e-5)
    assert std.max() > 0  # an untrained network is far from rotation-equivariant


def test_ensemble_of_identical_models_has_zero_std_in_zarr(tiny_package, tmp_path):
    data = _tzyx(t=1, z=2)
    src = _ngff(tmp_path / "in.zarr", data)
    options = RestoreOptions(rescale=1.0, members=(str(tiny_package),))
    (result,) = restore_path(tiny_package, src, tmp_path / "out.ome.zarr", options)
    assert result.uncertainty == tmp_path / "out_std.ome.zarr"
    mean = zarr.open_array(result.output / "0", mode="r")[...]
    std = zarr.open_array(result.uncertainty / "0", mode="r")[...]
    np.testing.assert_allclose(mean[0, 1], predict_image(tiny_package, data[0, 1]), atol=1e-5)
    assert std.shape == mean.shape and np.abs(std).max() < 1e-5


def test_ensemble_bad_k_and_existing_std(tiny_package, tmp_path, app):
    src = _hyperstack(tmp_path / "stack.tif", _tzyx(t=1, z=1))
    args = ["predict", str(tiny_package), str(src), "-o", str(tmp_path / "o.tif"), "--rescale", "1"]
    result = CliRunner().invoke(app, [*args, "--ensemble", "9"])
    assert result.exit_code == 2 and "--ensemble 9" in _one_line(result)
    (tmp_path / "o_std.tif").write_bytes(b"keep")
    result = CliRunner().invoke(app, [*args, "--ensemble", "2"])
    assert result.exit_code == 2 and "o_std.tif: already exists" in _one_line(result)
    assert (tmp_path / "o_std.tif").read_bytes() == b"keep" and not (tmp_path / "o.tif").exists()


def test_conditions_width_stops_once_the_first_crop_is_precise(monkeypatch):
    """The check's width is measured crop by crop and stops at a 5 % standard error: a crop with many mitochondria
    decides it alone; a crop with too few (here: none) does not, and the next one is measured."""
    import cristae_zoo.rescale as rescale
    from cristae_zoo.conditions import _width
    from cristae_zoo.export.testing import synthetic_mito_image

    calls = []
    original = rescale.object_widths
    monkeypatch.setattr(rescale, "object_widths", lambda p: calls.append(1) or original(p))
    full = synthetic_mito_image((640, 640), seed=3).astype(np.float32)
    alone = rescale.summarize([original(full)])
    assert alone.n_objects >= 5 and alone.sem <= 0.05 * alone.mean  # the premise: one crop is precise enough
    assert _width([full, full[::-1]]) == pytest.approx(alone.mean) and len(calls) == 1
    calls.clear()
    empty = np.full((640, 640), 100.0, np.float32)
    assert _width([empty, full]) == pytest.approx(alone.mean) and len(calls) == 2
    assert _width([empty]) is None
