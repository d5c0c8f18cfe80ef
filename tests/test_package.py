"""The one packager: every system variant packaged from a tiny untrained network, the rdf fields clients need,
bioimage.io validation and tests, and the safety rules (atomic, size-capped, never replacing what it should not)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from typer.testing import CliRunner

from cristae_zoo.cli_zoo import run_package_tests
from cristae_zoo.config import NetworkConfig
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.export.package import (
    KERAS_WEIGHTS_NAME,
    MAX_PACKAGE_BYTES,
    TrainedNetwork,
    package_model,
    package_network,
)
from cristae_zoo.export.testing import make_model_dir, synthetic_mito_image

TINY = NetworkConfig(depth=2, filters=4)

pytestmark = pytest.mark.usefixtures("scratch_cwd")


def tiny_network(variant: str) -> tuple[TrainedNetwork, np.ndarray]:
    """A tiny untrained network of `variant` (random weights) and a raw test image for it."""
    from cristae_zoo.core.system import get_system
    from cristae_zoo.labelfree.network import LabelFreeNetworkConfig
    from cristae_zoo.pssr.network import PSSRNetworkConfig

    if variant == "labelfree-2d":
        name, kw = "labelfree", {"data_dir": "data", "network": LabelFreeNetworkConfig(depth=1, filters=2)}
        image = synthetic_mito_image((60, 64))
    elif variant in ("pssr-sf", "pssr-mf"):
        frames = 1 if variant == "pssr-sf" else 5
        net = PSSRNetworkConfig(n_frames=frames, filters=4, depth=1, head_filters=4)
        name, kw = "pssr", {"data_dir": "data", "network": net}
        image = np.stack([synthetic_mito_image((48, 52), seed=i) // 4 for i in range(7)])  # a TYX movie
    elif variant == "luminescence-3d":
        net = LabelFreeNetworkConfig(ndim=3, depth=1, filters=2, n_out=2)
        name, kw = "luminescence", {"data_dir": "data", "network": net, "patch_size": [8, 16, 16]}
        image = np.stack([synthetic_mito_image((40, 44), seed=i) for i in range(10)])
    else:
        raise ValueError(variant)
    system = get_system(name)
    config = system.config_class(**kw)
    return TrainedNetwork(name, config, system.build_keras(config)), image


VARIANTS = ["labelfree-2d", "pssr-sf", "pssr-mf", "luminescence-3d"]


@pytest.fixture(scope="module")
def deepcristae(tmp_path_factory):
    """DeepCristae through `package_model` from a model folder (the folder's config predates `system:`)."""
    root = tmp_path_factory.mktemp("deepcristae")
    model_dir = make_model_dir(root, TINY)
    (model_dir / "conditions.yaml").write_text("width_px: [14.0, 16.6]\nmax_relative_noise: 0.14\n")
    return package_model(model_dir, root / "model_zoo" / "tiny", crop=128), model_dir


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    trained, image = tiny_network(request.param)
    result = package_network(trained, root / request.param, test_input=image, zip_package=False)
    return request.param, result, trained


def rdf_of(result) -> dict:
    return yaml.safe_load(result.rdf.read_text())


def sha_of_folder(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------- every variant


def check_rdf_for_clients(result, trained) -> dict:
    from bioimageio.spec import InvalidDescr, load_description

    descr = load_description(result.rdf, perform_io_checks=True)
    assert not isinstance(descr, InvalidDescr), descr.validation_summary.format()
    rdf = rdf_of(result)
    # deepImageJ casts these to String and needs an id; spec 0.5.9/0.5.10 reject mappings
    assert isinstance(rdf["documentation"], str) and rdf["documentation"] == "README.md"
    assert rdf["covers"] == ["cover.png"]
    assert isinstance(rdf["id"], str) and rdf["id"]
    assert rdf["format_version"] == "0.5.9"
    td = result.tensors
    cz = rdf["config"]["cristae_zoo"]
    assert cz["system"] == trained.system and cz["version"]
    assert cz["tensors"] == td.model_dump(mode="json")
    assert cz["training"]["system"] == trained.system
    assert set(cz["export"]["max_abs_diff_vs_keras"]) == {"tensorflow_saved_model_bundle", "onnx", "torchscript"}
    assert max(cz["export"]["max_abs_diff_vs_keras"].values()) < 1e-4
    assert set(cz["halo"]["tiling_max_abs_diff_by_halo"]) == set(td.spatial_axes)
    # axis scales: none for an output of the input's size; s² in and s out for an s× model (JDLL and the spec agree)
    ins, outs = rdf["inputs"][0]["axes"][2:], rdf["outputs"][0]["axes"][2:]
    for a_in, a_out in zip(ins, outs):
        if td.output_scale > 1 and a_in["id"] in "yx":
            assert (a_in["scale"], a_out["scale"]) == (td.output_scale**2, td.output_scale)
            assert a_in["scale"] / a_out["scale"] == a_out["scale"]
        else:
            assert "scale" not in a_in and "scale" not in a_out and "unit" not in a_in
        assert a_out.get("halo", 0) == td.halo.get(a_in["id"], 0) * td.axis_scale(a_in["id"])
    assert [c for c in rdf["inputs"][0]["axes"][1]["channel_names"]] == td.input_channels
    assert [c for c in rdf["outputs"][0]["axes"][1]["channel_names"]] == td.output_channels
    # honest tags: no client claimed, the formats written and the dimensionality
    tags = set(rdf["tags"])
    assert not tags & {"deepimagej", "ilastik"}
    assert {"tensorflow", "onnx", "torchscript", f"{td.ndim}d"} <= tags
    # attachments: Keras weights (fine-tuning) and the training config
    names = {Path(a["source"]).name for a in rdf["attachments"]}
    assert {KERAS_WEIGHTS_NAME, "training_config.yaml"} <= names
    assert yaml.safe_load((result.folder / "training_config.yaml").read_text())["system"] == trained.system
    # README: the rescale section only with a rescale requirement, and then with the training pixel size
    readme = (result.folder / "README.md").read_text()
    assert "## Validation" in readme and "## Input and output" in readme and "## Training" in readme
    if td.rescale is None:
        assert "Rescale your image first" not in readme
    else:
        assert "Rescale your image first" in readme and f"**{td.rescale.pixel_size_nm:g} nm pixels**" in readme
    # test and sample tensors
    x = np.load(result.folder / "test_input.npy")
    y = np.load(result.folder / "test_output.npy")
    assert x.shape[1] == td.n_in and y.shape[1] == td.n_out and x.dtype == np.float32
    np.testing.assert_array_equal(x, np.rint(x))  # integer-valued
    assert y.shape[-2:] == tuple(s * td.output_scale for s in x.shape[-2:])
    with tifffile.TiffFile(result.folder / "sample_input.tif") as tif:
        axes = tif.series[0].axes
        np.testing.assert_array_equal(tif.asarray(), x[0, 0] if td.n_in == 1 else np.moveaxis(x[0], 0, 1) if td.ndim == 3 else x[0])
    expected_axes = td.spatial_axes.upper() if td.n_in == 1 else ("ZCYX" if td.ndim == 3 else "CYX")
    assert axes == expected_axes  # several channels: an ImageJ hyperstack with a C axis
    assert result.size_bytes < MAX_PACKAGE_BYTES
    return rdf


def test_every_variant_is_packaged_for_the_clients(variant):
    name, result, trained = variant
    rdf = check_rdf_for_clients(result, trained)
    if name == "pssr-mf":
        assert rdf["config"]["cristae_zoo"]["tensors"]["frames_as_channels"] is True
        readme = (result.folder / "README.md").read_text()
        assert "ilastik: not applicable" in readme


def test_deepcristae_from_a_model_folder(deepcristae):
    result, model_dir = deepcristae
    rdf = check_rdf_for_clients(result, TrainedNetwork("deepcristae", None, None))
    rescale = rdf["config"]["cristae_zoo"]["tensors"]["rescale"]
    assert rescale["pixel_size_nm"] == 25.0
    assert rdf["config"]["cristae_zoo"]["rescale"]["training_pixel_size_nm"] == 25.0  # the older layout, still read
    assert rdf["config"]["cristae_zoo"]["conditions"] == {"width_px": [14.0, 16.6], "max_relative_noise": 0.14}
    names = {Path(a["source"]).name for a in rdf["attachments"]}
    assert {"training_history.csv", "evaluation_metrics.csv"} <= names
    readme = (result.folder / "README.md").read_text()
    assert "DeepCristae (tiny test model)" in readme  # evaluation/summary.md included
    assert result.zip_path is not None and result.zip_path.is_file()


@pytest.mark.parametrize("which", ["deepcristae", "pssr-mf"])
def test_bioimageio_core_test_passes_for_every_format(which, deepcristae, tmp_path_factory):
    if which == "deepcristae":
        folder = deepcristae[0].folder
    else:
        trained, image = tiny_network(which)
        folder = package_network(trained, tmp_path_factory.mktemp("t") / which, test_input=image, zip_package=False).folder
    results = run_package_tests(str(folder))
    assert sorted(wf for wf, _ in results) == ["onnx", "tensorflow_saved_model_bundle", "torchscript"]
    for wf, summary in results:
        failed = [d.name for d in summary.details if d.status == "failed"]
        assert summary.status == "passed", (wf, failed)


def test_cli_package_command(deepcristae, tmp_path, zoo_app):
    """`cristae-zoo package` refuses an existing package without --overwrite (exit 2, one line, nothing changed)."""
    result, model_dir = deepcristae
    before = sha_of_folder(result.folder)
    run = CliRunner().invoke(zoo_app, ["package", str(model_dir), "-o", str(result.folder)])
    assert run.exit_code == 2 and "--overwrite" in run.output and "Traceback" not in run.output
    assert sha_of_folder(result.folder) == before


# ---------------------------------------------------------------------------------------------- safety (issue 16)


def test_refuses_to_replace_a_model_folder_even_with_overwrite(tmp_path):
    model_dir = make_model_dir(tmp_path, TINY)
    other = make_model_dir(tmp_path / "other", TINY)
    hashes = {p: sha_of_folder(p) for p in (model_dir, other, tmp_path / "data")}
    for target in (model_dir, model_dir.parent, other, other.parent):  # the input, its parent, another model, its parent
        for overwrite in (False, True):
            with pytest.raises(CristaeZooError, match="model folder|trained model|holds"):
                package_model(model_dir, target, overwrite=overwrite)
    assert {p: sha_of_folder(p) for p in hashes} == hashes


def test_refuses_a_folder_that_is_not_a_package(tmp_path):
    model_dir = make_model_dir(tmp_path, TINY)
    data = tmp_path / "mydata"
    data.mkdir()
    (data / "precious.tif").write_bytes(b"x" * 100)
    before = sha_of_folder(data)
    for overwrite in (False, True):
        with pytest.raises(CristaeZooError, match="not a package folder"):
            package_model(model_dir, data, overwrite=overwrite)
    assert sha_of_folder(data) == before
    file_out = tmp_path / "file.txt"
    file_out.write_text("keep")
    with pytest.raises(CristaeZooError, match="not a folder"):
        package_model(model_dir, file_out, overwrite=True)
    assert file_out.read_text() == "keep"


def test_existing_package_needs_overwrite_then_is_replaced(tmp_path):
    trained, image = tiny_network("labelfree-2d")
    out = tmp_path / "pkg"
    package_network(trained, out, test_input=image, zip_package=False)
    before = sha_of_folder(out)
    with pytest.raises(CristaeZooError, match="--overwrite"):
        package_network(trained, out, test_input=image, zip_package=False)
    assert sha_of_folder(out) == before
    (out / "stale.txt").write_text("from the old package")
    package_network(trained, out, test_input=image * 2, zip_package=False, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "rdf.yaml").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging or old copy left


def test_size_cap_and_failure_leave_nothing(tmp_path, monkeypatch):
    trained, image = tiny_network("labelfree-2d")
    with pytest.raises(CristaeZooError, match="cap"):  # refused from the parameter count, before exporting
        package_network(trained, tmp_path / "big", test_input=image, zip_package=False, max_bytes=10_000)
    assert list(tmp_path.iterdir()) == []  # no package, no hidden staging folder

    from cristae_zoo.export import package as packager

    monkeypatch.setattr(packager, "preprocess_like_core", _fail_in_the_middle)
    with pytest.raises(CristaeZooError, match="simulated failure"):
        package_network(trained, tmp_path / "half", test_input=image, zip_package=False)
    assert list(tmp_path.iterdir()) == []


def _fail_in_the_middle(descr):
    raise CristaeZooError("simulated failure in the middle")


def test_test_input_of_the_wrong_shape(tmp_path):
    trained, image = tiny_network("pssr-mf")
    with pytest.raises(CristaeZooError, match="channel"):
        package_network(trained, tmp_path / "p", test_input=image[:3], zip_package=False)
    with pytest.raises(CristaeZooError, match="too small"):
        package_network(trained, tmp_path / "p", test_input=image[:, :8, :8], zip_package=False)
    assert list(tmp_path.iterdir()) == []


def test_model_folder_without_weights(tmp_path, zoo_app):
    model_dir = make_model_dir(tmp_path, TINY)
    (model_dir / "weights.keras").unlink()
    with pytest.raises(CristaeZooError, match="no weights.keras"):
        package_model(model_dir, tmp_path / "out")
    run = CliRunner().invoke(zoo_app, ["package", str(model_dir), "--output", str(tmp_path / "out")])
    assert run.exit_code == 2 and "no weights.keras" in run.output and "Traceback" not in run.output
    assert not (tmp_path / "out").exists()


def test_model_folder_with_corrupt_weights_or_config(tmp_path):
    model_dir = make_model_dir(tmp_path, TINY)
    (model_dir / "weights.keras").write_bytes(b"not a keras file")
    with pytest.raises(CristaeZooError, match="cannot load as a Keras model"):
        package_model(model_dir, tmp_path / "out")
    model_dir = make_model_dir(tmp_path / "b", TINY)
    cfg = yaml.safe_load((model_dir / "config.yaml").read_text())
    cfg["network"]["filters"] = 8  # does not match weights.keras
    (model_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CristaeZooError, match="does not match"):
        package_model(model_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()
