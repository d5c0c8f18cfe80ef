import numpy as np
import pytest
from skimage.draw import line_aa
from scipy import ndimage

from cristae_zoo.data.mask import anscombe, mitochondria_mask, noise_sigma
from cristae_zoo.data.patches import patches_per_image, sample_centres


def test_noise_sigma_recovers_gaussian_sigma():
    rng = np.random.default_rng(0)
    img = 5.0 + 2.0 * rng.standard_normal((256, 256))
    assert noise_sigma(img) == pytest.approx(2.0, rel=0.05)


def test_anscombe_stabilises_poisson_variance():
    rng = np.random.default_rng(0)
    for lam in (5, 20, 80):
        assert np.var(anscombe(rng.poisson(lam, 100_000).astype(float))) == pytest.approx(1.0, abs=0.08)


def _drawn_tubes(shape=(256, 256), seed=0):
    """Thick bright tubes (counts ~60) on a Poisson background of ~2 counts."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, bool)
    for (r0, c0, r1, c1) in [(30, 20, 40, 230), (200, 30, 120, 220), (60, 128, 230, 140)]:
        rr, cc, _ = line_aa(r0, c0, r1, c1)
        truth[rr, cc] = True
    truth = ndimage.binary_dilation(truth, iterations=6)
    image = rng.poisson(np.where(truth, 60.0, 2.0)).astype(np.float32)
    return image, truth


def test_mask_recovers_drawn_tubes():
    image, truth = _drawn_tubes()
    mask = mitochondria_mask(image)
    intersection = (mask & truth).sum()
    dice = 2 * intersection / (mask.sum() + truth.sum())
    assert dice > 0.9
    assert mask.mean() >= 0.10 or truth.mean() < 0.10


def test_mask_threshold_lowers_until_ten_percent():
    image, _ = _drawn_tubes()
    dim = image * 0.05  # weak signal: the start threshold of 30 selects nothing
    assert mitochondria_mask(dim, median_size=1).mean() >= 0.10


@pytest.mark.parametrize("sampling_mask", [True, False])
def test_patch_centres_respect_border_and_distance(sampling_mask):
    rng = np.random.default_rng(3)
    shape, p = (300, 420), 128
    mask = np.zeros(shape, bool)
    mask[50:250, 100:400] = True
    n = patches_per_image(shape, p)
    assert n == 2 * 3
    centres = sample_centres(mask if sampling_mask else None, shape, n, p, 60.0, rng)
    assert len(centres) == n
    half = p // 2
    assert np.all(centres[:, 0] >= half) and np.all(centres[:, 0] <= shape[0] - half)
    assert np.all(centres[:, 1] >= half) and np.all(centres[:, 1] <= shape[1] - half)
    d = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(-1))
    assert np.all(d[np.triu_indices(n, 1)] >= 60)
    if sampling_mask:
        assert mask[centres[:, 0], centres[:, 1]].all()


def test_patch_centres_run_out_gracefully():
    mask = np.zeros((256, 256), bool)
    mask[128, 128] = True
    centres = sample_centres(mask, mask.shape, 4, 128, 60.0, np.random.default_rng(0))
    assert centres.tolist() == [[128, 128]]


def test_noise_sigma_in_blocks_is_the_formula_bit_for_bit():
    """The blocked, one-buffer noise σ (data.mask.noise_sigma) equals the textbook formula exactly, across block
    edges and for integer input (computed in float64)."""
    rng = np.random.default_rng(3)
    img = rng.poisson(20.0, (37, 29)).astype(np.uint16)
    f = img.astype(np.float64)
    r = (2 * f[:-1, :-1] - f[1:, :-1] - f[:-1, 1:]) / np.sqrt(6.0)
    expected = float(1.4826 * np.median(np.abs(r - np.median(r))))
    assert noise_sigma(img, rows=7) == expected == noise_sigma(f)
    buf = np.full(37 * 29, np.nan)
    assert noise_sigma(img, out=buf, rows=5) == expected
