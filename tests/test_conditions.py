"""The conditions-of-use check at predict: silent on the package's own sample input, a one-line warning (and a
record in the output's metadata) on an input outside the range, a refusal with --strict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from conftest import run_cli

ZOO = Path(__file__).resolve().parents[1] / "model_zoo"
CONDITIONS = {"width_px": [14.0, 16.6], "max_relative_noise": 0.14, "min_structure_snr": 4.0, "source": "test"}


@pytest.fixture(scope="module")
def package_with_conditions(tmp_path_factory) -> Path:
    """model_zoo/deepcristae with conditions of use in its rdf (the rdf itself is not hashed)."""
    folder = tmp_path_factory.mktemp("pkg") / "deepcristae"
    shutil.copytree(ZOO / "deepcristae", folder)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    rdf.setdefault("config", {}).setdefault("cristae_zoo", {})["conditions"] = CONDITIONS
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return folder


def _metadata(path: Path) -> dict:
    with tifffile.TiffFile(path) as tf:
        info = tf.imagej_metadata or {}
    text = str(info.get("Info", ""))
    return json.loads(text.split("cristae_zoo = ", 1)[1].splitlines()[0])


def _predict_sample(package: Path, tmp_path: Path, rescale: str, capsys, monkeypatch) -> tuple[int, str, Path]:
    """`cristae-zoo predict` on the package's own test input written as an ImageJ TIFF: (exit code, stderr, output)."""
    source = tmp_path / "sample.tif"
    tifffile.imwrite(source, np.load(package / "test_input.npy")[0, 0], imagej=True)
    out = tmp_path / "out.tif"
    code, _, err = run_cli(["predict", package, source, "-o", out, "--rescale", rescale], capsys, monkeypatch)
    return code, err, out


def test_silent_on_the_sample_input(package_with_conditions, tmp_path, capsys, monkeypatch):
    code, err, out = _predict_sample(package_with_conditions, tmp_path, "1", capsys, monkeypatch)
    assert code == 0, err
    assert "conditions of use" not in err
    record = _metadata(out)["conditions_of_use"]
    assert record["outside"] == [] and record["measured"]["planes_without_structure"] == 0


def test_warns_on_planes_without_mitochondria_and_strict_refuses(package_with_conditions, tmp_path, capsys,
                                                                  monkeypatch):  # fmt: skip
    sample = np.load(package_with_conditions / "test_input.npy")[0, 0]
    rng = np.random.default_rng(0)
    empty = rng.poisson(float(np.median(sample)), sample.shape).astype(np.float32)  # background and noise only
    source = tmp_path / "stack.tif"
    tifffile.imwrite(source, np.stack([sample, empty]), imagej=True, metadata={"axes": "ZYX"})
    out = tmp_path / "out.tif"
    code, _, err = run_cli(["predict", package_with_conditions, source, "-o", out, "--rescale", "1"], capsys,
                           monkeypatch)  # fmt: skip
    assert code == 0, err
    assert "1 of 2 sampled planes hold no mitochondria" in " ".join(err.split())
    assert _metadata(out)["conditions_of_use"]["measured"]["planes_without_structure"] == 1

    strict_out = tmp_path / "strict.tif"
    code, _, err = run_cli(["predict", package_with_conditions, source, "-o", strict_out, "--rescale", "1",
                            "--strict"], capsys, monkeypatch)  # fmt: skip
    assert code == 2 and "--strict" in err and "Traceback" not in err
    assert not strict_out.exists()


def test_warns_on_mitochondria_too_wide_after_rescaling(package_with_conditions, tmp_path, capsys, monkeypatch):
    code, err, _ = _predict_sample(package_with_conditions, tmp_path, "1.6", capsys, monkeypatch)
    assert code == 0, err
    assert "px wide after rescaling, outside 14–16.6 px" in " ".join(err.split())


def test_rescale_auto_width_is_reused_not_measured_twice(package_with_conditions, tmp_path, capsys, monkeypatch):
    """With --rescale auto the factor comes from a width measurement; the check takes that width times the factor
    (the estimator is scale-equivariant) instead of running the estimator again on the rescaled planes."""
    import cristae_zoo.rescale as rescale

    calls = []
    original = rescale.object_widths
    monkeypatch.setattr(rescale, "object_widths", lambda *a, **k: calls.append(1) or original(*a, **k))
    code, err, out = _predict_sample(package_with_conditions, tmp_path, "auto", capsys, monkeypatch)
    assert code == 0, err
    meta = _metadata(out)
    assert len(calls) == 1  # the one plane --rescale auto measured; the check measured none
    width = meta["conditions_of_use"]["measured"]["width_px"]
    assert width == pytest.approx(meta["estimated_width_px"] * meta["rescale_factor"], abs=0.01)
    assert meta["conditions_of_use"]["outside"] == []
