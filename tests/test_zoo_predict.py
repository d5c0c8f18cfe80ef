"""Every package in model_zoo/ runs through `cristae-zoo predict` and the Python API: its test input, written as
an ordinary microscopy file (YX, ZYX, or a TYX movie for a frames-as-channels package), reproduces the package's
test output — all channels, full size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import run_cli

ZOO = Path(__file__).resolve().parents[1] / "model_zoo"
PACKAGES = sorted(p.name for p in ZOO.iterdir() if (p / "rdf.yaml").is_file())


def _case(name: str):
    """(file array, its axes, the expected output arranged as the file's output axes, extra CLI flags, tensors)."""
    from cristae_zoo.core.tensors import describe_package
    from cristae_zoo.predict import load_package

    td = describe_package(load_package(ZOO / name))
    x = np.load(ZOO / name / "test_input.npy")[0]  # (C_in, [Z], Y, X)
    y = np.load(ZOO / name / "test_output.npy")[0]  # (C_out, [Z], Y', X')
    flags = ["--rescale", "1"] if td.rescale is not None else []
    if td.frames_as_channels:
        return x, "TYX", y[0], flags, td  # the test input is the window around frame n // 2
    image = x[0]
    axes = "ZYX" if td.spatial_axes == "zyx" else "YX"
    if td.n_out > 1:  # channels come out as a C axis: ZCYX in TIFF order
        expected = np.moveaxis(y, 0, 1) if axes == "ZYX" else y
    else:
        expected = y[0]
    return image, axes, expected, flags, td


def _pick(out: np.ndarray, td) -> np.ndarray:
    return out[td.n_in // 2] if td.frames_as_channels else out


def _tolerance(expected: np.ndarray) -> float:
    return 1e-4 * max(1.0, float(np.ptp(expected)))


@pytest.mark.parametrize("name", PACKAGES)
def test_cli_predict_reproduces_test_output(name, tmp_path, capsys, monkeypatch):
    image, axes, expected, flags, td = _case(name)
    source = tmp_path / f"{name}.tif"
    tifffile.imwrite(source, image, imagej=True, metadata={"axes": axes})
    before = source.read_bytes()
    out = tmp_path / "restored.tif"
    code, _, err = run_cli(["predict", name, source, "-o", out, *flags], capsys, monkeypatch)
    assert code == 0, err
    assert "conditions of use" not in err  # the check must not fire on the package's own test input
    with tifffile.TiffFile(out) as tf:
        restored = tf.asarray()
        out_axes = tf.series[0].axes
    assert source.read_bytes() == before  # the input is never modified
    restored = _pick(restored, td)
    assert restored.shape == expected.shape, (out_axes, restored.shape, expected.shape)
    np.testing.assert_allclose(restored, expected, atol=_tolerance(expected))


@pytest.mark.parametrize("name", PACKAGES)
def test_python_api_reproduces_test_output(name):
    import cristae_zoo as cz

    image, axes, expected, _, td = _case(name)
    with cz.load(name) as model:
        result = model.predict(image, axes, rescale=1 if td.rescale is not None else None, full=True)
    assert result.channels == td.output_channels
    restored = _pick(result.array, td)
    assert restored.shape == expected.shape
    np.testing.assert_allclose(restored, expected, atol=_tolerance(expected))


def test_pssr_output_is_four_times_larger_with_a_quarter_of_the_pixel_size(tmp_path, capsys, monkeypatch):
    """PSSR writes 4× the size and ÷4 the pixel size (here 100 nm → 25 nm) in the metadata."""
    name = "pssr-sf"
    x = np.load(ZOO / name / "test_input.npy")[0, 0]
    source = tmp_path / "lr.tif"
    tifffile.imwrite(source, np.stack([x, x[::-1]]), imagej=True, metadata={"axes": "TYX", "unit": "um"},
                     resolution=(1 / 0.1, 1 / 0.1))  # fmt: skip
    out = tmp_path / "hr.tif"
    code, _, err = run_cli(["predict", name, source, "-o", out], capsys, monkeypatch)
    assert code == 0, err
    from cristae_zoo.acquisition import open_acquisition

    acq = open_acquisition(out)
    assert acq.axes == "TYX" and acq.shape == (2, 4 * x.shape[0], 4 * x.shape[1])
    assert acq.pixel_size_nm == pytest.approx((25.0, 25.0), rel=1e-4)


@pytest.mark.parametrize(
    "name, shape, axes, expected",
    [
        ("care-luminescence-pairs-3d", (64, 64), "YX", "ZYX z-stack"),
        ("pssr-mf", (64, 64), "YX", "TYX movie"),
        ("pssr-mf", (3, 64, 64), "TYX", "at least 5 frames"),
    ],
)
def test_a_file_the_package_cannot_take_is_one_line(name, shape, axes, expected, tmp_path, capsys, monkeypatch):
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, np.ones(shape, np.float32), imagej=True, metadata={"axes": axes})
    out = tmp_path / "out.tif"
    code, stdout, err = run_cli(["predict", name, source, "-o", out], capsys, monkeypatch)
    assert code == 2
    assert "Traceback" not in err and expected in " ".join(err.split()) and str(source.name) in err
    assert not out.exists()


def test_rescale_on_a_package_without_a_rescale_requirement_is_refused(tmp_path, capsys, monkeypatch):
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, np.ones((64, 64), np.float32))
    code, _, err = run_cli(["predict", "pssr-sf", source, "-o", tmp_path / "o.tif", "--rescale", "2"], capsys,
                           monkeypatch)  # fmt: skip
    assert code == 2 and "no rescale requirement" in " ".join(err.split())
