"""PSSR: crappifier statistics, ICNR / sub-pixel order, one-cycle, sliding window, metrics, twin, bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile

from cristae_zoo.errors import CristaeZooError
from cristae_zoo.pssr.crappify import CrappifierConfig, crappify, salt_and_pepper


# ------------------------------------------------------------------------------------------------ crappifier
def _clipped_normal_variance(mu: float, sigma: float) -> float:
    """Variance of clip(N(μ, σ²), 0, 1), by quadrature: the model the crappifier's noise must follow."""
    from scipy import integrate, stats

    def moment(k: int) -> float:
        inner = integrate.quad(lambda v: v**k * stats.norm.pdf(v, mu, sigma), 0.0, 1.0)[0]
        return inner + 1.0**k * stats.norm.sf(1.0, mu, sigma)  # the mass clipped to 1 (that clipped to 0 adds 0)

    m1, m2 = moment(1), moment(2)
    return m2 - m1 * m1


def _plateaus() -> np.ndarray:
    """Three flat plateaus (0.05, 0.2, 1.0) 96 px wide: far from the edges the smoothed image is the plateau."""
    img = np.zeros((2, 288, 288), np.float32)
    for i, level in enumerate((0.05, 0.2, 1.0)):
        img[:, :, 96 * i : 96 * (i + 1)] = level
    return img


@pytest.mark.parametrize("modality, gain", [("fluorescence", 0.5), ("em", 0.05)])
def test_crappifier_noise_variance_follows_the_smoothed_image(modality, gain):
    # scale 1 (no downsampling), no salt and pepper, no 8-bit rounding: what is left is the Gaussian noise, whose
    # variance the authors set to gain × the smoothed image (the paper's text suggested a constant σ = 5/255).
    cfg = CrappifierConfig(modality=modality, scale=1, salt_pepper_fraction=0.0, quantize_8bit=False)
    hr = _plateaus()
    lr = crappify(hr, cfg, np.random.default_rng(1), normalized=True)
    assert lr.shape == hr.shape and lr.min() >= 0 and lr.max() <= 1
    for i, level in enumerate((0.05, 0.2)):
        core = lr[:, 30:-30, 96 * i + 30 : 96 * (i + 1) - 30]  # ≥ 6σ (5 px) from the plateau's edges
        expected = _clipped_normal_variance(level, np.sqrt(gain * level))
        assert core.var() == pytest.approx(expected, rel=0.04), (level, core.var(), expected)
        # ≥ 3× the constant-σ reading of the text (5/255 or 3/255): fluorescence 0.16–0.32, EM 0.04–0.1 here
        assert core.std() > 3 * CrappifierConfig(modality=modality, noise="constant").sigma
    # Frames are independent: the same noise model on each, different draws.
    assert not np.array_equal(lr[0], lr[1])


def test_crappifier_salt_and_pepper_fraction():
    # On a mid-grey image with no Gaussian noise, salt (1) and pepper (0) are the only values that change.
    cfg = CrappifierConfig(scale=1, local_variance_gain=0.0, quantize_8bit=False)
    assert cfg.sp_fraction == 0.005
    img = np.full((4, 250, 201), 0.5, np.float32)
    img[..., -1] = 1.0  # each frame's maximum is 1, so the authors' rescaling to the old maximum changes nothing
    out = crappify(img, cfg, np.random.default_rng(0), normalized=True)[..., :-1]
    img = img[..., :-1]
    n = img.size
    salt, pepper = (out == 1.0).sum() / n, (out == 0.0).sum() / n
    # salt on 0.5 %, then pepper on 0.5 % (which may land on a salt): 0.4975 % and 0.5 %; SE ≈ 0.022 %
    assert salt == pytest.approx(0.005 * 0.995, abs=0.0008)
    assert pepper == pytest.approx(0.005, abs=0.0008)
    assert np.all((out == 0.5) | (out == 0.0) | (out == 1.0))
    np.testing.assert_array_equal(salt_and_pepper(img, 0.005, np.random.default_rng(3)), salt_and_pepper(img, 0.005, np.random.default_rng(3)))
    assert CrappifierConfig(modality="em").sp_fraction == 0.0


def test_crappify_shape_range_and_constant_noise_option():
    cfg = CrappifierConfig(noise="constant", salt_pepper_fraction=0.0, quantize_8bit=False)
    hr = np.full((2, 512, 256), 0.5, np.float32)
    lr = crappify(hr, cfg, np.random.default_rng(1), normalized=True)
    assert lr.shape == (2, 128, 64)
    # order-1 spline at 1/4 scale samples between pixels 4i+1 and 4i+2: each LR pixel is the mean of 2×2
    # independent HR noise samples, so σ_LR = σ/2 (σ = 5/255 for the constant reading of the paper's text)
    assert abs(lr.std() / (5 / 255 / 2) - 1) < 0.03
    assert abs(lr.mean() - 0.5) < 1e-3
    default = crappify(np.random.default_rng(2).random((64, 64)) * 1000, CrappifierConfig(), np.random.default_rng(3))
    assert default.shape == (16, 16) and default.min() >= 0 and default.max() <= 1
    np.testing.assert_allclose(default * 255, np.round(default * 255), atol=1e-4)  # 8-bit steps
    assert CrappifierConfig(modality="em", noise="constant").sigma == pytest.approx(3 / 255)
    with pytest.raises(CristaeZooError, match="divisible by 4"):
        crappify(np.zeros((30, 32)), cfg, np.random.default_rng(0))


# ----------------------------------------------------------------------------------- network: ICNR, order
def _upsampler(icnr: bool, blur: bool):
    import keras

    from cristae_zoo.pssr.network import PSSRNetworkConfig, subpixel_up

    inp = keras.Input((None, None, 3))
    return keras.Model(inp, subpixel_up(inp, 4, "t", PSSRNetworkConfig(icnr=icnr, blur=blur), seed=5))


def _phase_spread(y: np.ndarray) -> float:
    phases = [y[:, i::2, j::2] for i in (0, 1) for j in (0, 1)]
    return float(max(np.abs(p - phases[0]).max() for p in phases))


def test_icnr_upsampler_has_no_checkerboard_at_initialisation():
    x = np.random.default_rng(0).normal(size=(2, 9, 11, 3)).astype(np.float32)
    y = np.asarray(_upsampler(icnr=True, blur=False)(x))
    assert y.shape == (2, 18, 22, 4)
    assert _phase_spread(y) < 1e-6  # all four sub-pixel phases equal: nearest-neighbour upsampling of one conv
    assert _phase_spread(np.asarray(_upsampler(icnr=False, blur=False)(x))) > 0.1  # random init: checkerboard


def test_hold_blur_removes_a_checkerboard():
    from cristae_zoo.pssr.network import HoldBlur

    yy, xx = np.mgrid[:8, :10]
    checker = (0.3 + 0.2 * (-1.0) ** (yy + xx)).astype(np.float32)[None, ..., None]
    out = np.asarray(HoldBlur()(checker))[0, ..., 0]
    assert out.shape == (8, 10)
    np.testing.assert_allclose(out[1:, 1:], 0.3, atol=1e-6)  # the 2×2 mean of any period-2 pattern is its mean
    np.testing.assert_allclose(out[0, 0], checker[0, 0, 0, 0])  # replicate padding at the top-left corner


def test_depth_to_space_vs_pixel_shuffle_order():
    import tensorflow as tf
    import torch

    from cristae_zoo.pssr.torch_twin import dcr_to_crd

    x = np.arange(2 * 3 * 3 * 12, dtype=np.float32).reshape(2, 3, 3, 12)
    tf_out = tf.nn.depth_to_space(x, 2).numpy()  # (B, 6, 6, 3)
    plain = torch.pixel_shuffle(torch.from_numpy(np.moveaxis(x, -1, 1).copy()), 2).numpy()
    assert not np.allclose(np.moveaxis(plain, 1, -1), tf_out)  # the two orders really differ
    fixed = torch.pixel_shuffle(torch.from_numpy(np.moveaxis(x[..., dcr_to_crd(12, 2)], -1, 1).copy()), 2).numpy()
    np.testing.assert_array_equal(np.moveaxis(fixed, 1, -1), tf_out)


@pytest.mark.parametrize("n_frames", [1, 5])
def test_torchscript_twin_matches_keras(n_frames):
    import torch

    from cristae_zoo.pssr.network import PSSRNetworkConfig, build_pssr
    from cristae_zoo.pssr.torch_twin import build_twin

    cfg = PSSRNetworkConfig(n_frames=n_frames, filters=4, head_filters=4)
    model = build_pssr(cfg, seed=1)
    rng = np.random.default_rng(2)
    for layer in model.layers:  # non-zero biases everywhere: a wrong channel order cannot hide
        w = layer.get_weights()
        if w:
            layer.set_weights([w[0], rng.normal(0, 0.2, w[1].shape).astype(np.float32)])
    x = rng.random((2, 12, 16, n_frames)).astype(np.float32)
    expected = np.asarray(model(x))
    twin = torch.jit.script(build_twin(model, cfg))
    got = twin(torch.from_numpy(np.moveaxis(x, -1, 1).copy())).detach().numpy()
    assert got.shape == (2, 1, 48, 64)
    assert np.abs(np.moveaxis(got, 1, -1) - expected).max() < 1e-4


def test_multi_frame_initialised_from_single_frame_starts_equal():
    from cristae_zoo.pssr.network import PSSRNetworkConfig, build_pssr
    from cristae_zoo.systems.pssr import init_from

    sf = build_pssr(PSSRNetworkConfig(n_frames=1, filters=4, head_filters=4), seed=1)
    mf = build_pssr(PSSRNetworkConfig(n_frames=5, filters=4, head_filters=4), seed=2)
    x = np.random.default_rng(0).random((1, 8, 12, 5)).astype(np.float32)
    assert np.abs(np.asarray(mf(x)) - np.asarray(sf(x[..., 2:3]))).max() > 1e-3  # different before
    init_from(mf, sf, 5)
    assert np.abs(np.asarray(mf(x)) - np.asarray(sf(x[..., 2:3]))).max() < 1e-5  # only the middle frame counts


def test_residual_base_is_bilinear_upsampling_of_the_middle_frame():
    from cristae_zoo.pssr.evaluate import bilinear
    from cristae_zoo.pssr.network import Bilinear

    x = np.random.default_rng(0).random((1, 7, 9, 1)).astype(np.float32)
    ours = np.asarray(Bilinear(4)(x))[0, ..., 0]
    np.testing.assert_allclose(ours, bilinear(x[0, ..., 0], 4), atol=1e-5)  # TF resize == scikit-image order 1


# ------------------------------------------------------------------------------------ training schedule
def test_one_cycle_schedule():
    from cristae_zoo.systems.pssr import one_cycle

    lr0, m0 = one_cycle(0, 100, 1e-3)
    peak, m_peak = one_cycle(30, 100, 1e-3)
    end, m_end = one_cycle(100, 100, 1e-3)
    assert lr0 == pytest.approx(1e-3 / 25) and m0 == pytest.approx(0.95)
    assert peak == pytest.approx(1e-3) and m_peak == pytest.approx(0.85)
    assert end == pytest.approx(0.0, abs=1e-12) and m_end == pytest.approx(0.95)
    assert one_cycle(65, 100, 1e-3)[0] == pytest.approx(0.5e-3)  # cosine half-way down


# ------------------------------------------------------------------------------- sliding window, movies
def test_sliding_window_mirrors_the_ends():
    from cristae_zoo.pssr.predict import windows

    w = windows(7, 5)
    assert len(w) == 7
    assert w[0] == [2, 1, 0, 1, 2] and w[1] == [1, 0, 1, 2, 3] and w[3] == [1, 2, 3, 4, 5]
    assert w[-1] == [4, 5, 6, 5, 4]
    assert windows(3, 1) == [[0], [1], [2]]
    with pytest.raises(CristaeZooError, match="at least 5"):
        windows(4, 5)


def _components(mask: np.ndarray) -> int:
    from scipy import ndimage as ndi

    return int(ndi.label(mask)[1])


@pytest.mark.parametrize("kind", ["fission", "fusion"])
def test_movies_divide_and_fuse(kind):
    from cristae_zoo.pssr.movies import MovieConfig, simulate_movie

    cfg = MovieConfig(n_frames=10, size=128, n_mitochondria=(4, 4), length_px=(70, 90), speed_px=0, jitter_px=0,
                      fission_probability=float(kind == "fission"), fusion_probability=float(kind == "fusion"))  # fmt: skip
    movie = simulate_movie(cfg, 0)
    assert movie.hr.shape == (10, 128, 128) and movie.events and {e.kind for e in movie.events} == {kind}
    before, after = (_components(movie.mask[0]), _components(movie.mask[-1]))
    if kind == "fusion":
        before, after = after, before
    assert after > before  # the tubes came apart (or, for fusion, were apart at the start)


# --------------------------------------------------------------------------------------------- metrics
def test_snr_and_psnr_against_direct_formulas():
    from cristae_zoo.pssr.evaluate import frame_metrics, snr

    rng = np.random.default_rng(0)
    img = rng.normal(0.1, 0.02, (64, 64))
    img[30:34, 30:34] = 0.9
    bg = np.ones_like(img, bool)
    bg[26:38, 26:38] = False
    assert snr(img, bg) == pytest.approx((0.9 - img[bg].mean()) / img[bg].std())
    hr = np.clip(img, 0, 1)
    pred = np.clip(hr + 0.01, 0, 1)
    m = frame_metrics(pred, hr, bg)
    assert m["psnr"] == pytest.approx(10 * np.log10(1 / np.mean((pred - hr) ** 2)))
    assert 0.9 < m["ssim"] <= 1


# ---------------------------------------------------------------------------- end to end on tiny data
@pytest.fixture(scope="module")
def tiny_mf(tmp_path_factory):
    from cristae_zoo.pssr.movies import MovieConfig, simulate_movies
    from cristae_zoo.pssr.network import PSSRNetworkConfig
    from cristae_zoo.core.trainer import train
    from cristae_zoo.systems.pssr import PSSRConfig

    root = tmp_path_factory.mktemp("pssr")
    simulate_movies(MovieConfig(n_movies=4, n_frames=6, size=64), root / "data")
    net = PSSRNetworkConfig(n_frames=5, filters=4, head_filters=4)
    cfg = PSSRConfig(data_dir=str(root / "data"), network=net, lr_patch=8, batch_size=2, steps=3, validate_every=2,
                     n_validation_movies=1, n_test_movies=1)  # fmt: skip
    result = train(cfg, root / "mf")
    return root, result


def test_training_keeps_best_and_prediction_writes_every_frame(tiny_mf):
    from cristae_zoo.core.model_dir import load_model_dir
    from cristae_zoo.pssr.predict import predict_movie

    root, result = tiny_mf
    assert [h["step"] for h in result.history] == [2, 3]
    assert result.best_val_loss == min(h["val_loss"] for h in result.history)
    lrs = [h["learning_rate"] for h in result.history]  # the one-cycle hook ran: the rate changed between steps
    assert lrs[0] != lrs[1]
    assert (root / "mf" / "weights.keras").is_file()
    # evaluation predicts with the Keras model (packages run through `cristae-zoo predict`, tests/test_zoo_predict.py)
    model = load_model_dir(root / "mf")
    hr = predict_movie(model.keras_model, tifffile.imread(root / "data" / "lr" / "movie_003.tif"), model.config.network)
    assert hr.shape == (6, 64, 64)


def test_bad_movies_are_one_line(tiny_mf):
    """The Keras-model path (evaluation) names what is wrong; files go through `cristae-zoo predict`, whose
    refusals (a 2D image or a 3-frame movie for PSSR-MF) are tested in tests/test_zoo_predict.py."""
    from cristae_zoo.core.model_dir import load_model_dir
    from cristae_zoo.errors import CristaeZooError
    from cristae_zoo.pssr.predict import check_movie

    root, _ = tiny_mf
    network = load_model_dir(root / "mf").config.network
    cases = {
        "four.tif": (np.zeros((4, 16, 16), np.uint8), "4 frame(s); the multi-frame model needs at least 5"),
        "odd.tif": (np.zeros((6, 18, 16), np.uint8), "frames of 18×16 px; height and width must be divisible by 4"),
        "flat.tif": (np.zeros((16, 16), np.uint8), "a single 2D image has no time axis"),
    }
    for name, (array, message) in cases.items():
        with pytest.raises(CristaeZooError, match="^" + re.escape(f"{name}: {message}")):
            check_movie(array, network, name)


def test_evaluation_summary_states_test_crappifier_and_training(tiny_mf):
    """The summary the packager copies into a package README says how the test inputs were crappified and how long
    each model trained (steps, wall time from history.csv)."""
    from cristae_zoo.core.model_dir import load_model_dir
    from cristae_zoo.pssr.evaluate import data_markdown, training_markdown

    root, result = tiny_mf
    line = data_markdown(root / "data")
    assert "the authors' fluorescence crappifier" in line and "salt and pepper 0.5 % each" in line
    assert "local variance 0.5 × the image smoothed with σ = 5 px" in line
    model = load_model_dir(root / "mf")
    text = training_markdown("PSSR-MF", root / "mf", model.config)
    seconds = result.history[-1]["seconds"]
    assert text.startswith("- PSSR-MF: trained from scratch, 3 of 3 steps of 2 patches of 8×8 LR px")
    assert f"wall time {seconds / 60:.1f} min" in text and "fluorescence/local_variance" in text
    assert training_markdown("x", root / "data", model.config) == ""  # no history.csv: nothing claimed
