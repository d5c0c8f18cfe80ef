"""The client checks of `cristae_zoo.clients` (issue 13): JDLL's parse, weights-order, halo and tiling rules, the
runtime op checks, and `cristae-zoo check-clients` on every model_zoo package, on a package with a known defect and
on bad input.

The JDLL expectations below are what JDLL 0.6.1 itself printed when run on our packages (docs/clients.md quotes the
runs); the tests keep the Python port equal to it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from cristae_zoo import clients

ZOO = Path(__file__).resolve().parents[1] / "model_zoo"
PACKAGES = sorted(p.name for p in ZOO.iterdir() if (p / "rdf.yaml").is_file())


def _rdf(name: str) -> dict[str, Any]:
    return yaml.safe_load((ZOO / name / "rdf.yaml").read_text(encoding="utf-8"))


def _model(in_scale: float = 1.0, out_scale: float = 1.0, halo: int = 16, **top: Any) -> dict[str, Any]:
    """A minimal 2D model rdf (as YAML data) with the given y/x scales and output halo."""

    def space(axis: str, scale: float, ref: bool) -> dict[str, Any]:
        size: dict[str, Any] = {"tensor_id": "input", "axis_id": axis} if ref else {"min": 64, "step": 8}
        return {"id": axis, "type": "space", "size": size, "scale": scale, **({"halo": halo} if ref else {})}

    batch_channel = [{"type": "batch"}, {"type": "channel", "channel_names": ["c0"]}]
    return {
        "format_version": "0.5.10",
        "type": "model",
        "id": "toy",
        "documentation": "README.md",
        "covers": ["cover.png"],
        "inputs": [{"id": "input", "axes": batch_channel + [space("y", in_scale, False), space("x", in_scale, False)],
                    "data": {"type": "float32"}}],
        "outputs": [{"id": "output", "axes": batch_channel + [space("y", out_scale, True), space("x", out_scale, True)],
                     "data": {"type": "float32"}}],
        "weights": {"onnx": {"source": "w.onnx", "opset_version": 17}},
        "config": {"deepimagej": {"allow_tiling": True}},
        **top,
    }


# ---------------------------------------------------------------------------------------------------- JDLL port


def test_java_string_hash_matches_java() -> None:
    # values of java.lang.String.hashCode()
    assert clients.java_string_hash("") == 0
    assert clients.java_string_hash("hello") == 99162322
    assert clients.java_string_hash("onnx_v17") == -2012417082  # printed by jshell (Java 17)
    assert clients.java_string_hash("tensorflow_saved_model_bundle_v2.21.0") == -1594987908


def test_jdll_weights_order_is_its_hashmap_order() -> None:
    # JDLL 0.6.1 run on our packages: "weights order: [tensorflow_saved_model_bundle 2.21.0, onnx 17, torchscript
    # 2.13.0]" whatever order the rdf lists them in: the HashMap decides, the user does not.
    weights = {
        "torchscript": {"pytorch_version": "2.13.0"},
        "onnx": {"opset_version": 17},
        "tensorflow_saved_model_bundle": {"tensorflow_version": "2.21.0"},
    }
    assert clients.jdll_weights_order({"weights": weights}) == ["tensorflow_saved_model_bundle", "onnx", "torchscript"]
    assert clients.jdll_weights_order({"weights": dict(reversed(list(weights.items())))})[0] == (
        "tensorflow_saved_model_bundle"
    )


def test_java_hashmap_order_keeps_insertion_order_within_a_bucket() -> None:
    keys = ["Aa", "BB"]  # the classic Java hash collision: same bucket, so insertion order
    assert clients.java_string_hash("Aa") == clients.java_string_hash("BB")
    assert clients.java_hashmap_order(keys) == keys
    assert clients.java_hashmap_order(list(reversed(keys))) == list(reversed(keys))


def test_jdll_parse_rules_name_the_cast_that_throws() -> None:
    assert clients.jdll_parse_problems(_model()) == []
    bad = _model(documentation={"source": "README.md", "sha256": "0" * 64}, covers=[{"source": "cover.png"}])
    del bad["id"]
    problems = " | ".join(clients.jdll_parse_problems(bad))
    assert "ModelDescriptor.java:193" in problems  # documentation → ClassCastException
    assert "covers" in problems
    assert "ModelDescriptorV05.java:47" in problems  # no id → NullPointerException


def test_jdll_scale_and_halo_match_the_real_jdll_run() -> None:
    # deepcristae (scale 25 in and out, halo 56): JDLL printed "input ... halo [0, 0, 2, 2]" and, for a 256² image,
    # "input tile [1, 1, 256, 256] output tile [1, 1, 6400, 6400]"; a 1024² image threw a NullPointerException in
    # TileCalculator.calculateByteSizeOfAffectedOutput.
    rdf = _model(25.0, 25.0, halo=56)
    rdf["inputs"][0]["axes"][2]["size"] = rdf["inputs"][0]["axes"][3]["size"] = {"min": 120, "step": 8}
    assert clients.jdll_input_halo(rdf)["y"] == 2
    assert clients.spec_input_halo(rdf)["y"] == 56
    tiling = clients.jdll_tiling(rdf, {"y": 256, "x": 256})
    assert tiling.input_tile == (1, 1, 256, 256)
    assert tiling.expected_output == (1, 1, 6400, 6400) and tiling.spec_output == (1, 1, 256, 256)
    assert "NullPointerException" in " ".join(clients.jdll_tiling(rdf, {"y": 1024, "x": 1024}).problems)
    assert any("25×" in p for p in clients.jdll_scale_problems(rdf))


def test_jdll_scales_for_a_4x_model() -> None:
    # PSSR as first exported (4 in, 1 out, halo 64): JDLL halo 64 (the spec means 16) and a 1× output expected
    old = _model(4.0, 1.0, halo=64)
    assert clients.jdll_input_halo(old)["y"] == 64 and clients.spec_input_halo(old)["y"] == 16
    assert len(clients.jdll_scale_problems(old)) == 4
    # 16 in / 4 out: both read a 4× output and an input halo of 16
    new = _model(16.0, 4.0, halo=64)
    assert clients.jdll_scale_problems(new) == []
    tiling = clients.jdll_tiling(new, {"y": 256, "x": 256})
    assert tiling.expected_output == tiling.spec_output
    assert tiling.expected_output[2] == 4 * tiling.input_tile[2]


def test_jdll_hangs_past_its_first_tile_limit() -> None:
    # JDLL 0.6.1 on care-luminescence-pairs-3d (halo 4 in z, 28 in y/x, step 4): a 32×1024² volume gives
    # "input tile [1, 1, 40, 1080, 1080]"; 40×1024² and 64×1024² never return (TileCalculator.checkOutputSize loop)
    rdf = _rdf("care-luminescence-pairs-3d")
    ok = clients.jdll_tiling(rdf, {"z": 32, "y": 1024, "x": 1024})
    assert ok.input_tile[2:] == (40, 1080, 1080) and ok.problems == ()
    for z in (40, 64):
        assert "hangs" in " ".join(clients.jdll_tiling(rdf, {"z": z, "y": 1024, "x": 1024}).problems)


def test_same_size_output_rule() -> None:
    assert clients.same_size_output(_model())
    assert clients.same_size_output(_model(25.0, 25.0))
    assert not clients.same_size_output(_model(16.0, 4.0))


def test_ilastik_tag_on_a_model_ilastik_cannot_run(tmp_path: Path) -> None:
    four_x = _model(16.0, 4.0)
    assert clients.check_ilastik(clients.Package(tmp_path, four_x, tmp_path / "rdf.yaml")).status == "n/a"
    four_x["tags"] = ["ilastik"]
    verdict = clients.check_ilastik(clients.Package(tmp_path, four_x, tmp_path / "rdf.yaml"))
    assert verdict.status == "no" and "tagged 'ilastik'" in verdict.reasons[0]


def test_string_field_rules_of_older_specs() -> None:
    assert clients.string_field_problems(_model()) == []
    assert len(clients.string_field_problems(_model(documentation={"source": "README.md"}))) == 1


# ---------------------------------------------------------------------------------------------------- every package


@pytest.mark.parametrize("name", PACKAGES)
def test_jdll_rules_on_every_package(name: str) -> None:
    """What made deepImageJ list 0 of 7 models and mis-tile the rest: none of it in a shipped package."""
    rdf = _rdf(name)
    assert clients.jdll_parse_problems(rdf) == []
    assert clients.jdll_scale_problems(rdf) == []
    spatial = {a.get("id"): 1024 for a in rdf["inputs"][0]["axes"] if a.get("type") == "space"}
    if "z" in spatial:
        spatial["z"] = 32  # the largest 1024² stack JDLL 0.6.1 tiles (see test_jdll_hangs_past_its_first_tile_limit)
    assert clients.jdll_tiling(rdf, spatial).problems == ()
    assert clients.tiling_allowed(rdf)
    assert clients.string_field_problems(rdf) == []
    package = clients.Package(root=ZOO / name, rdf=rdf, source=ZOO / name / "rdf.yaml")
    assert clients.hyperstack_problem(package) is None  # a multi-channel sample is an ImageJ hyperstack


@pytest.mark.parametrize("name", PACKAGES)
def test_weights_use_only_ops_the_client_runtimes_know(name: str) -> None:
    """TorchScript vs torch 2.7 (ilastik) and 2.5 (website), SavedModel vs TF 2.7 (JDLL), ONNX vs onnxruntime 1.12."""
    pytest.importorskip("torch")
    weights = _rdf(name)["weights"]
    folder = ZOO / name
    if "torchscript" in weights:
        path = folder / weights["torchscript"]["source"]
        assert clients.torchscript_problems(path, "2.7") == []
        assert clients.torchscript_problems(path, "2.5") == []
    if "tensorflow_saved_model_bundle" in weights:
        assert clients.savedmodel_problems(folder / weights["tensorflow_saved_model_bundle"]["source"]) == []
    if "onnx" in weights:
        assert clients.onnx_problems(folder / weights["onnx"]["source"], "1.12") == []


# ---------------------------------------------------------------------------------------------------- the command


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A copy of the smallest shipped package, to break."""
    smallest = min(PACKAGES, key=lambda n: sum(f.stat().st_size for f in (ZOO / n).iterdir()))
    dest = tmp_path / smallest
    shutil.copytree(ZOO / smallest, dest)
    return dest


def test_check_clients_names_a_mapping_documentation(package_copy: Path, capsys, monkeypatch) -> None:
    from conftest import run_cli

    rdf_path = package_copy / "rdf.yaml"
    rdf = yaml.safe_load(rdf_path.read_text(encoding="utf-8"))
    if isinstance(rdf.get("documentation"), str):
        import hashlib

        sha = hashlib.sha256((package_copy / rdf["documentation"]).read_bytes()).hexdigest()
        rdf["documentation"] = {"source": rdf["documentation"], "sha256": sha}
        rdf["format_version"] = "0.5.12"  # the mapping form is valid for our spec from 0.5.11 on
        rdf["covers"] = [{"source": c} if isinstance(c, str) else c for c in rdf.get("covers", [])]
        rdf_path.write_text(yaml.safe_dump(rdf, sort_keys=False), encoding="utf-8")
    code, out, err = run_cli(["check-clients", package_copy], capsys, monkeypatch)
    assert code == 1, err
    lines = {line.split(":")[0]: line for line in out.splitlines() if line.strip()}
    assert len(lines) == len(clients.CLIENTS)
    deepimagej = next(line for line in out.splitlines() if line.startswith("deepImageJ"))
    assert "NO" in deepimagej and "documentation" in deepimagej and "ModelDescriptor.java:193" in deepimagej
    ilastik = next(line for line in out.splitlines() if line.startswith("ilastik"))
    assert "documentation is a mapping" in ilastik
    core = next(line for line in out.splitlines() if line.startswith("bioimageio.core"))
    assert ": yes" in core


def _one_error_line(code: int, out: str, err: str, *words: str) -> None:
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error:")
    for w in words:
        assert w in err


def test_check_clients_bad_input(tmp_path: Path, package_copy: Path, capsys, monkeypatch) -> None:
    from conftest import run_cli

    empty = tmp_path / "empty"
    empty.mkdir()
    _one_error_line(*run_cli(["check-clients", empty], capsys, monkeypatch), "no rdf.yaml")

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "rdf.yaml").write_text("inputs: [unclosed\n  - {", encoding="utf-8")
    _one_error_line(*run_cli(["check-clients", broken], capsys, monkeypatch), "not valid YAML")

    (broken / "rdf.yaml").write_text("type: dataset\nname: x\n", encoding="utf-8")
    _one_error_line(*run_cli(["check-clients", broken], capsys, monkeypatch), "not a bioimage.io model")

    rdf = yaml.safe_load((package_copy / "rdf.yaml").read_text(encoding="utf-8"))
    weights_file = package_copy / next(iter(rdf["weights"].values()))["source"]
    weights_file.unlink()
    _one_error_line(*run_cli(["check-clients", package_copy], capsys, monkeypatch), weights_file.name, "missing")


# ---------------------------------------------------------------------------------------------------- BioImageIT

BIOIMAGEIT_TOOL = Path(__file__).resolve().parents[1] / "integrations" / "bioimageit" / "cristae_zoo_predict.py"


def _load_tool() -> Any:
    """Import the tool file as BioImageIT does (import_module of the file's stem, then `module.Tool()`)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(BIOIMAGEIT_TOOL.stem, BIOIMAGEIT_TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Tool


def _bioimageit_parser(tool: Any) -> Any:
    """BioImageIT's ToolParser.create_parser (PyFlow/ToolManagement/ToolParser.py, 0.3.60), restated: one
    `--name` option per input and output, its special keys dropped, 'Path' → pathlib.Path, other types by name."""
    import argparse
    from pydoc import locate

    special = ["name", "autoColumn", "autoIncrement", "shortname", "advanced", "decimals", "static"]
    parser = argparse.ArgumentParser(prog=tool.name, description=tool.description)
    for kind in ("inputs", "outputs"):
        group = parser.add_argument_group(kind)
        for arg in getattr(tool, kind):
            kwargs = {k: v for k, v in arg.items() if k not in special}
            if kwargs.get("type") == "bool":
                kwargs.pop("type")
                kwargs.pop("default", None)
                kwargs["action"] = "store_false" if arg.get("default", False) else "store_true"
            elif "type" in kwargs:
                kwargs["type"] = Path if kwargs["type"] == "Path" else locate(kwargs["type"])
            group.add_argument("--" + arg["name"], **kwargs)
    return parser


def test_bioimageit_tool_follows_the_tool_interface() -> None:
    tool_cls = _load_tool()
    for attr in ("name", "description", "categories", "environment", "dependencies", "inputs", "outputs"):
        assert hasattr(tool_cls, attr)  # createNode (BiitToolNode.py) requires name and description
    assert callable(tool_cls().processData)
    names = [a["name"] for a in tool_cls.inputs + tool_cls.outputs]
    assert len(names) == len(set(names))
    assert sum(bool(a.get("autoColumn")) for a in tool_cls.inputs) == 1  # the image column of the DataFrame
    args = _bioimageit_parser(tool_cls).parse_args(
        ["--input_image", "a.tif", "--restored_image", "b.tif", "--pixel_size", "65", "--executable", "/x/cristae-zoo"]
    )
    assert tool_cls().command(args) == [
        "/x/cristae-zoo", "predict", "deepcristae", "a.tif", "--output", "b.tif", "--pixel-size", "65.0",
        "--weights", "onnx",
    ]


def test_bioimageit_tool_runs_cristae_zoo_predict(tmp_path: Path, capsys) -> None:
    """processData headless, as BioImageIT's ToolBase.processData calls it: a real restoration through our CLI."""
    import sys

    import numpy as np
    import tifffile

    exe = Path(sys.executable).parent / "cristae-zoo"
    if not exe.is_file():
        pytest.skip("the cristae-zoo console script is not installed beside this Python")
    image = tmp_path / "cell.tif"
    rng = np.random.default_rng(0)
    tifffile.imwrite(image, rng.poisson(20, (128, 128)).astype(np.uint16))
    tool_cls = _load_tool()
    args = _bioimageit_parser(tool_cls).parse_args(
        ["--input_image", str(image), "--restored_image", str(tmp_path / "cell_restored.tif"),
         "--pixel_size", "25", "--executable", str(exe)]
    )
    tool_cls().processData(args)
    restored = tifffile.imread(tmp_path / "cell_restored.tif")
    assert restored.shape == (128, 128) and restored.dtype == np.float32 and np.isfinite(restored).all()
    assert "[[2/2]]" in capsys.readouterr().out

    # a user error comes back as cristae-zoo's one line (no pixel size in the file, none given)
    args.pixel_size, args.restored_image = None, tmp_path / "again.tif"
    with pytest.raises(Exception, match="exit code 2"):
        tool_cls().processData(args)
