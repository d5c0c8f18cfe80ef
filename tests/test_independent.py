"""The independent validation study (issue 14 item 4): rendering bookkeeping, degradation, measures of invention, CLI.

The imaging model here is a stand-in (Gaussian PSF + Poisson) so the measures are tested without pysted; one test
renders a real pysted datamap when pysted (the `validation` extra) is installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from scipy import ndimage

from cristae_zoo.errors import CristaeZooError
from cristae_zoo.studies.independent import (
    IndependentConfig,
    high_pass_agreement,
    make_images,
    regions,
    score_images,
    summary_tables,
)


def fake_renderer(datamap: np.ndarray, scale: float, seed: int, noise: bool) -> np.ndarray:
    expected = ndimage.gaussian_filter(np.round(datamap * scale), 0.8) * 1.0
    return np.random.default_rng(seed).poisson(expected).astype(np.float32) if noise else expected.astype(np.float32)


def filament_datamaps(n: int = 2, size: int = 96) -> list[np.ndarray]:
    maps = []
    for i in range(n):
        d = np.zeros((size, size))
        d[20 + 10 * i : 26 + 10 * i, 10:80] = 1.0  # a bar in the upper half, the lower half empty
        maps.append(d)
    return maps


def config(**changes: object) -> IndependentConfig:
    return IndependentConfig(datasets=["tubulin"], images_per_dataset=2, **changes)


def test_images_reach_the_drawn_photon_budget_and_are_degraded_the_deepcristae_way() -> None:
    cfg = config(peak_photons=(50.0, 60.0))
    images = make_images(cfg, fake_renderer, {"tubulin": filament_datamaps()})
    assert [im.name for im in images] == ["tubulin_0", "tubulin_1"]
    for im in images:
        assert 45 <= np.percentile(im.truth, 99.9) <= 65
        assert im.input.shape == im.hr.shape == im.gt.shape == (96, 96)
        # Empty rows of the input: no photons, only the offset 100, the read noise σ 4 and rounding.
        assert im.input[70:90, :].mean() == pytest.approx(100, abs=0.5)
        assert im.input[70:90, :].std() == pytest.approx(np.sqrt(16 + 1 / 12), rel=0.15)
        # The input is blurred (σ 3.25 px): its bar is wider than the HR's.
        assert ndimage.gaussian_filter(im.input, 1)[:, 45].argmax() in range(15, 45)
    again = make_images(cfg, fake_renderer, {"tubulin": filament_datamaps()})
    np.testing.assert_array_equal(images[0].input, again[0].input)  # seeded


def test_regions_separate_structure_from_empty_space() -> None:
    truth = fake_renderer(filament_datamaps(1)[0], 50, 0, False)
    structure, empty = regions(truth)
    assert structure[20:26, 20:70].all()
    assert not (structure & empty).any()
    assert not empty[16:30, 20:70].any()  # within 4 px of the bar
    assert empty[60:80, 20:70].all()


def test_measures_see_invented_structure_in_empty_regions_and_on_the_structure() -> None:
    images = make_images(config(peak_photons=(200.0, 200.0)), fake_renderer, {"tubulin": filament_datamaps()})
    yy, xx = np.mgrid[:96, :96]
    ladder = (np.sin(2 * np.pi * xx / 6) > 0.5).astype(np.float32)  # cristae-like stripes every 6 px

    def rl_like(x: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(x, 1.0)

    restorers = {
        "Input": lambda x: x,
        "smooth": rl_like,
        "stripes everywhere": lambda x: rl_like(x) + 0.5 * x.max() * ladder,
        "stripes on the bar": lambda x: rl_like(x) * (1 + 2 * ladder),
    }
    rows, fitted = score_images(images, restorers)
    by = {s: [r for r in rows if r["source"] == s] for s in ("Input", "smooth", "stripes everywhere", "stripes on the bar", "GT", "truth (noise-free)")}
    mean = lambda s, k: float(np.mean([r[k] for r in by[s]]))  # noqa: E731
    # Empty regions: stripes drawn on nothing raise the invented energy far above the GT's own speckle.
    assert mean("stripes everywhere", "invented") > 10 * mean("GT", "invented")
    assert mean("smooth", "invented") < mean("Input", "invented")
    # On the structure: stripes raise its high-pass energy without agreeing with the truth's fine structure.
    assert mean("stripes on the bar", "struct_hp_vs_gt") > mean("smooth", "struct_hp_vs_gt")
    assert mean("stripes on the bar", "struct_hp_r_truth") < mean("smooth", "struct_hp_r_truth")
    assert mean("truth (noise-free)", "PSNR") > mean("smooth", "PSNR") - 1
    table = summary_tables(rows, ["tubulin"])
    assert "### tubulin (2 images" in table and "stripes on the bar" in table


def test_high_pass_agreement_is_one_for_the_truth_itself() -> None:
    truth = fake_renderer(filament_datamaps(1)[0], 50, 0, False)
    structure, _ = regions(truth)
    assert high_pass_agreement(truth * 3 + 1, truth, structure) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"datasets": ["mitochondria"]}, "datasets"), ({"peak_photons": (0.0, 10.0)}, "peak_photons"), ({"images_per_dataset": 0}, "images_per_dataset")],
)
def test_impossible_options_are_one_line_errors(tmp_path: Path, changes: dict, message: str) -> None:
    import yaml

    path = tmp_path / "independent.yaml"
    path.write_text(yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()}))
    with pytest.raises(CristaeZooError, match=message) as err:
        IndependentConfig.from_yaml(path)
    assert "\n" not in str(err.value)


def test_cli_bad_config_is_one_line_and_writes_nothing(tmp_path: Path, capsys, monkeypatch) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [cristae]\n")
    code, _, err = run_cli(["study", "independent", "--config", bad, "-o", tmp_path / "out"], capsys, monkeypatch)
    assert code == 2
    assert "datasets" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_missing_package_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    code, _, err = run_cli(["study", "independent", tmp_path / "nope", "-o", tmp_path / "out"], capsys, monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_pysted_renders_a_shipped_datamap() -> None:
    pytest.importorskip("pysted")
    from cristae_zoo.studies.independent import load_datamaps, pysted_renderer

    cfg = IndependentConfig(datasets=["psd95"], images_per_dataset=1)
    datamap = load_datamaps("psd95")[0][:64, :64]
    datamap = datamap if datamap.max() > 0 else load_datamaps("psd95")[0][80:144, 80:144]
    images = make_images(cfg, pysted_renderer(cfg), {"psd95": [datamap]})
    (im,) = images
    assert 40 <= np.percentile(im.truth, 99.9) <= 120
    assert np.array_equal(im.hr, np.round(im.hr)) and im.hr.min() >= 0  # photon counts
