import numpy as np
import pytest
from scipy import ndimage

from cristae_zoo.config import DegradationConfig, SimulationConfig
from cristae_zoo.data.degrade import (
    degrade,
    flip,
    gaussian_psf,
    percentile_normalize,
    richardson_lucy,
    rotations,
    shrink,
    shrink_and_flip,
)
from cristae_zoo.data.patches import augment
from cristae_zoo.data.simulate import simulate_image
from cristae_zoo.errors import CristaeZooError


def _image():
    img = np.full((64, 80), 3.0, np.float32)
    img[20:40, 10:70] = 80
    return img


def test_degrade_is_seeded_and_shape_preserving():
    img = _image()
    a = degrade(img, 3.25, 4.0, np.random.default_rng(5), offset=0)
    b = degrade(img, 3.25, 4.0, np.random.default_rng(5), offset=0)
    c = degrade(img, 3.25, 4.0, np.random.default_rng(6), offset=0)
    assert a.shape == img.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all(a == np.round(a)) and a.min() >= 0


def test_degrade_noise_statistics():
    # 50 photons on a 100-count offset: Poisson variance 50 (not 150: the offset has no shot noise), plus read
    # noise 16, plus rounding 1/12; the mean keeps the offset.
    flat = np.full((400, 400), 150.0, np.float32)
    out = degrade(flat, 3.25, 4.0, np.random.default_rng(0), offset=100)
    assert out.mean() == pytest.approx(150, abs=0.1)
    assert out.var() == pytest.approx(50 + 16 + 1 / 12, rel=0.03)
    # Without an offset the same photons give the same variance.
    out0 = degrade(flat - 100, 3.25, 4.0, np.random.default_rng(0), offset=0)
    assert out0.var() == pytest.approx(50 + 16 + 1 / 12, rel=0.03)


def test_background_variance_of_a_degraded_simulated_image_follows_the_detector_model():
    # A simulated HR image (photons + offset 100 + read noise), no out-of-focus haze so the background is flat.
    config = SimulationConfig(height=256, width=256, n_out_of_focus=(0, 0), seed=3)
    hr = simulate_image(config, 0)
    background = ~ndimage.binary_dilation(hr.mito_mask, iterations=30)  # ≥ 30 px (9 σ_blur) from mitochondria
    assert background.sum() > 10_000
    # The HR background itself: Poisson(background photons) + read noise² + rounding.
    hr_var = hr.hr[background].var()
    assert hr_var == pytest.approx(config.background_photons + config.read_noise**2 + 1 / 12, rel=0.1)

    out = degrade(hr.hr, 3.25, 4.0, np.random.default_rng(0), offset=config.offset)
    photons = ndimage.gaussian_filter(hr.hr.astype(np.float64) - config.offset, 3.25, mode="reflect")
    expected_var = photons[background].mean() + 4.0**2 + 1 / 12
    assert out[background].mean() == pytest.approx(config.offset + photons[background].mean(), abs=0.2)
    # ≈ sqrt(2 + 16) ≈ 4.3 counts; a Poisson draw on photons + offset would give ≈ sqrt(102 + 16) ≈ 10.9.
    assert out[background].var() == pytest.approx(expected_var, rel=0.05)


def test_degrade_refuses_an_image_without_the_offset():
    with pytest.raises(CristaeZooError, match="below the detector offset"):
        degrade(np.full((32, 32), 5.0, np.float32), 3.25, 4.0, np.random.default_rng(0), offset=100)


def test_richardson_lucy_is_deterministic_and_sharpens():
    img = _image()
    blurred = ndimage.gaussian_filter(img, 1.5)
    a = richardson_lucy(blurred, 1.5, 10)
    np.testing.assert_array_equal(a, richardson_lucy(blurred, 1.5, 10))
    assert a.shape == img.shape
    edge = slice(18, 23), slice(30, 50)
    assert np.abs(np.diff(a[edge], axis=0)).max() > np.abs(np.diff(blurred[edge], axis=0)).max()


def test_gaussian_psf_normalised():
    psf = gaussian_psf(3.25)
    assert psf.sum() == pytest.approx(1.0, abs=1e-6) and psf.shape == (27, 27)


def test_percentile_normalize_matches_definition():
    img = np.random.default_rng(0).random((50, 50)).astype(np.float32) * 100
    lo, hi = np.percentile(img, [2, 99.8])
    np.testing.assert_allclose(percentile_normalize(img), (img - lo) / (hi - lo), rtol=1e-5)


def _asymmetric() -> np.ndarray:
    return np.arange(12, dtype=np.float32).reshape(3, 4) ** 1.5  # no symmetry, different height and width


def test_rotations_and_flips_are_what_they_say():
    img = _asymmetric()
    r = rotations(img)
    assert len(r) == 4 and r[1].shape == (4, 3)
    np.testing.assert_array_equal(r[0], img)
    np.testing.assert_array_equal(r[1], [[img[i, 3 - j] for i in range(3)] for j in range(4)])  # 90° anticlockwise
    np.testing.assert_array_equal(r[2], img[::-1, ::-1])
    h = flip(img, "horizontal")
    v = flip(img, "vertical")
    np.testing.assert_array_equal(h, [[img[i, 3 - j] for j in range(4)] for i in range(3)])  # left ↔ right
    np.testing.assert_array_equal(v, [[img[2 - i, j] for j in range(4)] for i in range(3)])  # top ↔ bottom
    # A flip is a mirror image: no rotation of the image equals it (the old "flip", [::-1, ::-1], was r[2]).
    for mirrored in (h, v):
        assert not any(rot.shape == mirrored.shape and np.array_equal(rot, mirrored) for rot in r)
    s = shrink_and_flip(np.ones((100, 120), np.float32), 0.8)
    assert s.shape == (80, 96)
    big = np.random.default_rng(0).random((40, 60)).astype(np.float32)
    np.testing.assert_array_equal(shrink_and_flip(big, 0.8, "vertical"), shrink(big, 0.8)[::-1, :])
    with pytest.raises(ValueError):
        flip(img, "diagonal")  # type: ignore[arg-type]


def _dihedral(image: np.ndarray) -> dict[str, np.ndarray]:
    """The 8 symmetries of the square: 4 rotations and 4 reflections (a rotation then a left↔right mirror)."""
    out = {}
    for k, r in enumerate(rotations(image)):
        out[f"rotation{k}"] = r
        out[f"reflection{k}"] = flip(r, "horizontal")
    return out


def test_augment_applies_the_same_transform_to_input_target_and_mask():
    rng = np.random.default_rng(1)
    x = rng.random((40, 60)).astype(np.float32)
    y = 2 * x + 1  # target: a known function of the input, so any transform must preserve y = 2x + 1
    m = x > 0.5
    config = DegradationConfig(shrink_fraction=1.0, shrink_factor=0.8)  # every rotated copy shrunk and flipped
    out = augment([(x, y, m)], config, np.random.default_rng(0))
    assert len(out) == 4
    candidates = _dihedral(shrink(x, 0.8))
    mask_candidates = _dihedral(shrink(m.astype(np.float32), 0.8, order=0) > 0.5)
    for xa, ya, ma in out:
        assert xa.shape in ((32, 48), (48, 32))
        np.testing.assert_allclose(ya, 2 * xa + 1, atol=1e-5)
        # Which symmetry of the shrunk input is it? A rotation then one flip is a reflection; the old
        # "horizontal and vertical flips" ([::-1, ::-1]) made a rotation.
        match = [name for name, c in candidates.items() if c.shape == xa.shape and np.allclose(c, xa, atol=1e-6)]
        assert len(match) == 1 and match[0].startswith("reflection"), match
        # The mask got the very same transform (nearest-neighbour shrink of the mask).
        np.testing.assert_array_equal(ma, mask_candidates[match[0]])


def test_simulation_config_rejects_impossible_values_in_one_line(tmp_path):
    bad = {
        "width_mean_px: -3": "width_mean_px",
        "width_range_px: [-2, 10]": "width_range_px",
        "peak_photons: [0, 0]": "peak_photons",
        "peak_photons: [90, 40]": "peak_photons",
        "length_px: [300, 60]": "length_px",
        "cristae_spacing_nm: [0, 400]": "cristae_spacing_nm",
        "psf_fwhm_nm: 0": "psf_fwhm_nm",
    }
    for line, field in bad.items():
        path = tmp_path / "sim.yaml"
        path.write_text(line + "\n")
        with pytest.raises(CristaeZooError) as err:
            SimulationConfig.from_yaml(path)
        message = str(err.value)
        assert "\n" not in message and field in message, message


def test_simulate_with_an_impossible_config_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import conftest

    bad = tmp_path / "sim.yaml"
    bad.write_text("peak_photons: [0, 0]\n")  # zero photons: an empty image
    out = tmp_path / "out"
    code, _, err = conftest.run_cli(["simulate", out, "--config", bad], capsys, monkeypatch)
    assert code == 2
    assert "peak_photons" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
