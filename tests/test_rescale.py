"""The rescale factor: precedence of the options, resampling, and the width estimator on simulated images."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import typer
from typer.testing import CliRunner

from cristae_zoo.cli_zoo import register
from cristae_zoo.config import SimulationConfig
from cristae_zoo.data.degrade import degrade
from cristae_zoo.data.simulate import simulate_image
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.rescale import (
    Training,
    choose_factor,
    estimate_width,
    parse_rescale,
    resample,
    rescaled_shape,
    summarize,
    object_widths,
)


def test_parse_rescale():
    assert parse_rescale(None) is None and parse_rescale("AUTO") == "auto" and parse_rescale("2.6") == 2.6
    for bad in ("two", "0", "-1", "nan", "100"):
        with pytest.raises(CristaeZooError, match="--rescale"):
            parse_rescale(bad)


def test_factor_precedence():
    train = Training(pixel_size_nm=25.0, width_px=15.64)
    calls = []

    def estimate():
        calls.append(1)
        return summarize([_widths(7.82)])

    assert choose_factor(1.87, 65.0, (50.0, 50.0), train, name="x").source == "--rescale"
    auto = choose_factor("auto", 65.0, (50.0, 50.0), train, name="x", estimate=estimate)
    assert auto.source == "auto" and auto.factor == pytest.approx(2.0) and calls == [1]
    assert choose_factor(None, 65.0, (50.0, 50.0), train, name="x").factor == pytest.approx(2.6)
    assert choose_factor(None, None, (104.0, 104.0), train, name="x").factor == pytest.approx(4.16)


def _widths(w):
    from cristae_zoo.rescale import ObjectWidths

    return ObjectWidths(np.array([w, w]), np.array([10.0, 10.0]))


def test_resample_shapes():
    plane = np.random.default_rng(0).random((50, 60)).astype(np.float32)
    assert rescaled_shape(plane.shape, 4.16) == (208, 250)
    up = resample(plane, (208, 250))
    assert up.shape == (208, 250) and up.dtype == np.float32
    assert resample(up, plane.shape).shape == plane.shape
    assert resample(plane, plane.shape) is plane or np.array_equal(resample(plane, plane.shape), plane)


@pytest.fixture(scope="module")
def degraded():
    """Simulated training-like inputs (25 nm/px, σ_blur 3.25, noise) and the mean drawn width of their mitochondria."""
    out = []
    for seed in (0, 1, 2):
        config = SimulationConfig(height=512, width=512, seed=seed)
        images = [simulate_image(config, i) for i in range(2)]
        rng = np.random.default_rng(seed)
        drawn = float(np.mean([w for im in images for w in im.widths_px]))
        out.append(([degrade(im.hr, 3.25, 4.0, rng) for im in images], drawn))
    return out


@pytest.mark.parametrize("factor", [1.5, 2.0, 3.0, 4.0])
def test_width_estimate_within_15_percent(degraded, factor):
    """Images of known width shrunk by known factors (what a coarser pixel gives): the estimated width is the drawn
    width / factor within 15 %."""
    for planes, drawn in degraded:
        shape = rescaled_shape(planes[0].shape, 1 / factor)
        est = estimate_width([resample(p, shape) for p in planes])
        assert est.mean == pytest.approx(drawn / factor, rel=0.15)
        assert est.sd > 0 and est.n_objects >= 5 and est.n_planes == 2


def test_estimator_finds_nothing_in_noise():
    noise = np.random.default_rng(0).poisson(100, size=(128, 128)).astype(np.float32)
    assert len(object_widths(noise).widths) <= 2
    with pytest.raises(CristaeZooError, match="no mitochondria"):
        estimate_width([np.full((64, 64), 100, np.float32)], name="flat.tif")


def test_estimate_scale_cli(degraded, tmp_path):
    planes, drawn = degraded[0]
    stack = np.stack([resample(p, (256, 256)) for p in planes]).astype(np.uint16)  # shrunk by 2
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "ZYX", "unit": "um"}, resolution=(20, 20))
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["estimate-scale", str(path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    line = [ln for ln in result.output.splitlines() if ln.startswith(str(path))][0]
    factor = float(line.split("→ factor ")[1].split()[0])
    assert factor == pytest.approx(15.64 / (drawn / 2), rel=0.15)
    assert line.endswith("from the pixel size: 2.00")  # 50 nm / 25 nm, for comparison
