"""Hallucination check: how much cristae-like structure a model creates where there is none.

Test images are simulated and degraded exactly like the training inputs (σ_blur, σ_noise of the data set):

- `background`: no mitochondria at all, only the uniform background photons, detector offset and read noise;
- `haze`: only dim out-of-focus mitochondria (blurred tubes, no in-focus structure) on the background; their region
  (haze above 30 % of its maximum) is used as the "mitochondria" mask of this case;
- `tubes, no cristae`: in-focus mitochondria with their inner boundary membrane and matrix but no cristae
  (`cristae_intensity = 0`);
- `tubes, cristae` (control): the *same* mitochondria (same seed, same geometry) with their cristae.

Cristae are lamellae across the mitochondrion spaced 100–400 nm, i.e. periods of 4–16 px at 25 nm/px. Two measures,
on images percentile-normalised like the model input (2 / 99.8; the model output is on that scale already):

- **along-axis cristae-band energy inside mitochondria** (`A_mito`): the mean over the mitochondria (mask eroded by
  2 px) of Σ_s (s²·∂²I/∂t²)², where t is the local direction of the mitochondrion's axis (structure tensor of the
  mask) and s ∈ {0.9, 1.5, 2.3, 3.6} px are the Gaussian scales that respond best to periods of 4–16 px. The
  outline and the inner boundary membrane run *along* the axis and give almost nothing; lamellae *across* it, real or
  invented, give a lot. It is what a line profile along a mitochondrion shows as peaks.
- **cristae-band power outside mitochondria** (`P_out`): the mean square of the image band-passed to spatial
  frequencies 1/16–1/4 cycles/px (an FFT annulus), over pixels more than 5 px away from any in-focus mitochondrion
  (the whole image for `background` and `haze`); both ignore a 16 px border: structure (or noise) at cristae spacings where there is nothing.

Reported per case and source (input, GT, each model, and Richardson–Lucy as a conventional reference), plus ratios
to real structure: `A_mito` on tubes without cristae, and in out-of-focus haze, as a fraction of the GT's `A_mito`
on the same tubes *with* cristae (how much of a real cristae signal the model invents); `P_out` of an empty field as
a fraction of the GT's band power inside real mitochondria (`P_in`), and over the input's `P_out` (< 1: the model
removes noise). With `tta` (default), the test-time-augmentation sd of the first model is measured inside and
outside the region, to see whether the uncertainty map flags invented structure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from cristae_zoo.config import DegradationConfig, SimulationConfig
from cristae_zoo.data.degrade import degrade, percentile_normalize, richardson_lucy
from cristae_zoo.data.simulate import _out_of_focus, simulate_image
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.io import atomic_write_text
from cristae_zoo.studies.common import Progress, keras_model_restorer, markdown_table, write_csv
from cristae_zoo.uncertainty import predict_with_uncertainty

CASES = ("background", "haze", "tubes, no cristae", "tubes, cristae")
SCALES = (0.9, 1.5, 2.3, 3.6)
BAND = (1 / 16, 1 / 4)  # cycles / px: periods of 16 to 4 px (400 to 100 nm at 25 nm/px)
BORDER = 16


@dataclass
class Case:
    kind: str
    index: int
    input: np.ndarray  # degraded counts
    gt: np.ndarray  # RL of the HR image (the training target's construction)
    mito: np.ndarray | None  # exact in-focus mitochondria


def axis_direction(mito: np.ndarray, rho: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vector (t_y, t_x) along the local axis of the mitochondria: perpendicular to the dominant gradient
    orientation of the (smoothed) mask, from its structure tensor integrated over `rho` px."""
    m = ndimage.gaussian_filter(np.asarray(mito, np.float64), 1.0)
    gy, gx = np.gradient(m)
    jxx = ndimage.gaussian_filter(gx * gx, rho)
    jyy = ndimage.gaussian_filter(gy * gy, rho)
    jxy = ndimage.gaussian_filter(gx * gy, rho)
    across = 0.5 * np.arctan2(2 * jxy, jxx - jyy)  # angle of the dominant gradient, in (x, y)
    along = across + np.pi / 2
    return np.sin(along), np.cos(along)


def axis_band_energy(
    image: np.ndarray, mito: np.ndarray, scales: Sequence[float] = SCALES, erode: int = 2, region: np.ndarray | None = None
) -> float:
    """`A_mito` (see the module docstring) of a normalised image; `region` restricts the mitochondria pixels used."""
    core = ndimage.binary_erosion(mito, iterations=erode) if erode else np.asarray(mito, bool)
    if region is not None:
        core &= region
    if not core.any():
        return float("nan")
    ty, tx = axis_direction(mito)
    image = np.asarray(image, np.float64)
    energy = np.zeros(image.shape)
    for s in scales:
        iyy = ndimage.gaussian_filter(image, s, order=(2, 0))
        ixx = ndimage.gaussian_filter(image, s, order=(0, 2))
        ixy = ndimage.gaussian_filter(image, s, order=(1, 1))
        dtt = ty * ty * iyy + 2 * ty * tx * ixy + tx * tx * ixx
        energy += (s * s * dtt) ** 2
    return float(energy[core].mean())


def band_pass(image: np.ndarray, band: tuple[float, float] = BAND) -> np.ndarray:
    """The image restricted to spatial frequencies band[0] ≤ |f| ≤ band[1] (cycles/px), by an FFT annulus (the
    image is mirrored first so that its borders make no edges)."""
    image = np.asarray(image, np.float64)
    h, w = image.shape
    big = np.pad(image, ((0, h), (0, w)), mode="symmetric")
    fy = np.fft.fftfreq(2 * h)[:, None]
    fx = np.fft.fftfreq(2 * w)[None, :]
    f = np.hypot(fy, fx)
    keep = (f >= band[0]) & (f <= band[1])
    return np.real(np.fft.ifft2(np.fft.fft2(big) * keep))[:h, :w]


def band_power(image: np.ndarray, region: np.ndarray | None = None) -> float:
    b = band_pass(image)
    return float(np.mean(b[region] ** 2) if region is not None else np.mean(b**2))


def make_cases(
    n_images: int, size: int, degradation: DegradationConfig, seed: int = 1000, kinds: Sequence[str] = CASES
) -> list[Case]:
    """Simulate and degrade the hallucination test images (seeded; independent of the training data's seeds)."""
    unknown = set(kinds) - set(CASES)
    if unknown:
        raise CristaeZooError(f"unknown hallucination case(s) {sorted(unknown)}; expected {list(CASES)}")
    base = SimulationConfig(height=size, width=size, seed=seed)
    cases = []
    for i in range(n_images):
        rng = np.random.default_rng([seed, 7, i])
        for kind in kinds:
            if kind in ("background", "haze"):
                expected = np.full((size, size), base.background_photons)
                mito = None
                if kind == "haze":
                    haze_cfg = base.model_copy(update={"n_out_of_focus": (3, 5)})
                    haze = _out_of_focus(rng, haze_cfg)
                    expected = expected + rng.uniform(*base.peak_photons) * 2.5 * haze
                    # the out-of-focus tubes play the part of the mitochondria mask (where cristae could be invented)
                    mito = haze > 0.3 * haze.max() if haze.max() > 0 else None
                hr = rng.poisson(expected) + base.offset + rng.normal(0, base.read_noise, expected.shape)
                hr = np.clip(np.round(hr), 0, None).astype(np.float32)
            else:
                cfg = base if kind == "tubes, cristae" else base.model_copy(update={"cristae_intensity": (0.0, 0.0)})
                sim = simulate_image(cfg, i)
                hr, mito = sim.hr, sim.mito_mask
            noise_rng = np.random.default_rng([seed, 11, i, CASES.index(kind)])
            x = degrade(hr, degradation.sigma_blur, degradation.sigma_noise, noise_rng, base.offset)  # HR drawn here with base.offset
            gt = richardson_lucy(hr, degradation.rl_psf_sigma_px, degradation.rl_iterations)
            cases.append(Case(kind, i, x, gt, mito))
    return cases


@dataclass
class HallucinationResult:
    output: Path
    table_md: str
    ratios_md: str
    rows: list[dict]
    ratios: dict[str, dict[str, float]]
    seconds: float


def run_hallucination(
    model_dirs: Sequence[Path],
    output: Path,
    n_images: int = 3,
    size: int = 512,
    degradation: DegradationConfig | None = None,
    seed: int = 1000,
    include_rl: bool = True,
    tta: bool = True,
    log: Progress | None = None,
    progress: Callable[[int], None] | None = None,
) -> HallucinationResult:
    from cristae_zoo.studies.common import degradation_of
    from cristae_zoo.studies.figures import densest_window, plot_gallery

    t0 = time.perf_counter()
    output = Path(output)
    if not model_dirs:
        raise CristaeZooError("give at least one model folder")
    if degradation is None:
        from cristae_zoo.config import TrainConfig

        cfg = TrainConfig.from_yaml(Path(model_dirs[0]) / "config.yaml")
        degradation = degradation_of(cfg.data_dir)
    # name → (restorer, whether its output must be percentile-normalised: networks already output that scale)
    restorers: dict[str, tuple[Callable[[np.ndarray], np.ndarray], bool]] = {}
    for d in model_dirs:
        name = Path(d).name if Path(d).name not in restorers else str(d)
        restorers[name] = (keras_model_restorer(Path(d), degradation)[0], False)
    if include_rl:
        restorers["RL (20 it.)"] = (lambda x: richardson_lucy(x, degradation.sigma_blur, 20), True)
    if log:
        log(f"simulating {n_images} × {len(CASES)} test images of {size} px")
    cases = make_cases(n_images, size, degradation, seed)

    rows: list[dict] = []
    gallery: dict[str, dict[str, np.ndarray]] = {}
    for case in cases:
        norm = lambda im: percentile_normalize(im, degradation.p_low, degradation.p_high)  # noqa: E731
        sources = {"Input": norm(case.input)}
        for name, (restore, needs_norm) in restorers.items():
            out = np.asarray(restore(case.input), np.float32)
            sources[name] = norm(out) if needs_norm else out
        sources["GT"] = norm(case.gt)
        # Measures ignore a 16 px border (where padding, RL and the network's receptive field meet the image edge).
        inner = np.zeros(case.input.shape, bool)
        inner[BORDER:-BORDER, BORDER:-BORDER] = True
        outside = inner if case.mito is None else inner & ~ndimage.binary_dilation(case.mito, iterations=5)
        mito_in = None if case.mito is None else case.mito & inner
        # Would the uncertainty map warn? TTA sd (8 dihedral transforms) of the first model, in and out of the region.
        tta_sd = None
        if tta:
            first = next(iter(restorers))
            _, tta_sd = predict_with_uncertainty(restorers[first][0], case.input, "tta")
        for src, img in sources.items():
            with_sd = tta_sd is not None and src == first
            rows.append({
                "case": case.kind, "image": case.index, "source": src,
                "A_mito": axis_band_energy(img, case.mito, region=mito_in) if case.mito is not None else float("nan"),
                "P_in": band_power(img, mito_in) if mito_in is not None and mito_in.any() else float("nan"),
                "P_out": band_power(img, outside),
                "tta_sd_in": float(tta_sd[mito_in].mean()) if with_sd and mito_in is not None and mito_in.any() else float("nan"),
                "tta_sd_out": float(tta_sd[outside].mean()) if with_sd else float("nan"),
            })  # fmt: skip
        if case.index == 0:
            c = min(128, size)
            y0, x0 = densest_window(case.mito, c) if case.mito is not None else (0, 0)
            gallery[case.kind] = {k: v[y0 : y0 + c, x0 : x0 + c] for k, v in sources.items()}
        if progress:
            progress(1)

    def mean(case: str, src: str, key: str) -> float:
        vals = [r[key] for r in rows if r["case"] == case and r["source"] == src]
        return float(np.nanmean(vals)) if vals and np.isfinite(vals).any() else float("nan")

    sources = list(dict.fromkeys(r["source"] for r in rows))

    def cell(values: list[float]) -> str:
        a = np.array(values, float)
        return "n/a" if not np.isfinite(a).any() else f"{np.nanmean(a):.2e} ± {np.nanstd(a):.1e}"

    table_rows = []
    for kind in CASES:
        for src in sources:
            vals = [r for r in rows if r["case"] == kind and r["source"] == src]
            table_rows.append([kind, src, *(cell([r[k] for r in vals]) for k in ("A_mito", "P_in", "P_out"))])
    table_md = markdown_table(
        ["case", "source", "A_mito (along-axis, 4–16 px)", "P_in (band power inside)", "P_out (band power outside)"],
        table_rows,
    )

    real_a = mean("tubes, cristae", "GT", "A_mito")
    real_p = mean("tubes, cristae", "GT", "P_in")
    ratios: dict[str, dict[str, float]] = {}
    for src in sources:
        ratios[src] = {
            "cristae_invented_tubes": mean("tubes, no cristae", src, "A_mito") / real_a,
            "cristae_invented_haze": mean("haze", src, "A_mito") / real_a,
            "cristae_restored": mean("tubes, cristae", src, "A_mito") / real_a,
            "structure_in_empty_background": mean("background", src, "P_out") / real_p,
            "background_vs_input": mean("background", src, "P_out") / mean("background", "Input", "P_out"),
        }
    ratios_md = markdown_table(
        ["source", "cristae invented on tubes without cristae", "cristae invented in out-of-focus haze",
         "cristae restored where they exist", "structure in an empty field", "empty field: band power vs input"],
        [[s, *(f"{r[k]:.3f}" for k in ("cristae_invented_tubes", "cristae_invented_haze", "cristae_restored",
                                         "structure_in_empty_background", "background_vs_input"))]
         for s, r in ratios.items()],
    )  # fmt: skip
    ratios_md = (
        "The first three columns are along-axis cristae-band energies (`A_mito`) as a fraction of the GT's on real"
        " cristae (tubes with cristae); the fourth is the band power of an empty field (`P_out`, background case)"
        " as a fraction of the GT's band power inside real mitochondria (`P_in`); the last compares it with the"
        " input's.\n\n" + ratios_md
    )

    tta_md = ""
    if tta:
        first = next(iter(restorers))
        tta_md = (
            f"Test-time-augmentation sd of `{first}` (8 dihedral transforms, model-input scale), mean over images — would"
            " the uncertainty map warn where structure is invented?\n\n"
            + markdown_table(
                ["case", "sd inside the mitochondria / haze region", "sd outside"],
                [[k, f"{mean(k, first, 'tta_sd_in'):.4f}", f"{mean(k, first, 'tta_sd_out'):.4f}"] for k in CASES],
            )
        )

    output.mkdir(parents=True, exist_ok=True)
    write_csv(output / "hallucination.csv", rows, ["case", "image", "source", "A_mito", "P_in", "P_out", "tta_sd_in", "tta_sd_out"])
    plot_gallery(gallery, output / "hallucination.png", title="hallucination check: 128 px crops (each image its own contrast)")
    seconds = time.perf_counter() - t0
    text = "\n".join(
        [
            "# Hallucination check",
            "",
            f"{n_images} simulated {size}×{size} images per case, degraded like the training inputs (σ_blur"
            f" {degradation.sigma_blur:g}, σ_noise {degradation.sigma_noise:g}); models: "
            + ", ".join(f"`{d}`" for d in model_dirs) + f". {seconds / 60:.1f} min.",
            "",
            table_md,
            "Ratios (means over images):",
            "",
            ratios_md,
            tta_md,
        ]
    )
    atomic_write_text(output / "summary.md", text)
    return HallucinationResult(output, table_md, ratios_md + "\n" + tta_md, rows, ratios, seconds)
