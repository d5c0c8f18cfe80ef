"""Build D_synt from a folder of HR images: RL ground truth, degraded input, train/test split.

Layout written to DATA_DIR (raw counts; normalisation happens when patches are sampled and at inference):

    DATA_DIR/degradation.yaml
    DATA_DIR/{train,test}/input/NAME.tif     degraded input (integer-valued counts)
    DATA_DIR/{train,test}/gt/NAME.tif        RL-deconvolved HR image
    DATA_DIR/{train,test}/mito_mask/NAME.tif   exact masks, when the HR folder has them (simulated data)
    DATA_DIR/{train,test}/cristae_mask/NAME.tif
    DATA_DIR/rl_iterations.png               how the RL iteration count was chosen
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from cristae_zoo.config import DegradationConfig, PatchConfig
from cristae_zoo.data.degrade import degrade, percentile_normalize, richardson_lucy
from cristae_zoo.data.mask import mitochondria_mask
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.io import check_target, list_images, read_image_2d, refuse_overwriting_inputs, staged_dir, write_tiff

MASK_KINDS = ("mito_mask", "cristae_mask")
#: The file every data folder written by `prepare` holds: `--overwrite` replaces only folders that have it.
DATA_MARKER = "degradation.yaml"


def _mask_folders(hr_dir: Path) -> dict[str, Path]:
    """Masks written by `cristae-zoo simulate` live beside the `hr/` folder."""
    return {k: hr_dir.parent / k for k in MASK_KINDS if (hr_dir.parent / k).is_dir()}


def prepare_dataset(
    hr_dir: Path,
    out_dir: Path,
    config: DegradationConfig,
    min_size: int = 128,
    progress: Callable[[int], None] | None = None,
    *,
    overwrite: bool = False,
    finish: Callable[[Path], None] | None = None,
) -> dict[str, list[str]]:
    """Write the D_synt layout above; returns the names in each split.

    The folder is built beside `out_dir` and moved into place when complete (`io.staged_dir`): an existing data
    folder is refused unless `overwrite`, and then replaced as a whole, so no image of an earlier split can leak
    between train/ and test/. `finish(folder)` may add files (the RL figure) before the move. A folder without
    degradation.yaml (not written by prepare) is never replaced."""
    hr_dir, out_dir = Path(hr_dir), Path(out_dir)
    files = list_images(hr_dir)
    if out_dir.resolve() == hr_dir.resolve() or hr_dir.resolve() in out_dir.resolve().parents:
        raise CristaeZooError(f"{out_dir}: the output folder must not be inside the input folder {hr_dir}")
    inputs = [hr_dir, *_mask_folders(hr_dir).values()]
    check_target(out_dir, overwrite=overwrite, marker=DATA_MARKER, folder=True, inputs=inputs)  # before the slow part
    if len(files) <= config.n_test:
        raise CristaeZooError(f"{hr_dir}: {len(files)} images, need more than n_test={config.n_test} to train")
    images = {f.stem: read_image_2d(f, min_size=min_size) for f in files}  # validate everything before writing
    masks = _mask_folders(hr_dir)
    mask_images: dict[tuple[str, str], np.ndarray] = {}
    for kind, folder in masks.items():
        for f in files:
            if not (folder / f.name).is_file():
                raise CristaeZooError(f"{folder / f.name}: missing {kind} for {f.name}")
            mask_images[kind, f.stem] = _read_mask(folder / f.name, images[f.stem].shape)
    rng = np.random.default_rng(config.seed)
    names = sorted(images)
    order = [names[i] for i in rng.permutation(len(names))]
    splits = {"test": sorted(order[: config.n_test]), "train": sorted(order[config.n_test :])}
    outputs = [out_dir / s / "input" / f"{n}.tif" for s, ns in splits.items() for n in ns]
    refuse_overwriting_inputs(outputs, files)

    with staged_dir(out_dir, overwrite=overwrite, marker=DATA_MARKER, inputs=inputs) as staging:
        for split, split_names in splits.items():
            for name in split_names:
                hr = images[name]
                # Seed per image so that one image's input doesn't depend on which others are in the folder.
                image_rng = np.random.default_rng([config.seed, names.index(name)])
                write_tiff(staging / split / "input" / f"{name}.tif", degrade(hr, config.sigma_blur, config.sigma_noise, image_rng, config.hr_offset))
                write_tiff(staging / split / "gt" / f"{name}.tif", richardson_lucy(hr, config.rl_psf_sigma_px, config.rl_iterations))
                for kind in masks:
                    write_tiff(staging / split / kind / f"{name}.tif", mask_images[kind, name])
                if progress:
                    progress(1)
        config.to_yaml(staging / DATA_MARKER)
        if finish is not None:
            finish(staging)
    return splits


def _read_mask(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A 0/1 mask as uint8, checked against its HR image's shape: a mask of another image would silently mislead
    the `_mito`/`_cristae` metrics."""
    try:
        mask = np.squeeze(tifffile.imread(path))
    except Exception as err:  # tifffile raises many types for unreadable files
        raise CristaeZooError(f"{path}: cannot read as TIFF ({type(err).__name__}: {err})") from None
    if mask.shape != tuple(shape):
        raise CristaeZooError(f"{path}: mask of shape {mask.shape} does not match its HR image {tuple(shape)}")
    return (mask > 0).astype(np.uint8)


@dataclass
class Pair:
    name: str
    input: np.ndarray
    gt: np.ndarray
    mito_mask: np.ndarray | None = None
    cristae_mask: np.ndarray | None = None


def load_split(data_dir: Path, split: str, min_size: int = 1) -> list[Pair]:
    """Read one split of a prepared data folder, checking that inputs and GTs pair up."""
    data_dir = Path(data_dir)
    input_dir, gt_dir = data_dir / split / "input", data_dir / split / "gt"
    if not input_dir.is_dir():
        raise CristaeZooError(f"{input_dir}: not found; is {data_dir} a folder written by `cristae-zoo prepare`?")
    pairs = []
    for f in list_images(input_dir):
        gt_file = gt_dir / f.name
        if not gt_file.is_file():
            raise CristaeZooError(f"{f}: no matching ground truth {gt_file}")
        x, y = read_image_2d(f, min_size), read_image_2d(gt_file, min_size)
        if x.shape != y.shape:
            raise CristaeZooError(f"{f}: input {x.shape} and ground truth {gt_file.name} {y.shape} differ in shape")
        masks = {}
        for kind in MASK_KINDS:
            mf = data_dir / split / kind / f.name
            masks[kind] = _read_mask(mf, x.shape) > 0 if mf.is_file() else None
        pairs.append(Pair(f.stem, x, y, **masks))
    return pairs


def training_triplets(
    pairs: list[Pair], degradation: DegradationConfig, patches: PatchConfig
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(normalised input, normalised GT, mitochondria mask) for each training image.

    The mask comes from the paper's Anscombe/z-score procedure on the degraded *input*, the image with
    Poisson–Gaussian noise that the procedure is built for ("we sampled each input training image"). On the RL
    ground truth it fails: RL turns the background noise into sparse "night-sky" speckle whose pseudo-residual
    MAD is near zero, so the z-score flags speckle all over the background. The exact simulated masks are kept
    for evaluation only, so that the pipeline behaves as it would on real data."""
    out = []
    for p in pairs:
        mask = mitochondria_mask(p.input, patches.z_start, patches.z_step, patches.min_fraction, patches.median_size)
        out.append(
            (
                percentile_normalize(p.input, degradation.p_low, degradation.p_high),
                percentile_normalize(p.gt, degradation.p_low, degradation.p_high),
                mask,
            )
        )
    return out


def rl_iteration_sweep(
    hr: np.ndarray,
    mito: np.ndarray,
    cristae: np.ndarray | None,
    psf_sigma: float,
    iterations: tuple[int, ...] = (1, 3, 10, 30, 100),
) -> tuple[dict[int, np.ndarray], dict[str, list[float]]]:
    """RL of one HR image for several iteration counts, with two scores to trade off:
    cristae contrast (mean on cristae / mean on the rest of the mitochondria: sharpening) and background
    speckle (99.9th percentile of the background / mean on mitochondria: the "night-sky" artifact)."""
    from scipy import ndimage

    background = ~ndimage.binary_dilation(mito, iterations=5)
    results = {it: richardson_lucy(hr, psf_sigma, it) for it in iterations}
    scores: dict[str, list[float]] = {"background speckle": []}
    if cristae is not None:
        scores["cristae contrast"] = []
    for r in results.values():
        mito_mean = float(r[mito].mean())
        scores["background speckle"].append(float(np.percentile(r[background], 99.9)) / mito_mean)
        if cristae is not None:
            scores["cristae contrast"].append(float(r[cristae & mito].mean() / r[mito & ~cristae].mean()))
    ys, xs = np.nonzero(mito)
    cy, cx = int(np.median(ys)), int(np.median(xs))
    h, w = hr.shape
    y0, x0 = max(0, min(cy - 64, h - 128)), max(0, min(cx - 64, w - 128))
    crops = {0: hr[y0 : y0 + 128, x0 : x0 + 128], **{it: r[y0 : y0 + 128, x0 : x0 + 128] for it, r in results.items()}}
    return crops, scores
