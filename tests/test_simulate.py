"""The STED simulator: reproducible, realistic widths and coverage, exact masks, detector-like counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi
from skimage.morphology import skeletonize

from cristae_zoo.config import SimulationConfig
from cristae_zoo.data.simulate import SimulatedImage, simulate_dataset, simulate_image


def small(**changes: object) -> SimulationConfig:
    return SimulationConfig(height=128, width=128, n_images=2, **changes)


def measured_width(mask: np.ndarray) -> float:
    """Mean width of the tubes: twice the distance to the background along the skeleton."""
    padded = np.pad(mask, 1)  # the image border is not a tube edge, but keeps skeletons of cut tubes inside
    skeleton = skeletonize(padded)
    return 2.0 * float(ndi.distance_transform_edt(padded)[skeleton].mean())


def test_same_seed_and_index_give_identical_images() -> None:
    a, b = simulate_image(small(), 0), simulate_image(small(), 0)
    np.testing.assert_array_equal(a.hr, b.hr)
    np.testing.assert_array_equal(a.mito_mask, b.mito_mask)
    np.testing.assert_array_equal(a.cristae_mask, b.cristae_mask)
    assert a.widths_px == b.widths_px


def test_image_depends_on_index_and_seed_but_not_on_n_images() -> None:
    base = simulate_image(small(), 1)
    assert not np.array_equal(base.hr, simulate_image(small(), 0).hr)
    assert not np.array_equal(base.mito_mask, simulate_image(small(seed=1), 1).mito_mask)
    # Image i is the same whatever the size of the data set it belongs to.
    np.testing.assert_array_equal(base.hr, simulate_image(SimulationConfig(height=128, width=128, n_images=7), 1).hr)


def test_shapes_and_dtypes() -> None:
    image = simulate_image(SimulationConfig(height=96, width=160), 0)  # non-square catches transposed axes
    assert isinstance(image, SimulatedImage)
    assert image.hr.shape == image.mito_mask.shape == image.cristae_mask.shape == (96, 160)
    assert image.hr.dtype == np.float32
    assert image.mito_mask.dtype == bool and image.cristae_mask.dtype == bool
    assert image.widths_px and all(8.0 <= w <= 26.0 for w in image.widths_px)


def test_masks_are_consistent_and_cover_a_sane_fraction() -> None:
    config = SimulationConfig(height=256, width=256)
    for i in range(3):
        image = simulate_image(config, i)
        assert not (image.cristae_mask & ~image.mito_mask).any(), "cristae outside mitochondria"
        fraction = image.mito_mask.mean()
        assert 0.08 <= fraction <= 0.40
        # Cristae are thin lamellae: a small but clear part of each mitochondrion.
        assert 0.03 <= image.cristae_mask.sum() / image.mito_mask.sum() <= 0.3


@pytest.mark.parametrize("width_mean_px", [15.6, 10.0])
def test_measured_width_follows_config(width_mean_px: float) -> None:
    config = SimulationConfig(height=256, width=256, width_mean_px=width_mean_px, width_sd_px=2.0)
    widths = [measured_width(simulate_image(config, i).mito_mask) for i in range(4)]
    assert np.mean(widths) == pytest.approx(width_mean_px, rel=0.25)


def test_counts_look_like_a_detector() -> None:
    config = small(n_out_of_focus=(0, 0), background_photons=2.0, offset=100.0, read_noise=1.5)
    image = simulate_image(config, 0)
    hr = image.hr
    assert np.array_equal(hr, np.round(hr)), "counts must be integers"
    assert hr.min() >= 0
    far = ~ndi.binary_dilation(image.mito_mask, iterations=6)  # background beyond the PSF's reach
    background = hr[far]
    # Offset + Poisson(2) + N(0, 1.5²): mean 102, variance 2 + 2.25 (+ rounding).
    assert background.mean() == pytest.approx(102.0, abs=0.5)
    assert background.var() == pytest.approx(4.25 + 1 / 12, rel=0.25)
    inside = hr[image.mito_mask].mean()
    assert inside > background.mean() + 10
    # Cristae are brighter than the rest of the mitochondrion (a dim matrix between lamellae).
    assert hr[image.cristae_mask].mean() > hr[image.mito_mask & ~image.cristae_mask].mean()
    peak = np.percentile(hr, 99.9) - config.offset
    assert 20 <= peak <= 200


def test_simulate_dataset_writes_images_masks_config_and_montage(tmp_path: Path) -> None:
    config = small()
    calls: list[int] = []
    paths = simulate_dataset(config, tmp_path / "sim", progress=calls.append)
    assert calls == [1, 1]
    assert [p.name for p in paths] == ["sim_000.tif", "sim_001.tif"]
    expected = simulate_image(config, 1)
    hr = tifffile.imread(tmp_path / "sim" / "hr" / "sim_001.tif")
    assert hr.dtype == np.uint16
    np.testing.assert_array_equal(hr, expected.hr)
    for name, mask in [("mito_mask", expected.mito_mask), ("cristae_mask", expected.cristae_mask)]:
        stored = tifffile.imread(tmp_path / "sim" / name / "sim_001.tif")
        assert stored.dtype == np.uint8
        np.testing.assert_array_equal(stored, mask.astype(np.uint8))
    with tifffile.TiffFile(paths[0]) as tif:
        num, den = tif.pages[0].tags["XResolution"].value
        assert num / den == pytest.approx(1000 / config.pixel_size_nm)  # pixels per µm
        assert tif.imagej_metadata["unit"] == "um"
    assert SimulationConfig.from_yaml(tmp_path / "sim" / "simulation.yaml") == config
    assert (tmp_path / "sim" / "montage.png").stat().st_size > 10_000


def test_config_rejects_reversed_ranges() -> None:
    with pytest.raises(ValueError):
        SimulationConfig(cristae_spacing_nm=(400.0, 100.0))


# --- Randomisation over what real acquisitions vary (issue 14 item 2) --------------------------------------------

BROAD = Path(__file__).resolve().parents[1] / "configs" / "simulation_broad.yaml"


def test_knobs_off_reproduce_the_default_images() -> None:
    # Every randomisation knob explicitly at its off value draws nothing: the same images as the plain default.
    off = small(
        width_mean_range_px=None, curvature_sd_range=None, cristae_tilt_sd_range_deg=None, cristae_free_fraction=0.0,
        labelling="inner_membrane", labelling_weights=None, psf_fwhm_range_nm=None, background_photons_range=None,
        empty_field_fraction=0.0, haze_intensity=(0.08, 0.2),
    )  # fmt: skip
    for i in range(2):
        a, b = simulate_image(small(), i), simulate_image(off, i)
        np.testing.assert_array_equal(a.hr, b.hr)
        np.testing.assert_array_equal(a.cristae_mask, b.cristae_mask)


@pytest.mark.parametrize("labelling", ["matrix", "outer_membrane"])
def test_matrix_and_outer_membrane_labelling_show_no_cristae(labelling: str) -> None:
    config = SimulationConfig(height=256, width=256, labelling=labelling, n_out_of_focus=(0, 0))
    image = simulate_image(config, 0)
    inner = simulate_image(SimulationConfig(height=256, width=256, n_out_of_focus=(0, 0)), 0)
    # Same geometry as the inner-membrane image of the same seed, but nothing to restore as cristae.
    np.testing.assert_array_equal(image.mito_mask, inner.mito_mask)
    assert image.mito_mask.any() and inner.cristae_mask.any()
    assert not image.cristae_mask.any()
    core = ndi.binary_erosion(image.mito_mask, iterations=4)
    edge = image.mito_mask & ~ndi.binary_erosion(image.mito_mask, iterations=1)
    if labelling == "matrix":  # a filled tube: the middle is at least as bright as the outline
        assert image.hr[core].mean() > image.hr[edge].mean()
    else:  # a ring: the outline is brighter than the middle
        assert image.hr[edge].mean() > image.hr[core].mean() + 5


def test_cristae_free_mitochondria_have_no_cristae() -> None:
    none = simulate_image(small(cristae_free_fraction=1.0), 0)
    assert none.mito_mask.any() and not none.cristae_mask.any()
    assert none.params["cristae_free_mitochondria"] == none.params["n_mitochondria"] > 0
    # About half of the mitochondria keep their cristae at a fraction of 0.5 (counted over several images).
    config = SimulationConfig(height=256, width=256, cristae_free_fraction=0.5)
    params = [simulate_image(config, i).params for i in range(4)]
    free = sum(p["cristae_free_mitochondria"] for p in params) / sum(p["n_mitochondria"] for p in params)
    assert 0.25 <= free <= 0.75


def test_empty_field_fraction_gives_images_with_empty_masks() -> None:
    images = [simulate_image(small(empty_field_fraction=1.0, n_out_of_focus=(0, 0)), i) for i in range(2)]
    for image in images:
        assert not image.mito_mask.any() and not image.cristae_mask.any() and image.widths_px == []
        # Only background photons, offset and read noise: mean 102, variance 2 + 1.5² (+ rounding).
        assert image.hr.mean() == pytest.approx(102.0, abs=0.3)
        assert image.hr.var() == pytest.approx(4.25 + 1 / 12, rel=0.2)
    config = SimulationConfig(height=64, width=64, empty_field_fraction=0.3)
    empty = [simulate_image(config, i).params["empty_field"] for i in range(40)]
    assert 4 <= sum(empty) <= 20  # 12 expected


def test_per_image_ranges_are_drawn_within_their_bounds_and_vary() -> None:
    config = small(
        width_mean_range_px=(10.0, 20.0), curvature_sd_range=(0.0, 0.03), psf_fwhm_range_nm=(40.0, 90.0),
        background_photons_range=(1.0, 6.0), labelling_weights={"inner_membrane": 1.0, "matrix": 1.0},
    )  # fmt: skip
    params = [simulate_image(config, i).params for i in range(8)]
    for key, (lo, hi) in [("width_mean_px", (10, 20)), ("psf_fwhm_nm", (40, 90)), ("background_photons", (1, 6))]:
        values = [p[key] for p in params]
        assert all(lo <= v <= hi for v in values) and np.ptp(values) > 0.2 * (hi - lo)
    assert {p["labelling"] for p in params} == {"inner_membrane", "matrix"}


def test_width_range_moves_the_measured_width() -> None:
    narrow = SimulationConfig(height=256, width=256, width_mean_range_px=(10.0, 10.0), width_sd_px=1.0)
    wide = SimulationConfig(height=256, width=256, width_mean_range_px=(20.0, 20.0), width_sd_px=1.0)
    assert measured_width(simulate_image(wide, 0).mito_mask) > 1.5 * measured_width(simulate_image(narrow, 0).mito_mask)


def test_wider_psf_blurs_more() -> None:
    def sharpness(fwhm: float) -> float:
        hr = simulate_image(small(psf_fwhm_range_nm=(fwhm, fwhm), peak_photons=(2000.0, 2000.0)), 0).hr
        return float(np.mean(np.abs(np.diff(hr, axis=1))))

    assert sharpness(40.0) > 1.3 * sharpness(100.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"width_mean_range_px": (-2.0, 10.0)}, "width_mean_range_px"),
        ({"width_mean_range_px": (0.0, 10.0)}, "width_mean_range_px"),
        ({"psf_fwhm_range_nm": (90.0, 40.0)}, "psf_fwhm_range_nm"),
        ({"cristae_tilt_sd_range_deg": (5.0, 75.0)}, "below 60"),
        ({"labelling_weights": {"matrix": -1.0}}, "labelling_weights"),
        ({"labelling_weights": {"matrix": 0.0}}, "positive sum"),
        ({"labelling_weights": {"mitotracker": 1.0}}, "labelling_weights"),
        ({"labelling": "cytosol"}, "labelling"),
        ({"empty_field_fraction": 1.5}, "empty_field_fraction"),
        ({"cristae_free_fraction": -0.1}, "cristae_free_fraction"),
        ({"background_photons_range": (0.0, 1e5)}, "saturate"),
        ({"haze_intensity": (0.3, 0.1)}, "haze_intensity"),
    ],
)
def test_impossible_randomisation_values_are_one_line_errors(tmp_path: Path, changes: dict, message: str) -> None:
    import yaml

    from cristae_zoo.errors import CristaeZooError

    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()}))
    with pytest.raises(CristaeZooError, match=message) as err:
        SimulationConfig.from_yaml(path)
    assert "\n" not in str(err.value)


def test_broad_preset_loads_and_varies_what_it_says() -> None:
    config = SimulationConfig.from_yaml(BROAD)
    assert config.empty_field_fraction > 0 and config.cristae_free_fraction > 0 and config.labelling_weights
    small_broad = config.model_copy(update={"height": 128, "width": 128})
    params = [simulate_image(small_broad, i).params for i in range(6)]
    assert len({p["psf_fwhm_nm"] for p in params}) == 6 and len({p["width_mean_px"] for p in params}) == 6


def test_simulate_dataset_records_each_images_parameters(tmp_path: Path) -> None:
    simulate_dataset(small(labelling_weights={"matrix": 1.0}), tmp_path / "sim")
    import csv

    rows = list(csv.DictReader((tmp_path / "sim" / "parameters.csv").open()))
    assert [r["image"] for r in rows] == ["sim_000.tif", "sim_001.tif"]
    assert {r["labelling"] for r in rows} == {"matrix"}
