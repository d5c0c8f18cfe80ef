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
