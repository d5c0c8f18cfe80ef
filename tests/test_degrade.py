import numpy as np
import pytest
from scipy import ndimage

from cristae_zoo.data.degrade import degrade, gaussian_psf, percentile_normalize, richardson_lucy, rotations, shrink_and_flip


def _image():
    img = np.full((64, 80), 3.0, np.float32)
    img[20:40, 10:70] = 80
    return img


def test_degrade_is_seeded_and_shape_preserving():
    img = _image()
    a = degrade(img, 3.25, 4.0, np.random.default_rng(5))
    b = degrade(img, 3.25, 4.0, np.random.default_rng(5))
    c = degrade(img, 3.25, 4.0, np.random.default_rng(6))
    assert a.shape == img.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all(a == np.round(a)) and a.min() >= 0


def test_degrade_noise_statistics():
    flat = np.full((400, 400), 50.0, np.float32)
    out = degrade(flat, 3.25, 4.0, np.random.default_rng(0))
    # Poisson (variance 50) plus Gaussian (variance 16), plus rounding (1/12).
    assert out.mean() == pytest.approx(50, abs=0.1)
    assert out.var() == pytest.approx(50 + 16 + 1 / 12, rel=0.03)


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


def test_augmentations():
    img = np.arange(12, dtype=np.float32).reshape(3, 4)
    r = rotations(img)
    assert len(r) == 4 and r[1].shape == (4, 3)
    np.testing.assert_array_equal(r[2], img[::-1, ::-1])
    s = shrink_and_flip(np.ones((100, 120), np.float32), 0.8)
    assert s.shape == (80, 96)
