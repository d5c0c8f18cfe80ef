"""Weights export: every format reproduces Keras; receptive field and halo; model folder errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cristae_zoo.config import NetworkConfig
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.export import ExportContext, exporters, load_trained_model
from cristae_zoo.export.base import keras_predict
from cristae_zoo.export.halo import (
    declared_halo,
    measure_halo,
    min_input_size,
    receptive_field,
    tiled_apply,
)
from cristae_zoo.export.testing import make_model_dir
from cristae_zoo.models.unet import build_unet

TINY = NetworkConfig(depth=2, filters=4)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    work = tmp_path_factory.mktemp("export")
    context = ExportContext(build_unet(TINY, seed=3), TINY, work_dir=work / "ctx")
    context.work_dir.mkdir()
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


def test_saved_model_zip_is_flat(ctx, x, tmp_path):
    import zipfile

    result = exporters()["tensorflow_saved_model_bundle"].export_and_check(ctx, tmp_path, x)
    names = zipfile.ZipFile(result.path).namelist()
    assert "saved_model.pb" in names and "variables/variables.index" in names


def test_torchscript_twin_depth3_and_non_residual(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 1, 48, 40)).astype(np.float32)
    for network in (NetworkConfig(depth=3, filters=4), NetworkConfig(depth=1, filters=4, residual=False)):
        c = ExportContext(build_unet(network, seed=0), network, work_dir=tmp_path / f"w{network.depth}")
        c.work_dir.mkdir()
        result = exporters()["torchscript"].export_and_check(c, tmp_path / f"d{network.depth}", x)
        assert result.max_abs_diff < 1e-5


def test_export_mismatch_is_an_error(ctx, x, tmp_path):
    from cristae_zoo.export.torchscript import TorchscriptExporter

    class Broken(TorchscriptExporter):
        def predict(self, weights, x):
            return super().predict(weights, x) + 1e-3

    with pytest.raises(CristaeZooError, match="differ from the Keras model"):
        Broken().export_and_check(ctx, tmp_path, x)


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


def test_measured_halo_makes_tiling_seamless():
    net = NetworkConfig(depth=2, filters=4)
    model = build_unet(net, seed=0)
    m = measure_halo(lambda im: keras_predict(model, im[None, None])[0, 0], net, inner=24)
    assert m.declared == 24 and m.receptive_field == 23
    assert m.measured is not None and m.measured <= m.declared
    assert m.max_diff_at_declared < 1e-5
    assert m.diffs[0] > 1e-3  # without a halo the tiles show seams


def test_tiled_apply_covers_every_pixel():
    image = np.arange(100 * 84, dtype=np.float32).reshape(100, 84)
    out = tiled_apply(lambda t: t * 2, image, inner=16, halo=8, min_size=24)
    np.testing.assert_array_equal(out, image * 2)


# ------------------------------------------------------------------------------------------- model folders


def test_load_trained_model(tmp_path):
    model_dir = make_model_dir(tmp_path, TINY)
    trained = load_trained_model(model_dir)
    assert trained.network == TINY


def test_model_folder_without_weights(tmp_path):
    model_dir = make_model_dir(tmp_path, TINY)
    (model_dir / "weights.keras").unlink()
    with pytest.raises(CristaeZooError, match="no weights.keras"):
        load_trained_model(model_dir)


def test_model_folder_with_corrupt_weights(tmp_path):
    model_dir = make_model_dir(tmp_path, TINY)
    (model_dir / "weights.keras").write_bytes(b"not a keras file")
    with pytest.raises(CristaeZooError, match="cannot load as a Keras model"):
        load_trained_model(model_dir)


def test_missing_model_folder(tmp_path):
    with pytest.raises(CristaeZooError, match="not a folder"):
        load_trained_model(tmp_path / "nope")


def test_config_not_matching_weights(tmp_path):
    """A config.yaml that does not describe weights.keras is caught by the TorchScript twin."""
    from cristae_zoo.config import TrainConfig

    model_dir = make_model_dir(tmp_path, TINY)
    TrainConfig(network=NetworkConfig(depth=2, filters=8)).to_yaml(model_dir / "config.yaml")
    trained = load_trained_model(model_dir)
    c = ExportContext(trained.keras_model, trained.network, work_dir=tmp_path / "w")
    c.work_dir.mkdir()
    x = np.zeros((1, 1, 32, 32), np.float32)
    with pytest.raises(CristaeZooError, match="does not match weights.keras"):
        exporters()["torchscript"].export_and_check(c, tmp_path / "out", x)


def test_exporters_order_and_parents():
    ex = exporters()
    assert list(ex) == ["tensorflow_saved_model_bundle", "onnx", "torchscript"]
    assert [e.parent for e in ex.values()] == [None, "tensorflow_saved_model_bundle", "tensorflow_saved_model_bundle"]
    assert all(Path(e.file_name).suffix for e in ex.values())
