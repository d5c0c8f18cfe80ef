"""Uncertainty maps: std maps on known inputs, exact dihedral inverses, TTA of equivariant functions, ensembles."""

import numpy as np
import pytest
from scipy import ndimage

from cristae_zoo.errors import CristaeZooError
from cristae_zoo.uncertainty import (
    N_DIHEDRAL,
    dihedral_inverse,
    dihedral_transform,
    predict_ensemble,
    predict_with_uncertainty,
    relative_uncertainty,
    std_map,
    tta_predictions,
    uncertainty_path,
)


@pytest.fixture
def image():
    return np.random.default_rng(0).normal(size=(6, 9)).astype(np.float32)  # non-square: rotations swap axes


def test_std_map_of_known_inputs():
    mean, std = std_map([np.zeros((3, 4)), np.full((3, 4), 2.0)])
    assert np.array_equal(mean, np.ones((3, 4))) and np.array_equal(std, np.ones((3, 4)))
    values = np.array([1.0, 2.0, 4.0, 9.0])
    mean, std = std_map(values[:, None, None] * np.ones((4, 2, 2)))
    assert np.allclose(mean, values.mean()) and np.allclose(std, values.std())  # population sd (ddof 0)
    mean, std = std_map([np.full((2, 2), 7.0)])
    assert np.array_equal(std, np.zeros((2, 2)))


def test_std_map_matches_numpy_and_streams_in_float64():
    stack = np.random.default_rng(1).normal(1000.0, 0.01, size=(8, 16, 16)).astype(np.float32)
    mean, std = std_map(stack)
    ref = stack.astype(np.float64)
    assert np.allclose(mean, ref.mean(0), rtol=0, atol=1e-4)
    assert np.allclose(std, ref.std(0), rtol=1e-3, atol=1e-6)  # no catastrophic cancellation at a large mean
    assert mean.dtype == np.float32 and std.dtype == np.float32


def test_std_map_normalize_removes_gain_and_offset(image):
    _, std = std_map([image, 3 * image + 5], normalize=True)
    assert std.max() < 1e-5
    _, std_raw = std_map([image, 3 * image + 5])
    assert np.allclose(std_raw, np.abs(2 * image + 5) / 2, atol=1e-5)


def test_std_map_errors():
    with pytest.raises(CristaeZooError, match="shape"):
        std_map([np.zeros((2, 2)), np.zeros((3, 2))])
    with pytest.raises(CristaeZooError, match="NaN"):
        std_map([np.zeros((2, 2)), np.full((2, 2), np.nan)])
    with pytest.raises(CristaeZooError):
        std_map(np.zeros((4, 4)))


def test_each_dihedral_transform_is_inverted_exactly(image):
    results = []
    for i in range(N_DIHEDRAL):
        t = dihedral_transform(image, i)
        assert np.array_equal(dihedral_inverse(t, i), image), i
        assert np.array_equal(dihedral_transform(dihedral_inverse(image, i), i), image), i
        results.append(t)
    assert np.array_equal(results[0], image)  # index 0 is the identity
    # the 8 transforms are the 8 distinct elements of the dihedral group
    expected = [np.rot90(image, k) for k in range(4)] + [np.rot90(np.fliplr(image), k) for k in range(4)]
    for t, e in zip(results, expected):
        assert np.array_equal(t, e)
    assert len({r.tobytes() + bytes(r.shape) for r in results}) == N_DIHEDRAL
    stack = np.stack([image, 2 * image])  # works on the last two axes of a stack
    assert np.array_equal(dihedral_inverse(dihedral_transform(stack, 5), 5), stack)
    with pytest.raises(ValueError):
        dihedral_transform(image, 8)


def test_tta_of_an_equivariant_function_equals_the_function(image):
    pointwise = lambda x: x**2 + 1  # noqa: E731  exactly equivariant
    mean, std = predict_with_uncertainty(pointwise, image, "tta")
    assert np.array_equal(mean, pointwise(image).astype(np.float32)) and np.array_equal(std, np.zeros_like(image))
    # an isotropic filter with symmetric borders is equivariant up to float rounding
    blur = lambda x: ndimage.gaussian_filter(x.astype(np.float64), 1.5, mode="mirror")  # noqa: E731
    mean, std = predict_with_uncertainty(blur, image, "tta")
    assert np.allclose(mean, blur(image), atol=1e-6) and std.max() < 1e-6
    assert all(np.allclose(p, blur(image), atol=1e-6) for p in tta_predictions(blur, image))


def test_tta_std_of_a_non_equivariant_function_is_known():
    n = 5
    x = np.zeros((n, n), np.float32)
    ramp = lambda z: z + np.arange(z.shape[1])[None, :]  # noqa: E731  adds the column index
    mean, std = predict_with_uncertainty(ramp, x, "tta")
    # mapped back, the 8 ramps run along +x, −x, +y, −y, twice each
    i, j = np.mgrid[0:n, 0:n]
    orientations = np.stack([j, n - 1 - j, i, n - 1 - i])
    assert np.allclose(mean, (n - 1) / 2)
    assert np.allclose(std, orientations.std(0))
    # fewer transforms: the first K of the 8
    mean2, std2 = predict_with_uncertainty(ramp, x, "tta", n_transforms=2)
    preds = tta_predictions(ramp, x, 2)
    assert np.allclose(mean2, np.mean(preds, 0)) and np.allclose(std2, np.std(preds, 0))


def test_model_ensembles(image):
    fns = [lambda x: x, lambda x: x + 2]
    mean, std = predict_with_uncertainty(fns, image, "models")
    assert np.allclose(mean, image + 1) and np.allclose(std, 1)
    mean, std = predict_ensemble(fns, image)
    assert np.allclose(std, 1)
    calls = []
    mean, std = predict_ensemble(fns, image, tta=8, progress=calls.append)
    assert len(calls) == 16 and np.allclose(mean, image + 1) and np.allclose(std, 1)


def test_prediction_errors(image):
    with pytest.raises(CristaeZooError, match="at least 2"):
        predict_with_uncertainty([lambda x: x], image, "models")
    with pytest.raises(CristaeZooError, match="2 to 8"):
        predict_with_uncertainty(lambda x: x, image, "tta", n_transforms=1)
    with pytest.raises(CristaeZooError, match="2D"):
        predict_with_uncertainty(lambda x: x, image[None], "tta")
    with pytest.raises(CristaeZooError, match="shape"):
        predict_with_uncertainty(lambda x: x[:-1], image, "tta")
    with pytest.raises(CristaeZooError, match="mode"):
        predict_with_uncertainty(lambda x: x, image, "dropout")  # type: ignore[arg-type]


def test_uncertainty_path_and_relative_map(tmp_path):
    assert uncertainty_path(tmp_path / "restored.tif") == tmp_path / "restored_std.tif"
    assert uncertainty_path("out/r.tiff").name == "r_std.tiff"
    mean = np.linspace(0, 10, 1000).reshape(10, 100)
    rel = relative_uncertainty(mean, np.ones_like(mean))
    span = np.percentile(mean, 99.8) - np.percentile(mean, 2)
    assert np.allclose(rel, 1 / span)
