"""Weights export: every format reproduces Keras; receptive field and halo; model folder errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cristae_zoo.config import NetworkConfig
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.export import ExportContext, exporters
from cristae_zoo.export.base import keras_predict
from cristae_zoo.export.halo import (
    cut_tiling_errors,
    declared_halo,
    halo_candidates,
    min_input_size,
    receptive_field,
    tiled_apply,
)
from cristae_zoo.export.torchscript import build_torch_unet, copy_keras_weights
from cristae_zoo.models.unet import build_unet

TINY = NetworkConfig(depth=2, filters=4)


def unet_context(network: NetworkConfig, work: Path, seed: int = 3) -> ExportContext:
    model = build_unet(network, seed=seed)
    ctx = ExportContext(model, torch_twin=lambda: copy_keras_weights(build_torch_unet(network), model, network),
                        work_dir=work)  # fmt: skip
    ctx.work_dir.mkdir()
    return ctx


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    context = unet_context(TINY, tmp_path_factory.mktemp("export") / "ctx")
    yield context
    context.cleanup()


@pytest.fixture(scope="module")
def x():
    rng = np.random.default_rng(0)
    return rng.normal(0.3, 0.3, size=(1, 1, 64, 48)).astype(np.float32)


@pytest.mark.parametrize("weights_format", ["tensorflow_saved_model_bundle", "onnx", "torchscript"])
def test_round_trip_matches_keras(ctx, x, tmp_path, weights_format):
    exporter = exporters()[weights_format]
    result = exporter.export_and_check(ctx, tmp_path, x)
    assert result.path.is_file()
    assert result.max_abs_diff < 1e-5
    # dynamic batch and y/x: another batch size and shape
    x2 = np.ascontiguousarray(np.concatenate([x, x[:, :, ::-1]])[:, :, :40, :44])
    y2 = exporter.predict(result.path, x2)
    np.testing.assert_allclose(y2, keras_predict(ctx.keras_model, x2), atol=1e-5)
    assert (result.parent is None) == (weights_format == "tensorflow_saved_model_bundle")


def test_onnx_graph_is_what_the_clients_need(ctx, x, tmp_path):
    import onnx

    result = exporters()["onnx"].export_and_check(ctx, tmp_path, x)
    model = onnx.load(str(result.path))
    assert model.ir_version == 8
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 17)}
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["output"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 1, "y", "x"]


def test_saved_model_is_frozen_for_tf_2_7(ctx, x, tmp_path):
    """No variables and no DisableCopyOnRead (TF 2.7, deepImageJ's default engine, cannot load them); zip flat."""
    import zipfile

    from cristae_zoo.clients import TF27_UNKNOWN_OPS, savedmodel_ops
    from cristae_zoo.export.tensorflow import VARIABLE_OPS

    result = exporters()["tensorflow_saved_model_bundle"].export_and_check(ctx, tmp_path, x)
    assert "saved_model.pb" in zipfile.ZipFile(result.path).namelist()
    ops = savedmodel_ops(result.path)
    assert "Conv2D" in ops and not ops & (TF27_UNKNOWN_OPS | VARIABLE_OPS) and "DisableCopyOnRead" in TF27_UNKNOWN_OPS


def test_torchscript_graph_has_no_op_unknown_to_old_torch(tmp_path):
    """The twins are traced: F.interpolate's unused branches (aten::_upsample_lanczos2d_aa, unknown to torch 2.7)
    are not in the saved graph; a scripted twin has them, and the check sees it."""
    import torch

    from cristae_zoo.clients import torchscript_ops
    from cristae_zoo.export.torchscript import old_torch_problems
    from cristae_zoo.pssr.network import PSSRNetworkConfig, build_pssr
    from cristae_zoo.pssr.torch_twin import build_twin

    net = PSSRNetworkConfig(n_frames=5, filters=4, depth=1, head_filters=4)  # bilinear 4× + sub-pixel convs
    model = build_pssr(net)
    c = ExportContext(model, n_in=5, torch_twin=lambda: build_twin(model, net), work_dir=tmp_path / "w")
    c.work_dir.mkdir()
    x = np.random.default_rng(0).normal(size=(1, 5, 16, 20)).astype(np.float32)
    exporter = exporters()["torchscript"]
    result = exporter.export_and_check(c, tmp_path / "pkg", x)
    ops = torchscript_ops(result.path)
    assert "aten::upsample_bilinear2d" in ops and old_torch_problems(result.path) == []
    assert not any("lanczos" in op or op.endswith("_aa") for op in ops)
    x2 = np.random.default_rng(1).normal(size=(3, 5, 24, 12)).astype(np.float32)  # traced, still dynamic
    np.testing.assert_allclose(exporter.predict(result.path, x2), keras_predict(model, x2), atol=1e-5)
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(build_twin(model, net)), str(scripted))
    assert any("aten::_upsample_lanczos2d_aa" in p for p in old_torch_problems(scripted))


def test_torchscript_twin_depth3_and_non_residual(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 1, 48, 40)).astype(np.float32)
    for network in (NetworkConfig(depth=3, filters=4), NetworkConfig(depth=1, filters=4, residual=False)):
        c = unet_context(network, tmp_path / f"w{network.depth}", seed=0)
        result = exporters()["torchscript"].export_and_check(c, tmp_path / f"d{network.depth}", x)
        assert result.max_abs_diff < 1e-5


def test_export_mismatch_is_an_error(ctx, x, tmp_path):
    from cristae_zoo.export.torchscript import TorchscriptExporter

    class Broken(TorchscriptExporter):
        def predict(self, weights, x):
            return super().predict(weights, x) + 1e-3

    with pytest.raises(CristaeZooError, match="differ from the Keras model"):
        Broken().export_and_check(ctx, tmp_path, x)


def test_config_not_matching_weights_is_caught_by_the_twin(tmp_path):
    model = build_unet(TINY, seed=0)
    other = NetworkConfig(depth=2, filters=8)
    c = ExportContext(model, torch_twin=lambda: copy_keras_weights(build_torch_unet(other), model, other),
                      work_dir=tmp_path / "w")  # fmt: skip
    c.work_dir.mkdir()
    with pytest.raises(CristaeZooError, match="does not match weights.keras"):
        exporters()["torchscript"].export_and_check(c, tmp_path / "out", np.zeros((1, 1, 32, 32), np.float32))


# ---------------------------------------------------------------------------------------------------- halo


def test_receptive_field_of_the_paper_network():
    net = NetworkConfig(depth=3, filters=32)
    assert receptive_field(net) == 51
    assert declared_halo(net) == 56
    assert min_input_size(56, 8) == 120
    assert receptive_field(NetworkConfig(depth=2, filters=4)) == 23
    assert receptive_field(NetworkConfig(depth=3, kernel_size=5)) == 2 * 44 + 7


def test_receptive_field_bounds_the_gradient():
    """No input pixel beyond the computed receptive field influences an output pixel."""
    import tensorflow as tf

    net = NetworkConfig(depth=2, filters=4)
    model = build_unet(net, seed=0)
    rf = receptive_field(net)
    size = (2 * rf + 24 + 3) // 4 * 4
    extent = 0
    for pos in range(size // 2 - 2, size // 2 + 2):
        x = tf.Variable(np.random.default_rng(pos).normal(size=(1, size, size, 1)).astype(np.float32))
        with tf.GradientTape() as tape:
            y = model(x)[0, pos, pos, 0]
        g = np.abs(tape.gradient(y, x).numpy()[0, :, :, 0])
        ys, xs = np.nonzero(g > 0)
        extent = max(extent, int(np.max(np.abs(ys - pos))), int(np.max(np.abs(xs - pos))))
    assert 0 < extent <= rf


def test_tiled_apply_covers_every_pixel():
    image = np.arange(100 * 84, dtype=np.float32).reshape(100, 84)
    out = tiled_apply(lambda t: t * 2, image, inner=16, halo=8, min_size=24)
    np.testing.assert_array_equal(out, image * 2)


@pytest.mark.parametrize("shape, spatial, inner, halo", [((100, 84), None, 16, 8), ((2, 1, 70, 90), 2, 24, 5),
                                                         ((1, 1, 20, 40, 33), 3, 12, 3)])  # fmt: skip
def test_tiled_apply_in_place_equals_out_of_place(shape, spatial, inner, halo):
    """Written into the image itself, a tile's result waits until no later window reads its region: with a filter
    that reads its neighbours up to the halo (a tile run on already-replaced pixels would differ), the result is
    bit-identical to the out-of-place one, equals the untiled filter, and is the image itself."""
    from scipy.ndimage import uniform_filter

    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    nd = spatial or image.ndim
    size = [1] * (image.ndim - nd) + [2 * halo + 1] * nd

    def fn(t):
        return uniform_filter(t, size=size, mode="nearest") * 2 + t**2

    expected = tiled_apply(fn, image, inner=inner, halo=halo, spatial=spatial)
    work = image.copy()
    out = tiled_apply(fn, work, inner=inner, halo=halo, spatial=spatial, in_place=True)
    assert out is work
    np.testing.assert_array_equal(out, expected)
    # the filter reaches exactly the halo, so the tiles reproduce the untiled result; replacing a region before the
    # next window read it would change that window's neighbours
    np.testing.assert_allclose(out, fn(image), rtol=1e-5, atol=1e-6)


def test_cut_tiling_errors_vanish_at_the_receptive_field():
    model = build_unet(TINY, seed=0)
    x = np.random.default_rng(0).normal(size=(1, 1, 64, 64)).astype(np.float32)
    errors = cut_tiling_errors(lambda t: keras_predict(model, t), x, -1, halo_candidates(24, 4), 4)
    assert errors[0] > 1e-3 and errors[24] < 1e-5 and 0 in errors and 24 in errors
    assert halo_candidates(56, 8, most=4) == [0, 16, 40, 56]


def test_exporters_order_and_parents():
    ex = exporters()
    assert list(ex) == ["tensorflow_saved_model_bundle", "onnx", "torchscript"]
    assert [e.parent for e in ex.values()] == [None, "tensorflow_saved_model_bundle", "tensorflow_saved_model_bundle"]
    assert all(Path(e.file_name).suffix for e in ex.values())


def test_readme_budget_follows_init_from_through_folders_and_packages(tmp_path, monkeypatch):
    """The package README states the whole training cost: this run and every run it was fine-tuned from
    (hand-worked: 10 + 20 steps of 4 and 8 patches, 2 + 3 minutes; an old package with epochs and no wall time)."""
    from cristae_zoo.export.readme import budget_lines

    monkeypatch.chdir(tmp_path)
    old = tmp_path / "old_package"  # an old package: history by epoch, no seconds
    old.mkdir()
    (old / "rdf.yaml").write_text("type: model\n")
    (old / "training_config.yaml").write_text("batch_size: 2\nsteps_per_epoch: 5\n")
    (old / "training_history.csv").write_text("epoch,loss,val_loss\n0,1,1\n1,1,1\n2,1,1\n")
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, config, history in (
        (first, f"batch_size: 4\ninit_from: {old}\n", "epoch,step,loss,val_loss,learning_rate,seconds\n0,10,1,1,1,120.0\n"),
        (second, "batch_size: 8\ninit_from: first\n", "epoch,step,loss,val_loss,learning_rate,seconds\n0,5,1,1,1,60\n1,20,1,1,1,180.0\n"),
    ):
        folder.mkdir()
        (folder / "config.yaml").write_text(config)
        (folder / "history.csv").write_text(history)
    lines = budget_lines(second, {"batch_size": 8, "init_from": "first"})
    assert lines == [
        "- Budget: 20 steps × 8 = 160 patches in 3.0 min of wall time.",
        "- Budget: `first`, which it was fine-tuned from: 10 steps × 4 = 40 patches in 2.0 min of wall time.",
        f"- Budget: `{old}`, which it was fine-tuned from: 15 steps × 2 = 30 patches (wall time not recorded).",
        "- Whole budget: 230 patches, 5.0 min of wall time where recorded.",
    ]
    assert budget_lines(first, {"batch_size": 4}) == ["- Budget: 10 steps × 4 = 40 patches in 2.0 min of wall time."]
    # re-packaging: `init_from` names a package that already holds this very training (same output_dir): not twice
    (old / "training_config.yaml").write_text("batch_size: 8\noutput_dir: second\ninit_from: first\n")
    (second / "config.yaml").write_text(f"batch_size: 8\noutput_dir: second\ninit_from: {old}\n")
    assert budget_lines(second, {"batch_size": 8, "output_dir": "second", "init_from": str(old)}) == [
        "- Budget: 20 steps × 8 = 160 patches in 3.0 min of wall time."
    ]
