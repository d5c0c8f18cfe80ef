"""The prediction engines: the lean ONNX Runtime engine reproduces bioimageio.core's pipeline (its operators are
the reference), falls back to it where it must, and the opt-in bf16 path refuses where the CPU cannot."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import run_cli

ZOO = Path(__file__).resolve().parents[1] / "model_zoo"


@pytest.mark.parametrize("name", ["deepcristae", "labelfree", "pssr-mf", "care-luminescence-pairs-3d"])
def test_lean_engine_equals_bioimageio_core(name):
    """Random units (not the test input): per-sample percentile / z-score statistics, padding and the network."""
    from cristae_zoo.predict import Restorer

    lean, core = Restorer(name), Restorer(name, engine="bioimageio")
    assert lean.engine == "onnxruntime" and core.engine == "bioimageio"
    td = lean.tensors
    shape = [td.valid_size(a, 70 if a == "z" else 150) - (3 if a != "z" else 0) for a in td.spatial_axes]
    x = np.random.default_rng(1).gamma(2.0, 50.0, size=(2, td.n_in, *shape)).astype(np.float32)
    with lean, core:
        a, b = lean.predict_units(x.copy()), core.predict_units(x.copy())
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-5 * max(1.0, float(np.ptp(b))))


def test_scale_range_matches_a_hand_computation():
    from cristae_zoo.engines import Processing, RdfPackage

    pkg = RdfPackage(root=Path("."), rdf={"inputs": [{"id": "input"}]}, input_dims=("batch", "channel", "y", "x"),
                     output_dims=("batch", "channel", "y", "x"),
                     preprocessing=[{"id": "scale_range", "kwargs": {"axes": ["y", "x"], "min_percentile": 10,
                                                                     "max_percentile": 90}}])  # fmt: skip
    x = np.arange(2 * 2 * 11 * 1, dtype=np.float32).reshape(2, 2, 11, 1)
    y, _ = Processing(pkg).preprocess(x)
    # one sample, one channel: values 0..10, linear percentiles 10 % → 1, 90 % → 9
    np.testing.assert_allclose(y[0, 0, :, 0], (np.arange(11) - 1.0) / (8.0 + 1e-6), rtol=1e-6)
    np.testing.assert_allclose(y[1, 1, :, 0], (np.arange(11) - 1.0) / (8.0 + 1e-6), rtol=1e-6)


def test_unknown_processing_falls_back_to_bioimageio_core(tmp_path):
    from cristae_zoo.errors import CristaeZooError
    from cristae_zoo.predict import Restorer

    folder = tmp_path / "pkg"
    shutil.copytree(ZOO / "pssr-sf", folder)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    rdf["outputs"][0]["postprocessing"] = [{"id": "sigmoid"}]
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    assert Restorer(folder).engine == "bioimageio"
    with pytest.raises(CristaeZooError, match="use --engine bioimageio"):
        Restorer(folder, engine="onnxruntime")


def test_changed_weights_are_refused_by_hash(tmp_path):
    from cristae_zoo.errors import CristaeZooError
    from cristae_zoo.predict import Restorer

    folder = tmp_path / "pkg"
    shutil.copytree(ZOO / "pssr-sf", folder)
    with open(folder / "weights.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(CristaeZooError, match="sha256"):
        Restorer(folder)


def test_bf16_runs_or_refuses_in_one_line(tmp_path, capsys, monkeypatch):
    """bf16 is opt-in: where the CPU (or the install) cannot do it, one line and exit 2, never a silent fp32."""
    import tifffile

    from cristae_zoo.engines import cpu_supports_bf16

    x = np.load(ZOO / "pssr-sf" / "test_input.npy")[0, 0]
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, x)
    out = tmp_path / "out.tif"
    code, _, err = run_cli(["predict", "pssr-sf", source, "-o", out, "--precision", "bf16"], capsys, monkeypatch)
    if cpu_supports_bf16():
        assert code == 0, err
        expected = np.load(ZOO / "pssr-sf" / "test_output.npy")[0, 0]
        assert np.max(np.abs(tifffile.imread(out) - expected)) < 0.05 * np.ptp(expected)
    else:
        assert code == 2 and "Traceback" not in err and "bf16" in err
        assert len(err.strip().splitlines()) <= 3  # one message (rich may wrap it)
        assert not out.exists()


def test_openvino_fp32_equals_onnxruntime():
    pytest.importorskip("openvino")
    from cristae_zoo.predict import Restorer

    x = np.load(ZOO / "deepcristae" / "test_input.npy")
    with Restorer("deepcristae") as a, Restorer("deepcristae", engine="openvino") as b:
        np.testing.assert_allclose(b.predict_units(x), a.predict_units(x), atol=1e-4)
