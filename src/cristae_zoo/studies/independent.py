"""Validation on data we did not write (issue 14 item 4): STED images from an independent imaging model.

`pysted` (PyPI; Turcotte et al., the pySTED simulator) renders a STED acquisition of a *datamap* (fluorophores per
pixel) from the physics of the excitation and depletion beams, the fluorophore and a photon-counting detector, and
ships real STED datamaps of three structures: **tubulin** (filaments), **F-actin** (periodic rings and fibres) and
**PSD95** (synaptic clusters). None of them has cristae, so they are a direct test of invention: a restoration that
paints lamellae, rings or tubes onto them draws its training prior, not the sample. Neither the geometry (real
datamaps) nor the imaging (pysted's PSF, excitation by the depletion beam, detector) is ours.

Per image (seeded):

1. the datamap (values 0–1) is scaled to whole molecules so that the noise-free acquisition peaks (99.9th
   percentile) at a photon count drawn from `peak_photons` (the DeepCristae HR range, 40–120), and acquired by pysted
   twice: with its Poisson detector (the **HR** image) and without (the **truth**, noise-free). The datamap pixel
   (20 nm in pysted) is taken as 25 nm, the DeepCristae pixel, so the model sees its training pixel size (the
   structures are 25 % larger than in the sample; irrelevant to invention);
2. **the DeepCristae way** (`data/degrade.py`, the training data's construction): input = Gaussian blur σ_blur, then
   Poisson shot noise on the photons, a detector offset of 100 and Gaussian read noise σ_noise (as in the training
   inputs; pysted counts photons, with no offset); ground truth = Richardson–Lucy of the HR image (σ 0.9 px, 10
   iterations);
3. each source (the input, 2D median 5 × 5, RL 20 iterations with the known blur, every model package through
   `cristae_zoo.load(package).predict(x, rescale=1)`) is mapped onto the percentile-normalised GT by the affine
   least-squares fit of `evaluate.py` and scored: NRMSE, PSNR, SSIM on the whole image and on the structure
   (`_struct`: pixels where the noise-free truth, smoothed by 1 px, exceeds 10 % of its 99.9th percentile).

**Invented structure**: high-pass energy E(x, R) = mean over region R of (x − G_4px * x)², on images
percentile-normalised (2 / 99.8) like the model's input (not on the fitted ones: the least-squares fit shrinks
whatever does not correlate with the GT, invented structure included).
`empty` = pixels more than 4 px from any structure (and 16 px from the border); `struct` = the structure pixels. We
report E(source, empty) / E(GT, struct): structure (or noise) drawn where there is nothing, as a fraction of the
ground truth's own structure, beside the same ratio for the GT itself (its RL speckle) and for the noise-free truth
(≈ 0): a restoration above the GT's level invents more than the ground-truth construction does. Invention *on* the
structure (a tube outline and a ladder of cristae drawn onto a bundle of filaments) is not in empty regions, so in
the structure we report E(source, struct) / E(GT, struct) and the Pearson r between the high-pass parts of the source
and of the noise-free truth: restored detail raises both; invented detail raises the energy without the correlation.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator
from scipy import ndimage

from cristae_zoo.config import YamlModel
from cristae_zoo.data.degrade import degrade, percentile_normalize, richardson_lucy
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.evaluate import fit_affine, image_metrics, median_baseline, rl_baseline
from cristae_zoo.io import atomic_write_text, write_csv
from cristae_zoo.studies.common import Progress, markdown_table

DATASETS = ("tubulin", "factin", "psd95")
BORDER = 16
HIGH_PASS_SIGMA = 4.0  # px: keeps periods below ~25 px (cristae spacings, filaments, noise), drops the tube scale
METRIC_COLUMNS = ("NRMSE", "PSNR", "SSIM", "NRMSE_struct", "PSNR_struct", "SSIM_struct")
INVENTION_COLUMNS = ("E_empty", "E_struct", "invented", "struct_hp_vs_gt", "struct_hp_r_truth")


class IndependentConfig(YamlModel):
    """How the independent data are rendered and degraded (saved as `independent.yaml` beside the results)."""

    datasets: list[str] = Field(list(DATASETS), description="pysted's datamap sets to use")
    images_per_dataset: int = Field(6, ge=1, description="pysted ships 6 or 7 datamaps per structure")
    pixel_size_nm: float = Field(25.0, gt=0, description="pixel size given to pysted for datamap and acquisition")
    peak_photons: tuple[float, float] = Field((40.0, 120.0), description="noise-free 99.9th percentile, per image")
    p_ex_w: float = Field(1e-6, gt=0, description="excitation power (W)")
    p_sted_w: float = Field(30e-3, ge=0, description="depletion power (W): 30 mW ≈ 45 nm FWHM with these beams")
    dwell_time_s: float = Field(10e-6, gt=0)
    sigma_blur: float = Field(3.25, ge=0, description="DeepCristae input blur (px)")
    sigma_noise: float = Field(4.0, ge=0, description="DeepCristae input read noise (counts)")
    offset: float = Field(
        100.0, ge=0, description="detector offset put under pysted's photon counts before degrading, as in the training "
        "data (without one the read noise of an empty pixel would be clipped at zero)",
    )
    rl_psf_sigma_px: float = Field(0.9, gt=0, description="GT: RL of the HR image with this Gaussian PSF")
    rl_iterations: int = Field(10, ge=1)
    seed: int = 0

    @field_validator("datasets")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [d for d in value if d not in DATASETS]
        if unknown or not value:
            raise ValueError(f"datasets: expected some of {list(DATASETS)}, got {value}")
        return value

    @field_validator("peak_photons")
    @classmethod
    def _positive(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError(f"peak_photons: expected 0 < low <= high, got {list(value)}")
        return value

    def key(self) -> str:
        return hashlib.sha1(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class IndependentImage:
    dataset: str
    index: int
    hr: np.ndarray  # photon counts (pysted, with detector noise)
    truth: np.ndarray  # the same acquisition without noise
    input: np.ndarray  # degraded the DeepCristae way
    gt: np.ndarray  # RL of hr

    @property
    def name(self) -> str:
        return f"{self.dataset}_{self.index}"


#: datamap, molecules scale, seed, whether to add detector noise -> acquisition (photons)
Renderer = Callable[[np.ndarray, float, int, bool], np.ndarray]


def load_datamaps(dataset: str) -> list[np.ndarray]:
    """pysted's shipped datamaps of one structure (float, 0–1), in a fixed order."""
    _require_pysted()
    from pysted.data.loader import DatamapLoader

    loader = DatamapLoader(dataset)
    order = sorted(range(len(loader)), key=lambda i: Path(loader.datamaps[i]).name)
    return [np.asarray(loader[i], np.float64) for i in order]


def _require_pysted() -> None:
    try:
        import pysted  # noqa: F401
    except ImportError:
        raise CristaeZooError(
            "the independent study needs pysted (the STED imaging model it renders with): pip install 'cristae-zoo[validation]'"
        ) from None


def pysted_renderer(config: IndependentConfig) -> Renderer:
    """A pysted STED microscope (pysted's example EGFP-like fluorophore, 488 nm excitation, 575 nm donut)."""
    _require_pysted()
    import contextlib
    import io

    from pysted import base

    fluo = {
        "lambda_": 535e-9, "qy": 0.6, "sigma_abs": {488: 1.15e-20, 575: 6e-21},
        "sigma_ste": {560: 1.2e-20, 575: 6.0e-21, 580: 5.0e-21}, "sigma_tri": 1e-21, "tau": 3e-09,
        "tau_vib": 1.0e-12, "tau_tri": 5e-6, "phy_react": {488: 1e-8, 575: 1e-12}, "k_isc": 0.26e6,
    }  # fmt: skip
    px = config.pixel_size_nm * 1e-9
    microscopes = {
        noise: base.Microscope(
            base.GaussianBeam(488e-9), base.DonutBeam(575e-9, zero_residual=0), base.Detector(noise=noise, background=0),
            base.Objective(), base.Fluorescence(**fluo),
        )
        for noise in (True, False)
    }  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # pysted prints its progress
        i_ex = {noise: m.cache(px)[0] for noise, m in microscopes.items()}

    def render(datamap: np.ndarray, scale: float, seed: int, noise: bool) -> np.ndarray:
        molecules = np.round(np.asarray(datamap, np.float64) * scale)
        dmap = base.Datamap(molecules, px)
        dmap.set_roi(i_ex[noise], "max")
        with contextlib.redirect_stdout(io.StringIO()):
            acq, _, _ = microscopes[noise].get_signal_and_bleach(
                dmap, px, config.dwell_time_s, config.p_ex_w, config.p_sted_w, bleach=False, update=False, seed=seed
            )
        return np.asarray(acq, np.float32)

    return render


def make_images(
    config: IndependentConfig,
    renderer: Renderer | None = None,
    datamaps: dict[str, list[np.ndarray]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[IndependentImage]:
    """Render, degrade and deconvolve every image (see the module docstring). `renderer`/`datamaps` default to
    pysted's microscope and datamaps (tests pass their own)."""
    renderer = renderer or pysted_renderer(config)
    images = []
    for d, dataset in enumerate(config.datasets):
        maps = (datamaps or {}).get(dataset) or load_datamaps(dataset)
        for i, datamap in enumerate(maps[: config.images_per_dataset]):
            rng = np.random.default_rng([config.seed, d, i])
            peak = rng.uniform(*config.peak_photons)
            # The acquisition is linear in the molecule count (no bleaching, no saturation at these powers): render
            # noise-free at a probe scale, then set the scale that gives the drawn peak.
            probe = 100.0
            p = float(np.percentile(renderer(datamap, probe, 0, False), 99.9))
            if p <= 0:
                raise CristaeZooError(f"{dataset} datamap {i}: the noise-free acquisition is empty")
            scale = probe * peak / p
            seed = int(rng.integers(2**31 - 1))
            hr = renderer(datamap, scale, seed, True)
            truth = renderer(datamap, scale, seed, False)
            x = degrade(hr + config.offset, config.sigma_blur, config.sigma_noise, rng, offset=config.offset)
            gt = richardson_lucy(hr, config.rl_psf_sigma_px, config.rl_iterations, background=0.0)
            images.append(IndependentImage(dataset, i, hr, truth, x, gt))
            if progress:
                progress(1)
    return images


def regions(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(structure, empty) masks from the noise-free truth; both exclude a 16 px border."""
    smooth = ndimage.gaussian_filter(np.asarray(truth, np.float64), 1.0)
    structure = smooth > 0.1 * max(float(np.percentile(smooth, 99.9)), 1e-12)
    inner = np.zeros(truth.shape, bool)
    inner[BORDER:-BORDER, BORDER:-BORDER] = True
    empty = ~ndimage.binary_dilation(structure, iterations=4) & inner
    return structure & inner, empty


def high_pass(image: np.ndarray) -> np.ndarray:
    x = np.asarray(image, np.float64)
    return x - ndimage.gaussian_filter(x, HIGH_PASS_SIGMA, mode="reflect")


def high_pass_energy(image: np.ndarray, region: np.ndarray) -> float:
    if not region.any():
        return float("nan")
    return float(np.mean(high_pass(image)[region] ** 2))


def high_pass_agreement(image: np.ndarray, truth: np.ndarray, region: np.ndarray) -> float:
    """Pearson r of the high-pass parts inside `region`: fine structure where the truth has it (1) or elsewhere (0)."""
    if region.sum() < 3:
        return float("nan")
    a, b = high_pass(image)[region], high_pass(truth)[region]
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def score_images(
    images: Sequence[IndependentImage],
    restorers: dict[str, Callable[[np.ndarray], np.ndarray]],
    progress: Callable[[int], None] | None = None,
) -> tuple[list[dict], dict[str, dict[str, np.ndarray]]]:
    """One row per (image, source): the metrics and the invented-structure energies; and the fitted images."""
    rows: list[dict] = []
    fitted: dict[str, dict[str, np.ndarray]] = {}
    for im in images:
        gt = percentile_normalize(im.gt)
        structure, empty = regions(im.truth)
        sources = {name: np.asarray(restore(im.input), np.float32) for name, restore in restorers.items()}
        sources["GT"] = im.gt
        sources["truth (noise-free)"] = im.truth
        fitted[im.name] = {name: fit_affine(out, gt) for name, out in sources.items()}
        fitted[im.name]["GT"] = gt
        # Invention is measured on percentile-normalised images (as the model sees them), not on the fitted ones: the
        # least-squares fit shrinks whatever does not correlate with the GT, invented structure included.
        norm = {name: percentile_normalize(out) for name, out in sources.items()}
        e_struct_gt = high_pass_energy(norm["GT"], structure)
        for name, img in fitted[im.name].items():
            with warnings.catch_warnings(), np.errstate(divide="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)  # the GT against itself: PSNR is infinite
                m = image_metrics(gt, img, structure, None)
            row = {"dataset": im.dataset, "image": im.name, "source": name}
            row.update({k: m[k.replace("_struct", "_mito")] for k in METRIC_COLUMNS})
            row["E_empty"] = high_pass_energy(norm[name], empty)
            row["E_struct"] = high_pass_energy(norm[name], structure)
            row["invented"] = row["E_empty"] / e_struct_gt
            # Inside the structure, invention is fine detail that is not the truth's: more high-pass energy than the
            # GT's, and a low correlation of the high-pass parts with the noise-free truth's.
            row["struct_hp_vs_gt"] = row["E_struct"] / e_struct_gt
            row["struct_hp_r_truth"] = high_pass_agreement(img, im.truth, structure)
            row["empty_fraction"] = float(empty.mean())
            rows.append(row)
        if progress:
            progress(1)
    return rows, fitted


@dataclass
class IndependentResult:
    output: Path
    summary_md: str
    rows: list[dict]
    seconds: float


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, float)
    a = a[np.isfinite(a)]
    return (float(a.mean()), float(a.std())) if a.size else (float("nan"), float("nan"))


def summary_tables(rows: list[dict], datasets: Sequence[str]) -> str:
    """Per dataset: mean ± sd over its images of every metric, per source, best of the restorations in bold."""
    parts = []
    sources = list(dict.fromkeys(r["source"] for r in rows))
    for dataset in datasets:
        sel = [r for r in rows if r["dataset"] == dataset]
        if not sel:
            continue
        n = len({r["image"] for r in sel})
        extra = ("invented", "struct_hp_vs_gt", "struct_hp_r_truth")
        stats = {s: {c: _mean_sd([r[c] for r in sel if r["source"] == s]) for c in (*METRIC_COLUMNS, *extra)} for s in sources}
        contenders = [s for s in sources if s not in ("GT", "truth (noise-free)")]
        best = {}
        for c in METRIC_COLUMNS:
            vals = {s: stats[s][c][0] for s in contenders if np.isfinite(stats[s][c][0])}
            if vals:
                best[c] = (min if c.startswith("NRMSE") else max)(vals, key=vals.get)
        table_rows = []
        for s in sources:
            cells = []
            for c in METRIC_COLUMNS:
                m, sd = stats[s][c]
                text = "n/a" if not np.isfinite(m) else f"{m:.3f} ± {sd:.3f}" if not c.startswith("PSNR") else f"{m:.2f} ± {sd:.2f}"
                cells.append(f"**{text}**" if best.get(c) == s else text)
            for c in extra:
                m, sd = stats[s][c]
                cells.append("n/a" if not np.isfinite(m) else f"{m:.3f} ± {sd:.3f}")
            table_rows.append([s, *cells])
        empty = np.mean([r["empty_fraction"] for r in sel])
        parts.append(
            f"### {dataset} ({n} images, {100 * empty:.0f} % of the pixels empty)\n\n"
            + markdown_table(
                ["source", *METRIC_COLUMNS, "empty: HP energy / GT's in structure", "structure: HP energy / GT's",
                 "structure: HP r with truth"], table_rows,
            )  # fmt: skip
        )
    return "\n".join(parts)


def run_independent(
    packages: Sequence[str | Path],
    output: Path,
    config: IndependentConfig | None = None,
    names: Sequence[str] | None = None,
    renderer: Renderer | None = None,
    datamaps: dict[str, list[np.ndarray]] | None = None,
    log: Progress | None = None,
    progress: Callable[[int], None] | None = None,
) -> IndependentResult:
    """Render (or reuse) the independent images, score the baselines and every package, write `independent.csv`,
    `independent.png`, `summary.md` and `independent.yaml` into `output`."""
    from cristae_zoo.api import load  # = cristae_zoo.load, the public Python API
    from cristae_zoo.studies.figures import densest_window, plot_gallery

    t0 = time.perf_counter()
    config = config or IndependentConfig()
    output = Path(output)
    names = list(names) if names else [Path(str(p)).name or str(p) for p in packages]
    if len(names) != len(packages) or len(set(names)) != len(names):
        raise CristaeZooError(f"give one distinct name per package, got {names} for {len(packages)} package(s)")
    models = [load(str(p)) for p in packages]  # fail early, before rendering, on a bad package

    cache = output / f"images-{config.key()}.npz"
    if renderer is None and datamaps is None and cache.is_file():
        if log:
            log(f"reusing the rendered images in {cache}")
        with np.load(cache) as z:
            images = [
                IndependentImage(str(z[f"{k}_dataset"]), int(z[f"{k}_index"]), z[f"{k}_hr"], z[f"{k}_truth"], z[f"{k}_input"], z[f"{k}_gt"])
                for k in sorted({f.rsplit("_", 1)[0] for f in z.files if f.endswith("_hr")}, key=lambda s: int(s[1:]))
            ]  # fmt: skip
    else:
        if log:
            log(f"rendering {len(config.datasets)} × {config.images_per_dataset} pysted STED images")
        images = make_images(config, renderer, datamaps, progress)
        if renderer is None and datamaps is None:
            output.mkdir(parents=True, exist_ok=True)
            arrays = {}
            for k, im in enumerate(images):
                arrays.update({f"i{k}_dataset": np.array(im.dataset), f"i{k}_index": np.array(im.index), f"i{k}_hr": im.hr,
                               f"i{k}_truth": im.truth, f"i{k}_input": im.input, f"i{k}_gt": im.gt})  # fmt: skip
            np.savez_compressed(cache, **arrays)

    restorers: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "Input": lambda x: x,
        "Median 2D": median_baseline(),
        "RL (20 it.)": rl_baseline(config.sigma_blur),
    }
    for name, model in zip(names, models, strict=True):
        restorers[name] = lambda x, m=model: np.asarray(m.predict(x, rescale=1), np.float32)
    rows, fitted = score_images(images, restorers, progress)
    for m in models:
        m.close()

    gallery = {}
    for dataset in config.datasets:
        first = next((im for im in images if im.dataset == dataset), None)
        if first is None:
            continue
        c = min(112, *first.truth.shape)
        structure, _ = regions(first.truth)
        y0, x0 = densest_window(structure, c)
        gallery[dataset] = {k: v[y0 : y0 + c, x0 : x0 + c] for k, v in fitted[first.name].items()}

    output.mkdir(parents=True, exist_ok=True)
    write_csv(output / "independent.csv", rows, ["dataset", "image", "source", *METRIC_COLUMNS, *INVENTION_COLUMNS, "empty_fraction"])
    plot_gallery(gallery, output / "independent.png", title="pysted STED images degraded the DeepCristae way (crops, each its own contrast)")
    config.to_yaml(output / "independent.yaml")
    seconds = time.perf_counter() - t0
    tables = summary_tables(rows, config.datasets)
    text = "\n".join([
        "# Independent validation: pysted STED images of structures without cristae",
        "",
        f"{len(images)} images ({', '.join(config.datasets)}), σ_blur {config.sigma_blur:g}, σ_noise {config.sigma_noise:g},"
        f" peak photons {config.peak_photons[0]:g}–{config.peak_photons[1]:g}; models: "
        + ", ".join(f"`{n}` ({p})" for n, p in zip(names, packages, strict=True)) + f". {seconds / 60:.1f} min.",
        "",
        "Mean ± sd over the images of each dataset; every source affinely fitted to the percentile-normalised GT"
        " (RL of the HR image). `_struct`: pixels of the structure. High-pass (HP: image − its Gaussian blur, σ 4 px)"
        " energy in empty regions as a fraction of the GT's in the structure (the GT's own row is its RL speckle);"
        " in the structure, as a fraction of the GT's, and the Pearson r of the HP part with the noise-free truth's"
        " (fine detail where the truth has it: high r; invented detail: energy without correlation).",
        "",
        tables,
    ])  # fmt: skip
    atomic_write_text(output / "summary.md", text)
    return IndependentResult(output, tables, rows, seconds)
