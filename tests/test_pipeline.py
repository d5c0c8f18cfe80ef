"""End-to-end: simulate → prepare → train (2 steps) → evaluate on tiny data, and bad inputs through the CLI."""


from pathlib import Path

import conftest
import numpy as np
import pytest
import tifffile

from cristae_zoo.config import SimulationConfig, TrainConfig
from cristae_zoo.data.simulate import simulate_dataset


def run_cli(args, capsys, monkeypatch):
    code, _, err = conftest.run_cli(args, capsys, monkeypatch)
    return code, err


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    simulate_dataset(SimulationConfig(n_images=4, height=160, width=160, seed=1), out)
    return out


@pytest.fixture(scope="module")
def data_dir(sim_dir, tmp_path_factory):
    from cristae_zoo.config import DegradationConfig
    from cristae_zoo.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("data")
    prepare_dataset(sim_dir / "hr", out, DegradationConfig(n_test=1, rl_iterations=5))
    return out


def test_prepare_writes_pairs_with_masks(data_dir):
    names = sorted(p.name for p in (data_dir / "train" / "input").iterdir())
    assert len(names) == 3 and len(list((data_dir / "test" / "input").iterdir())) == 1
    for kind in ("gt", "mito_mask", "cristae_mask"):
        assert sorted(p.name for p in (data_dir / "train" / kind).iterdir()) == names
    x = tifffile.imread(data_dir / "train" / "input" / names[0])
    assert x.shape == (160, 160) and np.all(x == np.round(x))


def test_two_step_training_writes_loadable_model(data_dir, tmp_path, capsys, monkeypatch):
    from cristae_zoo.core.model_dir import load_model_dir

    out = tmp_path / "model"
    code, err = run_cli(
        ["train", "--data", data_dir, "-o", out, "--epochs", "1", "--steps-per-epoch", "2", "--filters", "4", "--depth", "2"],
        capsys,
        monkeypatch,
    )
    assert code == 0, err
    for f in ("config.yaml", "weights.keras", "history.csv", "loss_curve.png", "patches_overview.png"):
        assert (out / f).is_file(), f
    loaded = load_model_dir(out)
    model, cfg = loaded.keras_model, loaded.config
    assert loaded.system.name == "deepcristae" and isinstance(cfg, TrainConfig) and cfg.network.filters == 4
    y = model.predict(np.zeros((1, 32, 32, 1), np.float32), verbose=0)
    assert y.shape == (1, 32, 32, 1)
    # A second run into the same folder is refused; --resume continues it.
    code, err = run_cli(["train", "--data", data_dir, "-o", out, "--epochs", "2"], capsys, monkeypatch)
    assert code == 2 and "--resume" in err
    # --resume with a different network is refused (it would continue the old weights under a new config)
    code, err = run_cli(
        ["train", "--data", data_dir, "-o", out, "--epochs", "2", "--steps-per-epoch", "2", "--filters", "8", "--depth", "2", "--resume"],
        capsys,
        monkeypatch,
    )
    assert code == 2 and "network" in err and "Traceback" not in err
    code, err = run_cli(
        ["train", "--data", data_dir, "-o", out, "--epochs", "2", "--steps-per-epoch", "2", "--filters", "4", "--depth", "2", "--resume"],
        capsys,
        monkeypatch,
    )
    assert code == 0, err
    assert len((out / "history.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs

    code, err = run_cli(["evaluate", out, "--data", data_dir], capsys, monkeypatch)
    assert code == 0, err
    summary = (out / "evaluation" / "summary.md").read_text()
    assert "SSIM_cristae" in summary and "RL" in summary and "Wiener" in summary
    assert list((out / "evaluation").glob("*_restoration.png"))


def test_training_is_reproducible(data_dir, tmp_path):
    from cristae_zoo.config import NetworkConfig
    from cristae_zoo.core.trainer import train

    histories = []
    for run in ("a", "b"):
        cfg = TrainConfig(data_dir=data_dir, output_dir=tmp_path / run, epochs=1, steps_per_epoch=2, batch_size=4,
                          network=NetworkConfig(filters=4, depth=2))
        result = train(cfg)
        histories.append([(r["step"], r["loss"], r["val_loss"]) for r in result.history])  # (seconds differ)
    assert histories[0] == histories[1]


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("empty", "no TIFF images"),
        ("3d", "expected a 2D image"),
        ("nan", "NaN or Inf"),
        ("constant", "constant"),
        ("small", "smaller than"),
    ],
)
def test_prepare_bad_input_is_one_line_error(case, expected, tmp_path, capsys, monkeypatch, sim_dir):
    hr = tmp_path / "hr"
    hr.mkdir()
    good = tifffile.imread(sim_dir / "hr" / "sim_000.tif").astype(np.float32)
    for i in range(3):
        _write(hr / f"ok_{i}.tif", good)
    bad = {
        "empty": None,
        "3d": np.stack([good, good]),
        "nan": np.where(good > good.mean(), np.nan, good),
        "constant": np.full_like(good, 7),
        "small": good[:50, :50],
    }[case]
    if case == "empty":
        for f in hr.iterdir():
            f.unlink()
    else:
        _write(hr / "bad.tif", bad)
    out = tmp_path / "out"  # a new folder (an existing one is refused before the inputs are read: test_safety.py)
    code, err = run_cli(["prepare", hr, "-o", out, "--n-test", "1"], capsys, monkeypatch)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err and expected in errors[0]
    line = errors[0]
    assert case == "empty" or "bad.tif" in line
    assert not out.exists()  # everything is checked before anything is written


def test_mismatched_pairs_are_refused(data_dir, tmp_path, capsys, monkeypatch):
    import shutil

    broken = tmp_path / "data"
    shutil.copytree(data_dir, broken)
    gt = next((broken / "train" / "gt").iterdir())
    tifffile.imwrite(gt, np.ones((150, 150), np.float32) + np.eye(150, dtype=np.float32))
    code, err = run_cli(["patches", broken, "-o", tmp_path / "p.npz"], capsys, monkeypatch)
    assert code == 2 and gt.name in err and "differ in shape" in err


def test_evaluate_a_package_beside_nothing_else(data_dir, tmp_path, capsys, monkeypatch):
    """`evaluate` takes a package (its trainable Keras weights): it needs --output, refuses two models of one name,
    and the shipped DeepCristae restores the simulated held-out image better than its raw input (random or wrong
    weights would not)."""
    import csv

    package = Path(__file__).resolve().parents[1] / "model_zoo" / "deepcristae" / "rdf.yaml"
    code, err = run_cli(["evaluate", package, "--data", data_dir], capsys, monkeypatch)
    assert code == 2 and "--output" in err and "Traceback" not in err
    code, err = run_cli(["evaluate", package, package, "--data", data_dir, "-o", tmp_path / "twice"], capsys, monkeypatch)
    assert code == 2 and "deepcristae: two models have this name" in err
    code, err = run_cli(["evaluate", package, "--data", data_dir, "-o", tmp_path / "ev"], capsys, monkeypatch)
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "ev" / "metrics.csv").open()))
    psnr = {r["method"]: float(r["PSNR"]) for r in rows}
    assert set(psnr) >= {"Input", "RL", "deepcristae"}
    assert psnr["deepcristae"] > psnr["Input"] + 1.0, psnr
    assert "deepcristae" in (tmp_path / "ev" / "summary.md").read_text()
