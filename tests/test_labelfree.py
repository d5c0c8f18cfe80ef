"""Label-free prediction (issue 8): network shapes, training, metrics, bad inputs, export round trip."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from cristae_zoo.errors import CristaeZooError
from cristae_zoo.labelfree.network import LabelFreeNetworkConfig, build_labelfree_unet


@pytest.mark.parametrize(
    "ndim, shape", [(2, (2, 32, 48, 1)), (3, (1, 8, 16, 24, 1))], ids=["2d", "3d"]
)
def test_network_output_shape(ndim, shape):
    net = LabelFreeNetworkConfig(ndim=ndim, depth=2, filters=4, n_out=2)
    model = build_labelfree_unet(net)
    y = np.asarray(model(np.zeros(shape, np.float32), training=False))
    assert y.shape == shape[:-1] + (2,)
    # stride-2 convolutions down, stride-2 transposed convolutions up, batch norm everywhere but the last layer
    kinds = {type(layer).__name__ for layer in model.layers}
    assert ({"Conv2D", "Conv2DTranspose"} if ndim == 2 else {"Conv3D", "Conv3DTranspose"}) <= kinds
    assert "MaxPooling2D" not in kinds and "UpSampling2D" not in kinds
    assert model.get_layer("down0_pool").strides == (2,) * ndim
    assert model.get_layer("up0_tconv").strides == (2,) * ndim
    names = {layer.name for layer in model.layers}
    assert "final_conv_bn" not in names and "down0_conv0_bn" in names


def _write_pairs(root, n=4, shape=(64, 64), structures=("mito", "dna"), seed=0):
    rng = np.random.default_rng(seed)
    for sub in ("tl", *structures):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        tl = rng.normal(100, 10, shape).astype(np.float32)
        tifffile.imwrite(root / "tl" / f"p{i}.tif", tl)
        for k, s in enumerate(structures):
            tifffile.imwrite(root / s / f"p{i}.tif", (-tl if k == 0 else tl**2).astype(np.float32))


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory):
    from cristae_zoo.labelfree.simulate import LabelFreeSimulationConfig, simulate_dataset

    root = tmp_path_factory.mktemp("labelfree_sim")
    simulate_dataset(LabelFreeSimulationConfig(n_images=6, height=64, width=64, seed=3), root)
    return root


def test_simulator_pairs(sim_data):
    from cristae_zoo.labelfree.simulate import LabelFreeSimulationConfig, simulate_pair

    tl = tifffile.imread(sim_data / "tl" / "sim_000.tif")
    for s in ("mito", "dna"):
        assert tifffile.imread(sim_data / s / "sim_000.tif").shape == tl.shape
    cfg = LabelFreeSimulationConfig(n_images=1, height=64, width=64, seed=3)
    a, b = simulate_pair(cfg, 0), simulate_pair(cfg, 0)
    np.testing.assert_array_equal(a.tl, b.tl)  # seeded
    masks = tifffile.imread(sim_data / "masks" / "sim_000.tif")
    assert masks.shape == (2, 64, 64) and masks[1].any()


def test_short_training_lowers_loss(sim_data, tmp_path):
    import json

    from cristae_zoo.core.model_dir import load_model_dir
    from cristae_zoo.core.trainer import train
    from cristae_zoo.systems.labelfree import LabelFreeConfig

    cfg = LabelFreeConfig(
        data_dir=str(sim_data), network=LabelFreeNetworkConfig(depth=2, filters=4), patch_size=[32, 32],
        batch_size=4, steps=60, validate_every=20,
    )  # fmt: skip
    result = train(cfg, tmp_path / "model")
    hist = result.history
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert (tmp_path / "model" / "weights.keras").is_file()
    parts = json.loads((tmp_path / "model" / "split.json").read_text())
    assert len(parts["test"]) == 2 and len(parts["validation"]) == 1 and len(parts["train"]) == 3

    from cristae_zoo.labelfree.evaluate import evaluate, summary_markdown

    m = load_model_dir(tmp_path / "model")
    rows = evaluate(m.keras_model, m.config, sim_data, m.held_out_names())
    assert {r["method"] for r in rows} == {"unet", "baseline", "tl"} and len(rows) == 2 * 2 * 3
    assert "Pearson r" in summary_markdown(rows)

    from cristae_zoo.labelfree.evaluate import training_markdown

    text = training_markdown(m.model_dir, m.config)
    assert text.startswith("Training run evaluated: 60 steps of 4 patches in") and "no time budget, step cap 60" in text
    assert training_markdown(tmp_path, m.config) == ""  # no history.csv: nothing claimed


def test_package_test_input_is_a_held_out_image_large_enough(sim_data, tmp_path):
    """The packager's test input: the first held-out TL image (raw) at least the package's minimum size; where all
    are smaller (a training patch or these 64 px pairs would be), one line asking for --test-input."""
    import json
    import shutil

    from cristae_zoo.systems.labelfree import LabelFree, LabelFreeConfig

    data = tmp_path / "data"
    shutil.copytree(sim_data, data)
    cfg = LabelFreeConfig(data_dir=str(data), network=LabelFreeNetworkConfig(depth=3, filters=4), patch_size=[32, 32])
    model = tmp_path / "model"
    model.mkdir()
    system = LabelFree()
    with pytest.raises(CristaeZooError, match="split.json.*--test-input"):
        system.package_test_input(cfg, model)
    test_names = ["sim_001.tif", "sim_004.tif"]
    (model / "split.json").write_text(json.dumps({"train": [], "validation": [], "test": test_names}))
    minimum = system.tensor_description(cfg).min_size
    assert min(minimum.values()) > 64
    with pytest.raises(CristaeZooError, match="smaller than the package's minimum input.*--test-input") as err:
        system.package_test_input(cfg, model)
    assert "\n" not in str(err.value)
    big = np.random.default_rng(0).normal(100, 10, (minimum["y"] + 8, minimum["x"])).astype(np.float32)
    tifffile.imwrite(data / "tl" / test_names[1], big)
    image, where = system.package_test_input(cfg, model)
    assert where.endswith(test_names[1]) and image.shape == (1, *big.shape)
    np.testing.assert_array_equal(image[0], big)  # raw: the package normalises itself


def test_pearson_and_ssim_match_scipy_skimage():
    from scipy.stats import pearsonr
    from skimage.metrics import structural_similarity

    from cristae_zoo.labelfree.evaluate import fit_affine, normalise_target, pearson, ssim

    rng = np.random.default_rng(1)
    a = rng.random((40, 50)).astype(np.float32)
    b = (a + 0.5 * rng.random((40, 50))).astype(np.float32)
    assert pearson(a, b) == pytest.approx(pearsonr(a.ravel(), b.ravel())[0], abs=1e-6)
    t = normalise_target(b)
    assert ssim(a, b) == pytest.approx(structural_similarity(fit_affine(a, t), t, data_range=1.0), abs=1e-7)
    # an affine copy of the target is perfect on both
    assert pearson(3 * b + 1, b) == pytest.approx(1.0) and ssim(3 * b + 1, b) == pytest.approx(1.0, abs=1e-5)


def test_split_fractions():
    from cristae_zoo.labelfree.data import split

    parts = split([f"i{k}" for k in range(40)], 0.25, 0.10, 0)
    assert [len(parts[k]) for k in ("train", "validation", "test")] == [27, 3, 10]
    assert not set(parts["train"]) & set(parts["test"])


def test_bad_inputs(tmp_path):
    from cristae_zoo.labelfree.data import list_pairs, load_pair

    _write_pairs(tmp_path, n=1)
    tifffile.imwrite(tmp_path / "dna" / "p0.tif", np.zeros((60, 64), np.float32))
    with pytest.raises(CristaeZooError, match=r"dna/p0.tif: fluorescence shape \(60, 64\) differs from TL"):
        load_pair(tmp_path, "p0.tif", ["mito", "dna"], 2)
    # a multi-channel TL image for a single-channel 2D model
    tifffile.imwrite(tmp_path / "tl" / "p0.tif", np.zeros((3, 64, 64), np.float32))
    with pytest.raises(CristaeZooError, match=r"tl/p0.tif: image has shape \(3, 64, 64\)"):
        load_pair(tmp_path, "p0.tif", ["mito"], 2)
    # the model predicts a channel the data has no folder for
    with pytest.raises(CristaeZooError, match=r"actin: folder missing: the model predicts 2 channel"):
        list_pairs(tmp_path, ["mito", "actin"])


def test_cli_bad_input_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from cristae_zoo.cli import app

    _write_pairs(tmp_path, n=4)
    tifffile.imwrite(tmp_path / "mito" / "p2.tif", np.zeros((64, 32), np.float32))
    r = CliRunner().invoke(app, ["train", "--system", "labelfree", "--data", str(tmp_path), "-o", str(tmp_path / "m"),
                                 "--steps", "1", "--depth", "1", "--filters", "2"])  # fmt: skip
    assert r.exit_code == 2
    assert "p2.tif: fluorescence shape (64, 32) differs from TL" in r.output
    assert not (tmp_path / "m").exists()  # nothing written before the data is checked


@pytest.mark.parametrize("ndim", [2, 3])
def test_torch_twin_matches_keras(ndim):
    import keras
    import torch

    from cristae_zoo.labelfree.torch_twin import build_twin

    net = LabelFreeNetworkConfig(ndim=ndim, depth=2, filters=4, n_out=2)
    model = build_labelfree_unet(net)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-trivial batch-norm statistics and kernels
        if layer.get_weights():
            layer.set_weights([rng.normal(1.0 if isinstance(layer, keras.layers.BatchNormalization) else 0.0, 0.3,
                                          w.shape).astype(np.float32) ** (2 if i == 3 else 1)
                               for i, w in enumerate(layer.get_weights())])  # fmt: skip
    shape = (2, 16, 24) if ndim == 2 else (1, 8, 16, 24)
    x = rng.random(shape + (1,)).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    scripted = torch.jit.script(build_twin(model, net))
    with torch.no_grad():
        y = scripted(torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))).numpy()
    assert np.max(np.abs(np.moveaxis(y, 1, -1) - expected)) < 1e-4 * max(1.0, float(np.abs(expected).max()))


def test_3d_training_and_evaluation(tmp_path):
    """z-stacks as a third axis: train a few steps and evaluate end to end."""
    from cristae_zoo.core.model_dir import load_model_dir
    from cristae_zoo.core.trainer import train
    from cristae_zoo.labelfree.evaluate import evaluate
    from cristae_zoo.systems.labelfree import LabelFreeConfig

    _write_pairs(tmp_path / "data", n=3, shape=(8, 24, 24), structures=("mito",))
    cfg = LabelFreeConfig(
        data_dir=str(tmp_path / "data"), structures=["mito"], patch_size=[8, 16, 16], batch_size=2, steps=3,
        validate_every=3, network=LabelFreeNetworkConfig(ndim=3, depth=1, filters=2),
    )  # fmt: skip
    train(cfg, tmp_path / "m3")
    m = load_model_dir(tmp_path / "m3")
    rows = evaluate(m.keras_model, m.config, tmp_path / "data", m.held_out_names())
    assert len(rows) == 3 and all(np.isfinite(r["pearson_r"]) for r in rows)  # 1 test image × 3 methods


def test_shipped_package_description():
    """model_zoo/labelfree: a valid v0.5 model, 1 TL channel in, mito + dna out, three weights formats."""
    from pathlib import Path

    from bioimageio.spec import InvalidDescr, load_description

    rdf = Path(__file__).resolve().parents[1] / "model_zoo" / "labelfree" / "rdf.yaml"
    if not rdf.is_file():
        pytest.skip("model_zoo/labelfree not built")
    descr = load_description(rdf, perform_io_checks=True)
    assert not isinstance(descr, InvalidDescr), descr.validation_summary.format()
    assert [str(c) for c in descr.outputs[0].axes[1].channel_names] == ["mito", "dna"]
    assert [str(c) for c in descr.inputs[0].axes[1].channel_names] == ["transmitted_light"]
    assert all(getattr(descr.weights, f) is not None for f in ("tensorflow_saved_model_bundle", "onnx", "torchscript"))
    readme = (rdf.parent / "README.md").read_text()
    assert "transmitted light → mitochondria / DNA fluorescence" in readme and "simulated pairs" in readme
    assert sum(p.stat().st_size for p in rdf.parent.iterdir()) < 10 * 2**20
