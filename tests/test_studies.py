"""The trust studies: their building blocks on known inputs, and each `cristae-zoo study` command end to end on tiny
simulated data (1-step trainings of 4-filter networks)."""


import numpy as np
import pytest
import tifffile
from conftest import run_cli

from cristae_zoo.config import DegradationConfig, SimulationConfig, TrainConfig
from cristae_zoo.data.prepare import load_split
from cristae_zoo.export.package import conditions_of_use_markdown
from cristae_zoo.studies.ablation import VARIANTS, variant_config
from cristae_zoo.studies.common import config_key
from cristae_zoo.studies.hallucination import axis_band_energy, band_pass, band_power
from cristae_zoo.studies.limits import (
    mean_width_px,
    redegrade_pairs,
    rescale_pair,
    safe_range,
)
from cristae_zoo.studies.stability import stability_configs

TINY = ["--filters", "4", "--depth", "2", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "4"]




@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """4 simulated 160 px images → 3 training + 1 test pair with masks, and their HR folder."""
    from cristae_zoo.data.prepare import prepare_dataset
    from cristae_zoo.data.simulate import simulate_dataset

    root = tmp_path_factory.mktemp("studies")
    simulate_dataset(SimulationConfig(n_images=4, height=160, width=160, seed=2), root / "sim")
    prepare_dataset(root / "sim" / "hr", root / "data", DegradationConfig(n_test=1, rl_iterations=5))
    return root


@pytest.fixture(scope="module")
def tiny_model(tiny):
    from cristae_zoo.config import NetworkConfig
    from cristae_zoo.core.trainer import train

    cfg = TrainConfig(data_dir=tiny / "data", output_dir=tiny / "model", network=NetworkConfig(filters=4, depth=2),
                      epochs=1, steps_per_epoch=1, batch_size=4)  # fmt: skip
    return train(cfg).model_dir


# ------------------------------------------------------------------------------------------------ building blocks


def _bar(width: int, length: int = 120, size: int = 160) -> np.ndarray:
    m = np.zeros((size, size), bool)
    top = size // 2 - width // 2
    m[top : top + width, 20 : 20 + length] = True
    return m


@pytest.mark.parametrize("width", [6, 10, 16, 24])
def test_mean_width_of_a_bar(width):
    assert abs(mean_width_px(_bar(width)) - width) <= 1.0


def test_rescale_pair_scales_the_width(tiny):
    pair = load_split(tiny / "data", "test")[0]
    w = mean_width_px(pair.mito_mask)
    scaled = rescale_pair(pair, 2.0)
    assert scaled.input.shape == (320, 320) and scaled.gt.shape == scaled.mito_mask.shape == (320, 320)
    assert abs(mean_width_px(scaled.mito_mask) / w - 2.0) < 0.15


def test_redegrading_at_the_training_values_reproduces_the_test_inputs(tiny):
    pairs = load_split(tiny / "data", "test")
    deg = DegradationConfig.from_yaml(tiny / "data" / "degradation.yaml")
    again = redegrade_pairs(pairs, tiny / "sim" / "hr", deg, deg.sigma_blur, deg.sigma_noise)
    assert all(np.array_equal(a.input, p.input) for a, p in zip(again, pairs))
    blurrier = redegrade_pairs(pairs, tiny / "sim" / "hr", deg, 6.0, deg.sigma_noise)
    assert blurrier[0].input.std() < pairs[0].input.std()


def test_safe_range_is_the_contiguous_run_around_the_training_value():
    values = [1, 2, 3, 4, 5, 6]
    model = {"SSIM_mito": [0.5, 0.9, 0.95, 1.0, 0.92, 0.5], "SSIM_cristae": [0.5, 0.9, 0.95, 1.0, 0.95, 0.95]}
    inp = {"SSIM_mito": [0.1] * 6}
    assert safe_range(values, model, inp, train=4, tolerance=0.1) == (2, 5)
    assert safe_range(values, model, inp, train=4, tolerance=0.01) == (4, 4)
    inp_better = {"SSIM_mito": [0.1, 0.1, 0.1, 0.1, 0.99, 0.1]}  # the model must beat its input
    assert safe_range(values, model, inp_better, train=4, tolerance=0.1) == (2, 4)


def test_cristae_band_measures_on_known_images():
    size = 128
    mito = np.zeros((size, size), bool)
    mito[52:76, 8:120] = True  # a horizontal tube
    plain = mito.astype(float)
    yy, xx = np.mgrid[0:size, 0:size]
    across = plain * (1 + 0.5 * np.cos(2 * np.pi * xx / 10))  # lamellae across the axis, 10 px apart
    along = plain * (1 + 0.5 * np.cos(2 * np.pi * yy / 10))  # the same stripes running along the axis
    a_plain, a_across, a_along = (axis_band_energy(im, mito) for im in (plain, across, along))
    assert a_across > 20 * a_plain and a_across > 5 * a_along
    # the FFT band keeps periods 4–16 px only
    assert band_power(np.cos(2 * np.pi * xx / 8)) > 0.45  # a unit cosine has power 0.5
    assert band_power(np.cos(2 * np.pi * xx / 40)) < 0.01 and band_power(np.cos(2 * np.pi * xx / 2.5)) < 0.01
    assert np.allclose(band_pass(np.ones((16, 16))), 0)


def test_stability_groups_change_one_thing(tmp_path):
    base = TrainConfig(data_dir=tmp_path)
    groups = stability_configs(base, 3)
    p, i = groups["patches"], groups["init"]
    assert config_key(p[0][1]) == config_key(i[0][1])  # training #0 is shared
    assert [c.patches.seed for _, c in p] == [0, 1, 2] and {c.init_seed for _, c in p} == {0}
    assert [c.init_seed for _, c in i] == [0, 1, 2] and {c.patches.seed for _, c in i} == {0}
    assert len({config_key(c) for _, c in p + i}) == 5
    # the ablation's full variant is the same training as the stability base
    assert config_key(variant_config(base, "full")) == config_key(p[0][1])
    changed = {v: variant_config(base, v) for v in VARIANTS}
    assert changed["mae"].loss == "mae" and changed["dssim"].loss == "dssim"
    assert changed["uniform"].patches.sampling == "uniform" and changed["no-residual"].network.residual is False


def test_package_readme_gets_the_conditions_of_use(tmp_path):
    from cristae_zoo.core.tensors import TensorDescription
    from cristae_zoo.export.readme import write_readme

    assert conditions_of_use_markdown(tmp_path) == []
    (tmp_path / "conditions_of_use.md").write_text("### Table\n\nsafe width 12–18 px\n")
    lines = conditions_of_use_markdown(tmp_path)
    assert lines[0] == "## Conditions of use" and "safe width 12–18 px" in lines[2] and "#####" in lines[2]
    # and the package README has the section
    template = {"name": "m", "description": "d", "cite": [], "documentation": {"limitations": "none known"}}
    readme = write_readme(
        tmp_path / "README.md", template=template, values={}, system="deepcristae", tensors=TensorDescription(),
        training={"system": "deepcristae"}, exported=[], halo_errors={}, model_dir=tmp_path,
    ).read_text()  # fmt: skip
    assert "## Conditions of use" in readme and "safe width 12–18 px" in readme
    assert readme.index("## Conditions of use") < readme.index("## Limitations")


# ---------------------------------------------------------------------------------------------------- end to end


def test_study_stability_and_ablation_end_to_end(tiny, capsys, monkeypatch):
    cache = tiny / "models"
    out = tiny / "stability"
    code, stdout, err = run_cli(["study", "stability", "--data", tiny / "data", "-o", out, "-n", "2", "--cache", cache, *TINY], capsys, monkeypatch)
    assert code == 0, err
    assert len(list(cache.glob("model-*/weights.keras"))) == 3  # 2 + 2 trainings, #0 shared
    summary = (out / "summary.md").read_text()
    assert "different patch draws" in summary and "sd between trainings" in summary and "SSIM_cristae" in stdout
    name = next((tiny / "data" / "test" / "input").iterdir()).stem
    for group in ("patches", "init"):
        assert (out / group / f"{name}.png").is_file()
        std = tifffile.imread(out / group / f"{name}_std.tif")
        assert std.shape == (160, 160) and np.all(std >= 0)
    rows = (out / "stability.csv").read_text().splitlines()
    assert len(rows) == 1 + 4  # 2 groups × 2 trainings × 1 test image
    # patches #0 and init #0 are the same training: identical metrics
    first = [r.split(",", 3)[3] for r in rows[1:] if "#0" in r]
    assert len(first) == 2 and first[0] == first[1]

    out = tiny / "ablation"
    code, stdout, err = run_cli(["study", "ablation", "--data", tiny / "data", "-o", out, "--cache", cache, *TINY], capsys, monkeypatch)
    assert code == 0, err
    assert "reusing" in err  # the full variant is the stability base
    assert len(list(cache.glob("model-*/weights.keras"))) == 3 + 4
    table = (out / "summary.md").read_text()
    for v in ("full", "mae", "dssim", "uniform", "no-residual", "Input"):
        assert f"| {v}" in table
    assert (out / "ablation.png").is_file()
    assert (out / "variants" / "mae" / "weights.keras").is_file()

    code, _, err = run_cli(["study", "ablation", "--data", tiny / "data", "-o", out, "--variants", "bogus", *TINY], capsys, monkeypatch)
    assert code == 2 and "unknown ablation variant" in err


def test_study_limits_end_to_end(tiny, tiny_model, tmp_path, capsys, monkeypatch):
    model = tiny_model
    out = tmp_path / "limits"
    args = ["study", "limits", model, "-o", out, "--hr", tiny / "sim" / "hr", "--widths", "8,24", "--blurs", "2,5", "--noises", "0,12"]
    code, stdout, err = run_cli(args, capsys, monkeypatch)
    assert code == 0, err
    assert (out / "limits.png").is_file() and (out / "limits.csv").is_file()
    conditions = (model / "conditions_of_use.md").read_text()
    assert "safe range" in conditions and "mean mitochondrion width" in conditions and "σ_blur" in conditions
    rows = (out / "limits.csv").read_text().splitlines()
    # (2 widths + the measured one) + (2 blurs + 3.25) + (2 noises + 4), × (model, Input), × 1 test image
    assert len(rows) == 1 + 9 * 2
    code, _, err = run_cli(["study", "limits", model, "--widths", "8,x"], capsys, monkeypatch)
    assert code == 2 and "invalid list" in err


def test_study_hallucination_end_to_end(tiny, tiny_model, tmp_path, capsys, monkeypatch):
    model = tiny_model
    out = tmp_path / "hallucination"
    code, stdout, err = run_cli(["study", "hallucination", model, "-o", out, "--n-images", "1", "--size", "96"], capsys, monkeypatch)
    assert code == 0, err
    rows = (out / "hallucination.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 * 4  # 4 cases × (input, model, RL, GT)
    text = (out / "summary.md").read_text()
    assert "tubes, no cristae" in text and "RL (20 it.)" in text and (out / "hallucination.png").is_file()
    assert "cristae invented in out-of-focus haze" in text


def test_study_tta_end_to_end(tiny, tiny_model, tmp_path, capsys, monkeypatch):
    out = tmp_path / "tta"
    code, stdout, err = run_cli(["study", "tta", tiny_model, "-o", out, "--data", tiny / "data"], capsys, monkeypatch)
    assert code == 0, err
    text = (out / "summary.md").read_text()
    assert "mean of 8 transforms" in text and "Spearman" in text
    name = next((tiny / "data" / "test" / "input").iterdir()).stem
    assert (out / f"{name}_tta.png").is_file() and tifffile.imread(out / f"{name}_tta_std.tif").shape == (160, 160)
