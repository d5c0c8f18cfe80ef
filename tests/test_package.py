"""The bioimage.io package: rdf fields, bioimageio.core test, predict through the CLI, tiling, bad inputs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile
import yaml
from typer.testing import CliRunner

from cristae_zoo.cli_zoo import run_package_tests
from cristae_zoo.config import NetworkConfig
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.export.package import MAX_PACKAGE_BYTES, package_model
from cristae_zoo.export.testing import make_model_dir
from cristae_zoo.predict import load_package, predict_file, predict_image, resolve_package

TINY = NetworkConfig(depth=2, filters=4)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One tiny package (folder + zip) shared by the tests of this module."""
    root = tmp_path_factory.mktemp("pkg")
    model_dir = make_model_dir(root, TINY)
    result = package_model(model_dir, root / "model_zoo" / "tiny", crop=128)
    return result


@pytest.fixture(scope="module")
def rdf(built):
    return yaml.safe_load(built.rdf.read_text())


@pytest.fixture
def app(zoo_app):
    return zoo_app


pytestmark = pytest.mark.usefixtures("scratch_cwd")


# ------------------------------------------------------------------------------------------------- rdf fields


def test_axes(rdf):
    (inp,) = rdf["inputs"]
    (out,) = rdf["outputs"]
    assert inp["id"] == "input" and out["id"] == "output"
    for t in (inp, out):
        assert [a.get("id", a["type"]) for a in t["axes"]] == ["batch", "channel", "y", "x"]
        assert [a["type"] for a in t["axes"]] == ["batch", "channel", "space", "space"]
    for a in inp["axes"][2:]:
        assert a["size"] == {"min": 52, "step": 4}  # 2·halo + 1 rounded up to the step 2**depth
    for a in out["axes"][2:]:
        assert a["size"] == {"tensor_id": "input", "axis_id": a["id"]}
        assert a["halo"] == 24 and a["size"] and 52 - 2 * a["halo"] >= 1


def test_preprocessing(rdf):
    steps = [p for p in rdf["inputs"][0]["preprocessing"] if p["id"] == "scale_range"]
    assert len(steps) == 1
    kw = steps[0]["kwargs"]
    assert kw["axes"] == ["y", "x"]
    assert (kw["min_percentile"], kw["max_percentile"]) == (2.0, 99.8)
    assert all(p["id"] == "ensure_dtype" for p in rdf["outputs"][0].get("postprocessing", []))


def test_config(rdf, built):
    assert rdf["config"]["deepimagej"]["allow_tiling"] is True
    rescale = rdf["config"]["cristae_zoo"]["rescale"]
    assert rescale["training_pixel_size_nm"] == 25.0
    assert rescale["mitochondrion_width_px"] == 15.64
    assert rescale["mitochondrion_width_nm"] == 391.0
    assert rescale["paper_factors"] == {"fast_sted": 1.87, "live_sr": 2.6, "llsm": 4.16}
    assert "Scale..." in rescale["imagej_macro"]
    halo = rdf["config"]["cristae_zoo"]["halo"]
    assert halo["declared_px"] >= halo["receptive_field_px"] and halo["declared_px"] >= halo["measured_px"]
    diffs = rdf["config"]["cristae_zoo"]["export"]["max_abs_diff_vs_keras"]
    assert set(diffs) == {"tensorflow_saved_model_bundle", "onnx", "torchscript"}
    assert max(diffs.values()) < 1e-4


def test_weights(rdf):
    w = rdf["weights"]
    assert set(w) == {"tensorflow_saved_model_bundle", "onnx", "torchscript"}
    assert w["tensorflow_saved_model_bundle"].get("parent") is None
    assert w["onnx"]["parent"] == w["torchscript"]["parent"] == "tensorflow_saved_model_bundle"
    assert w["onnx"]["opset_version"] == 17
    assert w["tensorflow_saved_model_bundle"]["tensorflow_version"].startswith("2.")


def test_static_fields_and_files(rdf, built):
    folder = built.folder
    assert rdf["name"] and rdf["license"] == "MIT" and "mitochondria" in rdf["tags"]
    cites = {c.get("doi") or c.get("url") for c in rdf["cite"]}
    assert {"10.1038/s41592-018-0216-7", "10.1007/978-3-319-24574-4_28", "https://hal.science/hal-04295317"} <= cites
    for entry in [rdf["documentation"], *rdf["covers"], *rdf.get("attachments", [])]:
        assert (folder / entry["source"]).is_file()
    readme = (folder / rdf["documentation"]["source"]).read_text()
    assert "## Validation" in readme
    assert "DeepCristae (tiny test model)" in readme  # evaluation/summary.md included
    assert "Image › Scale…" in readme and 'run("Scale..."' in readme
    assert "pixel size in nm) / 25" in readme and "15.64 / (mean width in px)" in readme
    assert "ONNX" in readme


def test_test_tensors(rdf, built):
    folder = built.folder
    x = np.load(folder / rdf["inputs"][0]["test_tensor"]["source"])
    y = np.load(folder / rdf["outputs"][0]["test_tensor"]["source"])
    assert x.shape == y.shape == (1, 1, 128, 128) and x.dtype == np.float32
    np.testing.assert_array_equal(x, np.rint(x))  # integer-valued
    sample = tifffile.imread(folder / rdf["inputs"][0]["sample_tensor"]["source"])
    np.testing.assert_array_equal(sample, x[0, 0])  # same pixels as the test input


def test_package_size_and_zip(built):
    assert built.size_bytes < MAX_PACKAGE_BYTES
    assert built.zip_path is not None and built.zip_path.is_file()
    assert load_package(built.zip_path).name == load_package(built.folder).name


# -------------------------------------------------------------------------------------------- running it


def test_bioimageio_core_test_passes_for_every_format(built):
    results = run_package_tests(str(built.folder))
    assert [wf for wf, _ in results] == ["onnx", "tensorflow_saved_model_bundle", "torchscript"]
    for wf, summary in results:
        failed = [d.name for d in summary.details if d.status == "failed"]
        assert summary.status == "passed", (wf, failed)


def test_cli_test_command(built, app):
    result = CliRunner().invoke(app, ["test", str(built.zip_path), "--weights", "onnx"])
    assert result.exit_code == 0, result.output
    assert "passed" in result.output


@pytest.mark.parametrize("weights", ["onnx", "tensorflow", "torchscript"])
def test_cli_predict_equals_test_output(built, app, tmp_path, weights):
    folder = built.folder
    out = tmp_path / "restored.tif"
    result = CliRunner().invoke(
        app, ["predict", str(folder), str(folder / "sample_input.tif"), "--output", str(out), "--weights", weights]
    )
    assert result.exit_code == 0, result.output
    expected = np.load(folder / "test_output.npy")[0, 0]
    np.testing.assert_allclose(tifffile.imread(out), expected, atol=1e-5)


def test_predict_by_model_name(built, tmp_path, monkeypatch):
    monkeypatch.chdir(built.folder.parent.parent)  # the folder holding model_zoo/
    assert resolve_package("tiny") == (built.folder / "rdf.yaml").resolve()
    x = np.load(built.folder / "test_input.npy")
    np.testing.assert_allclose(
        predict_image("tiny", x[0, 0]), np.load(built.folder / "test_output.npy")[0, 0], atol=1e-5
    )


def test_tiled_equals_untiled(built):
    rng = np.random.default_rng(3)
    image = (rng.poisson(40, size=(203, 190)) + 100).astype(np.float32)  # not a multiple of the step
    calls = []
    untiled = predict_image(built.folder, image, tile=None)
    tiled = predict_image(built.folder, image, tile=64, progress=lambda done, total: calls.append(total))
    assert calls and calls[-1] > 1  # really tiled
    assert tiled.shape == untiled.shape == image.shape
    np.testing.assert_allclose(tiled, untiled, atol=1e-5)


def test_declared_halo_leaves_no_block_artifacts_in_bioimageio_core(built):
    """bioimageio.core's own blockwise prediction (smallest blocks: min + 1·step, the declared halo) equals the
    whole-image prediction except within one halo of the image border, where core mirror-pads the blocks."""
    from bioimageio.core import create_prediction_pipeline, predict

    from cristae_zoo.export.testing import synthetic_mito_image

    descr = load_package(built.folder)
    halo = built.halo.declared
    image = synthetic_mito_image((200, 200), seed=2)
    whole = predict_image(descr, image, tile=None)
    pp = create_prediction_pipeline(descr, weights_format="onnx")  # `predict` loads and unloads it
    blocks = predict(model=pp, inputs=image[None, None], blocksize_parameter=1)
    blockwise = blocks.members["output"].data.to_numpy()[0, 0]
    np.testing.assert_allclose(blockwise[halo:-halo, halo:-halo], whole[halo:-halo, halo:-halo], atol=1e-5)


def test_small_image_is_padded(built):
    image = np.random.default_rng(0).poisson(40, size=(30, 41)).astype(np.float32)
    assert predict_image(built.folder, image).shape == (30, 41)


# ----------------------------------------------------------------------------------------------- bad input


def _one_line(result) -> str:
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    return lines[-1]


def test_model_folder_without_weights(tmp_path, app):
    model_dir = make_model_dir(tmp_path, TINY)
    (model_dir / "weights.keras").unlink()
    with pytest.raises(CristaeZooError, match="no weights.keras"):
        package_model(model_dir, tmp_path / "out")
    result = CliRunner().invoke(app, ["package", str(model_dir), "--output", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "no weights.keras" in _one_line(result) and "Traceback" not in result.output


def test_corrupt_zip(tmp_path, built, app):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(built.zip_path.read_bytes()[: 2000])
    with pytest.raises(CristaeZooError, match="zip"):
        load_package(bad)
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2 and "zip" in _one_line(result)


def test_rdf_failing_validation(tmp_path, built, app):
    folder = tmp_path / "bad"
    shutil.copytree(built.folder, folder)
    data = yaml.safe_load((folder / "rdf.yaml").read_text())
    for a in data["outputs"][0]["axes"][2:]:
        a["halo"] = 40  # min size 52 - 2·40 < 1
    (folder / "rdf.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(CristaeZooError, match="fails validation"):
        load_package(folder)
    result = CliRunner().invoke(app, ["validate", str(folder)])
    assert result.exit_code == 2 and "fails validation" in _one_line(result)


def test_folder_without_rdf(tmp_path):
    with pytest.raises(CristaeZooError, match="no rdf.yaml"):
        resolve_package(tmp_path)
    with pytest.raises(CristaeZooError, match="no such package"):
        resolve_package("does-not-exist")


@pytest.mark.parametrize(
    ("shape", "message", "cli_message"),
    [
        ((5, 64, 64), "dimensions", "--axes"),  # the CLI restores stacks, but needs to know their axes
        ((64, 64, 3), "3 channels", "3 channels"),
        ((2, 64, 64), "2 channels", "--axes"),
    ],
)
def test_wrong_ndim_or_channels(built, tmp_path, app, shape, message, cli_message):
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, np.ones(shape, np.uint16))
    with pytest.raises(CristaeZooError, match=message):
        predict_file(built.folder, path, tmp_path / "out.tif")
    result = CliRunner().invoke(app, ["predict", str(built.folder), str(path), "-o", str(tmp_path / "out.tif")])
    assert result.exit_code == 2 and cli_message in _one_line(result)
    assert not (tmp_path / "out.tif").exists()


def test_refuses_to_overwrite_the_input(built, tmp_path):
    path = tmp_path / "img.tif"
    shutil.copyfile(built.folder / "sample_input.tif", path)
    before = path.read_bytes()
    with pytest.raises(CristaeZooError, match="overwrite"):
        predict_file(built.folder, path, path)
    assert path.read_bytes() == before


def test_unknown_weights_format(built):
    with pytest.raises(CristaeZooError, match="unknown weights format"):
        predict_image(built.folder, np.ones((64, 64), np.float32), weights_format="keras")
