import numpy as np
import pytest
from keras import ops
from skimage.metrics import structural_similarity

from cristae_zoo.models.losses import dssim_loss, mae_loss, scop_loss, ssim_map

# Backend-neutral tensors (keras.ops): these tests run under any KERAS_BACKEND.


def _t(a):
    return ops.convert_to_tensor(np.asarray(a, np.float32)[None, ..., None])


def _targets(y, m):
    return ops.convert_to_tensor(np.stack([y, m], -1)[None].astype(np.float32))


def test_ssim_map_matches_scikit_image():
    rng = np.random.default_rng(0)
    y = rng.random((40, 48)).astype(np.float32)
    p = (y + 0.2 * rng.standard_normal(y.shape)).astype(np.float32)
    _, expected = structural_similarity(
        y, p, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True
    )
    got = ops.convert_to_numpy(ssim_map(_t(y), _t(p)))[0, ..., 0]
    np.testing.assert_allclose(got, expected, atol=2e-4)


def test_scop_is_zero_for_identical_images():
    y = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    m = (np.arange(32)[:, None] < 16).repeat(32, 1).astype(np.float32)
    assert float(scop_loss()(_targets(y, m), _t(y))[0]) == pytest.approx(0.0, abs=1e-6)


def test_scop_hand_computed_constant_images():
    # Constant images a=1 (target) and b=0 (prediction): variances and covariance vanish, so
    # SSIM = (2ab + C1)/(a² + b² + C1) = C1/(1 + C1) everywhere, DSSIM d = (1 − SSIM)/2 = 1/(2(1 + C1)).
    # Half of the pixels are mitochondria (γ = 1), half background (γ = 4): SCoP = (d + d⁴)/2.
    c1 = 1e-4
    d = 1 / (2 * (1 + c1))
    y, p = np.ones((16, 16), np.float32), np.zeros((16, 16), np.float32)
    m = np.zeros((16, 16), np.float32)
    m[:, :8] = 1
    got = float(scop_loss(1.0, 4.0)(_targets(y, m), _t(p))[0])
    assert got == pytest.approx((d + d**4) / 2, rel=1e-5)


def test_scop_matches_numpy_reference_with_gamma():
    rng = np.random.default_rng(2)
    y = rng.random((32, 32)).astype(np.float32)
    p = np.clip(y + 0.3 * rng.standard_normal(y.shape), 0, 1).astype(np.float32)
    m = (rng.random((32, 32)) > 0.6).astype(np.float32)
    _, s = structural_similarity(y, p, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)
    dssim = np.clip((1 - s) / 2, 0, 1)
    expected = np.mean(np.where(m > 0, dssim**1, dssim**4))
    assert float(scop_loss()(_targets(y, m), _t(p))[0]) == pytest.approx(expected, rel=1e-3)
    # γ = 1 everywhere is plain DSSIM.
    assert float(scop_loss(1.0, 1.0)(_targets(y, m), _t(p))[0]) == pytest.approx(float(dssim_loss(_targets(y, m), _t(p))[0]), rel=1e-6)


def test_mae_ignores_mask_channel():
    y = np.ones((8, 8), np.float32)
    m = np.ones((8, 8), np.float32)
    assert float(mae_loss(_targets(y, m), _t(y * 0.5))[0]) == pytest.approx(0.5)
