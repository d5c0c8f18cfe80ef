"""CARE for luminescence: binning, Laplace loss, augmentation, simulator, 3D tiling, twin, metrics, errors, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from cristae_zoo.errors import CristaeZooError
from cristae_zoo.luminescence import modes
from cristae_zoo.luminescence.modes import (
    ModeConfig,
    augment8,
    bin_image,
    binned_input,
    upsample,
)

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- binning


def test_binning_shapes_and_sums() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 50, (3, 8, 12)).astype(np.float32)
    binned = bin_image(image, 4)
    assert binned.shape == (3, 2, 3)
    assert binned.sum() == image.sum()
    assert binned[1, 1, 2] == image[1, 4:8, 8:12].sum()  # one block by hand
    up = upsample(binned, 4)
    assert up.shape == image.shape
    assert np.all(up[:, 4:8, 8:12] == binned[:, 1:2, 2:3])  # repetition, no interpolation
    assert up.sum() == 16 * image.sum()
    np.testing.assert_array_equal(binned_input(image, 1), image)
    np.testing.assert_array_equal(binned_input(image, 2), upsample(bin_image(image, 2), 2))


def test_binning_factor_that_does_not_divide_is_one_line_error() -> None:
    with pytest.raises(CristaeZooError, match=r"stack\.tif: binning factor 8 does not divide .* 8×12"):
        bin_image(np.zeros((2, 8, 12)), 8, "stack.tif")


# ---------------------------------------------------------------------------------------------- loss


def test_laplace_nll_matches_scipy_and_hand_computation() -> None:
    from scipy.stats import laplace

    from cristae_zoo.luminescence.losses import laplace_nll, laplace_nll_numpy

    y = np.array([0.5, -1.0, 2.0], np.float32)
    mu = np.array([0.0, 0.0, 1.0], np.float32)
    b = np.array([1.0, 0.5, 2.0], np.float32)
    # by hand: log 2b + |y − μ| / b = (log 2 + 0.5) + (log 1 + 2) + (log 4 + 0.5), divided by 3
    hand = (np.log(2) + 0.5 + 2.0 + np.log(4) + 0.5) / 3
    reference = -laplace.logpdf(y, loc=mu, scale=b)
    np.testing.assert_allclose(laplace_nll_numpy(y, mu, b), reference, rtol=1e-7)
    keras_value = float(laplace_nll(y[:, None], np.stack([mu, b], -1)))
    assert keras_value == pytest.approx(hand, rel=1e-6)
    assert keras_value == pytest.approx(reference.mean(), rel=1e-6)


def test_gaussian_nll_matches_scipy_and_estimates_the_mean_not_the_median() -> None:
    from scipy.stats import norm

    from cristae_zoo.luminescence.losses import gaussian_nll, laplace_nll

    y = np.array([0.5, -1.0, 2.0], np.float32)
    mu = np.array([0.0, 0.0, 1.0], np.float32)
    s = np.array([1.0, 0.5, 2.0], np.float32)
    value = float(gaussian_nll(y[:, None], np.stack([mu, s], -1)))
    assert value == pytest.approx(-norm.logpdf(y, loc=mu, scale=s).mean(), rel=1e-6)
    # photon-starved targets (Poisson 0.4: median 0, mean 0.4): the best constant location under each loss
    counts = np.random.default_rng(0).poisson(0.4, 4000).astype(np.float32)[:, None]
    locs = np.linspace(0, 1, 101, dtype=np.float32)
    best = {name: locs[int(np.argmin([float(fn(counts, np.tile([[m, 0.6]], (len(counts), 1)).astype(np.float32))) for m in locs]))]
            for name, fn in (("laplace", laplace_nll), ("gaussian", gaussian_nll))}  # fmt: skip
    assert best["laplace"] == pytest.approx(0.0, abs=0.011) and best["gaussian"] == pytest.approx(counts.mean(), abs=0.011)


# ---------------------------------------------------------------------------------------------- augmentation


def test_augment8_is_the_dihedral_group_in_xy() -> None:
    vol = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # asymmetric
    out = [augment8(vol, k) for k in range(8)]
    assert len({o.tobytes() + bytes(o.shape) for o in out}) == 8
    np.testing.assert_array_equal(out[0], vol)
    np.testing.assert_array_equal(out[1][0], np.rot90(vol[0]))  # every plane rotated alike, z kept
    np.testing.assert_array_equal(out[4][1], vol[1][:, ::-1])
    np.testing.assert_array_equal(augment8(out[2], 2), vol)  # 180° twice


# ---------------------------------------------------------------------------------------------- simulator


def test_emccd_acquisition_mean_and_excess_noise() -> None:
    from cristae_zoo.luminescence.simulate import CameraConfig, acquire

    cam = CameraConfig(read_noise_e=0.0)
    rate = np.full((200_000,), 2.0, np.float32)
    adu = acquire(rate, 5.0, cam, np.random.default_rng(1)) - cam.offset_adu
    n = cam.quantum_efficiency * 2.0 * 5.0  # mean photoelectrons
    g = cam.em_gain / cam.electrons_per_adu
    assert adu.mean() == pytest.approx(n * g, rel=0.01)
    # EM multiplication: Var = 2·g²·n at high gain (excess noise factor F² = 2)
    assert adu.var() == pytest.approx(2 * g * g * n, rel=0.03)


def test_scene_is_deterministic_and_acquisitions_independent() -> None:
    from cristae_zoo.luminescence.simulate import (
        LuminescenceSimulationConfig,
        acquire,
        simulate_scene,
    )

    cfg = LuminescenceSimulationConfig(depth=8, height=64, width=64)
    a, b = simulate_scene(cfg, 1), simulate_scene(cfg, 1)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (8, 64, 64) and a.min() >= cfg.background_rate * 0.99
    rng = np.random.default_rng(0)
    s1, s2 = acquire(a, 2.0, cfg.camera, rng), acquire(a, 2.0, cfg.camera, rng)
    assert not np.array_equal(s1, s2)


# ---------------------------------------------------------------------------------------------- network


@pytest.fixture(scope="module")
def tiny_care():
    from cristae_zoo.luminescence.network import build_care, care_network_config

    net = care_network_config(ndim=3, depth=2, filters=2)
    return build_care(net, residual=True), net


def test_head_residual_mean_and_positive_scale(tiny_care) -> None:
    import keras

    from cristae_zoo.luminescence.network import (
        MIN_SCALE,
        build_care,
        care_network_config,
        mean_model,
    )

    model, _ = tiny_care
    x = np.random.default_rng(0).normal(size=(1, 8, 16, 16, 1)).astype(np.float32)
    y = np.asarray(model(x))
    raw = np.asarray(keras.Model(model.input, model.get_layer("final_conv").output)(x))  # the backbone alone
    np.testing.assert_allclose(y[..., 0], x[..., 0] + raw[..., 0], atol=1e-5)
    np.testing.assert_allclose(y[..., 1], np.log1p(np.exp(raw[..., 1])) + MIN_SCALE, rtol=1e-5)
    assert y[..., 1].min() > 0
    np.testing.assert_allclose(np.asarray(mean_model(model)(x))[..., 0], y[..., 0], atol=1e-6)
    plain = build_care(care_network_config(ndim=3, depth=1, filters=2), residual=False)
    raw = np.asarray(keras.Model(plain.input, plain.get_layer("final_conv").output)(x))
    np.testing.assert_allclose(np.asarray(plain(x))[..., 0], raw[..., 0], atol=1e-6)  # mean = channel 0
    np.testing.assert_allclose(np.asarray(mean_model(plain)(x))[..., 0], raw[..., 0], atol=1e-6)


def test_3d_tiled_prediction_equals_untiled() -> None:
    from cristae_zoo.luminescence.network import build_care, care_network_config
    from cristae_zoo.luminescence.predict import predict_image, seamless_halo

    net = care_network_config(ndim=3, depth=1, filters=2)  # receptive radius 11 px: halo 12
    model = build_care(net)
    halo = seamless_halo(net)
    image = np.random.default_rng(2).normal(size=(31, 40, 39)).astype(np.float32)  # padded to 32×40×40 (÷2)
    tile = (8, 16, 16)  # windows 8 + 2·12 < 31: tiles in z, y and x see only part of the stack
    whole = predict_image(model, image, net)
    tiled = predict_image(model, image, net, tile=tile, halo=halo)
    assert whole.shape == (2, 31, 40, 39) and halo == 12
    np.testing.assert_allclose(tiled, whole, atol=2e-5)
    no_halo = predict_image(model, image, net, tile=tile, halo=0)
    assert np.abs(no_halo - whole).max() > 1e-3  # the halo matters: the check above can fail


def test_torchscript_twin_of_the_mean_matches_keras_3d(tiny_care) -> None:
    import torch

    from cristae_zoo.export.base import keras_predict
    from cristae_zoo.luminescence.network import mean_model
    from cristae_zoo.luminescence.torch_head import build_mean_twin

    model, net = tiny_care
    mean = mean_model(model)
    x = np.random.default_rng(3).normal(size=(2, 1, 8, 16, 12)).astype(np.float32)
    twin = torch.jit.script(build_mean_twin(mean, net))
    with torch.no_grad():
        y = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, keras_predict(mean, x), atol=1e-5)


# ---------------------------------------------------------------------------------------------- metrics


def test_metrics_against_independent_computations() -> None:
    from cristae_zoo.luminescence.evaluate import (
        mask_mae,
        mean_mask,
        pearson_in_mask,
        psnr,
    )

    gt = np.zeros((4, 32, 32), np.float32)
    gt[:, 2:12, 2:12] = 1.0  # 400 px object: kept
    gt[1, 20:27, 20:27] = 1.0  # 49 px object: removed (≤ 100 px)
    mask = mean_mask(gt)
    assert mask.sum() == 400 and not mask[1, 22, 22]
    assert mask_mae(gt, gt) == 0.0
    shifted = np.roll(gt, 1, axis=2)
    assert mask_mae(shifted, gt) == pytest.approx(2 * 4 * 10 / gt.size)  # one column in, one out, per plane
    rng = np.random.default_rng(0)
    smooth = gt + 0.1 * rng.random(gt.shape).astype(np.float32)
    assert pearson_in_mask(3 * smooth + 7, smooth) == pytest.approx(1.0)
    noisy = smooth + rng.normal(0, 0.2, gt.shape).astype(np.float32)
    inside = smooth > 0.5
    assert pearson_in_mask(noisy, smooth) == pytest.approx(np.corrcoef(noisy[inside], smooth[inside])[0, 1], abs=0.02)
    lo, hi = np.percentile(smooth, [1, 99.9])
    t = (smooth - lo) / (hi - lo)
    assert psnr(smooth, smooth) > 100 and psnr(noisy, smooth) < psnr(0.5 * noisy + 0.5 * smooth, smooth)
    fit = np.polyval(np.polyfit(noisy.ravel(), t.ravel(), 1), noisy)
    assert psnr(noisy, smooth) == pytest.approx(-10 * np.log10(np.mean((fit - t) ** 2)), abs=1e-3)


# ---------------------------------------------------------------------------------------------- data + errors


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """3 simulated 8×64×64 scenes and a 3D model trained for 2 steps on them."""
    from cristae_zoo.luminescence.network import care_network_config
    from cristae_zoo.luminescence.simulate import (
        LuminescenceSimulationConfig,
        simulate_dataset,
    )
    from cristae_zoo.core.trainer import train
    from cristae_zoo.systems.luminescence import LuminescenceConfig

    root = tmp_path_factory.mktemp("lum")
    simulate_dataset(LuminescenceSimulationConfig(n_scenes=3, depth=8, height=64, width=64), root / "data")
    cfg = LuminescenceConfig(data_dir=str(root / "data"), network=care_network_config(3, 2, 2), patch_size=[8, 32, 32],
                             batch_size=2, steps=2, validate_every=2, test_fraction=0.34, validation_fraction=0)
    result = train(cfg, root / "model")
    return root, result


def test_training_writes_model_and_history(tiny_run) -> None:
    root, result = tiny_run
    import json

    assert (root / "model" / "weights.keras").is_file() and len(result.history) == 1
    assert json.loads((root / "model" / "split.json").read_text())["test"] and np.isfinite(result.best_val_loss)


def test_load_sample_errors(tmp_path: Path, tiny_run) -> None:
    from cristae_zoo.luminescence.modes import load_sample

    root, _ = tiny_run
    data = root / "data"
    with pytest.raises(CristaeZooError, match="scene_000.tif: image has shape \\(8, 64, 64\\) .* 2D"):
        load_sample(data, "scene_000.tif", ModeConfig(), ndim=2)  # 3D data, 2D model
    for d in ("short", "long"):
        (tmp_path / d).mkdir()
    tifffile.imwrite(tmp_path / "short" / "a.tif", np.zeros((64, 64), np.uint16))
    tifffile.imwrite(tmp_path / "long" / "a.tif", np.zeros((8, 64, 64), np.uint16))
    with pytest.raises(CristaeZooError, match="short/a.tif: image has shape \\(64, 64\\) .* 3D"):
        load_sample(tmp_path, "a.tif", ModeConfig(), ndim=3)  # 2D data, 3D model
    tifffile.imwrite(tmp_path / "short" / "a.tif", np.zeros((8, 64, 60), np.uint16))
    with pytest.raises(CristaeZooError, match="long/a.tif: target shape \\(8, 64, 64\\) differs from input a.tif \\(8, 64, 60\\)"):
        load_sample(tmp_path, "a.tif", ModeConfig(), ndim=3)
    with pytest.raises(CristaeZooError, match="short/a.tif: binning factor 8 does not divide"):
        load_sample(tmp_path, "a.tif", ModeConfig.for_mode("binning", 8), ndim=3)


def test_noise2noise_mode_reads_two_noisy_acquisitions(tiny_run) -> None:
    root, _ = tiny_run
    m = ModeConfig.for_mode("noise2noise")
    p = modes.load_sample(root / "data", "scene_001.tif", m, 3)
    raw_b = tifffile.imread(root / "data" / "short2" / "scene_001.tif")
    np.testing.assert_allclose(p.targets[0], modes.normalize(raw_b.astype(np.float32)), atol=1e-6)
    assert not np.allclose(p.tl, p.targets[0])


def test_keras_prediction_gives_mean_and_positive_scale(tiny_run) -> None:
    """The trained network's two outputs (evaluation path); packages run through `cristae-zoo predict`, which
    writes both as a C axis and refuses a 2D file for a 3D package (tests/test_zoo_predict.py)."""
    from cristae_zoo.core.model_dir import load_model_dir
    from cristae_zoo.luminescence.predict import predict_image

    root, _ = tiny_run
    m = load_model_dir(root / "model")
    image = tifffile.imread(root / "data" / "short" / "scene_000.tif").astype(np.float32)
    out = predict_image(m.keras_model, image, m.config.network)
    assert out.shape == (2, 8, 64, 64) and out[1].min() > 0


def test_evaluate_rows_and_figure(tiny_run, tmp_path: Path) -> None:
    from cristae_zoo.core.model_dir import load_model_dir
    from cristae_zoo.luminescence.evaluate import evaluate, figure, summary_markdown, training_markdown

    root, result = tiny_run
    m = load_model_dir(root / "model")
    rows = evaluate(m.keras_model, m.config, root / "data", m.held_out_names())
    assert {r["method"] for r in rows} == {"input", "restoration", "long"}
    assert all(np.isfinite(r[k]) for r in rows for k in ("psnr", "ssim", "mask_mae", "pearson_in_mask"))
    assert "CARE restoration" in summary_markdown(rows)
    trained = training_markdown(root / "model", m.config)  # the package README's statement of budget and wall time
    assert "2 steps of 2 patches in" in trained and "min wall time (no time budget, step cap 2)" in trained
    assert "weights of step 2" in trained and "Fine-tuned" not in trained
    assert training_markdown(tmp_path, m.config) == ""  # no history: nothing claimed
    png = figure(m.keras_model, m.config, m.held_out_names()[0], tmp_path / "f.png", root / "data")
    assert png.read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------------- shipped packages


@pytest.mark.parametrize("name", ["care-luminescence-pairs-3d", "care-luminescence-n2n-3d"])
def test_shipped_package_declares_3d_axes_halos_and_training_facts(name: str) -> None:
    folder = ROOT / "model_zoo" / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not built")
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    out_axes = rdf["outputs"][0]["axes"]
    assert [a.get("id", a["type"]) for a in out_axes] == ["batch", "channel", "z", "y", "x"]
    assert all(a["halo"] > 0 for a in out_axes[2:])
    assert {"tensorflow_saved_model_bundle", "onnx", "torchscript"} <= set(rdf["weights"])
    readme = (folder / "README.md").read_text()
    assert "Exposure ratio" in readme and "simulated data only" in readme.lower()
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 30 * 1024**2
