"""Stability across trainings (paper: Results "Robustness and stability", Fig. 4g–l, Supplementary Fig. 2c–h).

Two groups of N trainings of the same configuration on the same data:

- `patches`: different patch draws (`patches.seed` = base + i; this also changes which augmented images are shrunk),
  the *same* weight initialisation and batch order;
- `init`: different weight initialisations (`init_seed` = base + i), the same patches and batch order.

Training i = 0 of both groups is the base configuration itself, trained once. Each model is evaluated on the test
split (metrics of `evaluate.py`); the table gives each training (mean ± sd over test images) and, per group, the
mean ± sd *between trainings* of the per-training means (Fig. 4l). Per test image, the N restorations (each fitted
to the GT by the same affine least-squares map as in evaluation, so they share the GT's percentile-normalised
scale) give a mean prediction and a pixel-wise standard deviation in GT units ("normalised sd", Fig. 4g), written
as TIFFs and a PNG with line profiles along a mitochondrion of all N trainings (Fig. 4h–k).

Output folder:

    OUT/stability.csv            one row per (group, training, test image): metrics
    OUT/summary.csv, summary.md  the table; spread of the restorations (sd in/out of mitochondria, correlation)
    OUT/GROUP/NAME_{mean,std}.tif, OUT/GROUP/NAME.png
    OUT/models/model-KEY/        the trained model folders (reused when the study is run again)
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cristae_zoo.config import TrainConfig
from cristae_zoo.data.degrade import percentile_normalize
from cristae_zoo.data.mask import mitochondria_mask
from cristae_zoo.data.prepare import load_split
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.evaluate import COLUMNS, evaluate
from cristae_zoo.io import atomic_write_text, write_tiff
from cristae_zoo.studies.common import (
    Progress,
    check_data,
    degradation_of,
    fmt,
    keras_model_restorer,
    markdown_table,
    short_config,
    train_cached,
    write_csv,
)
from cristae_zoo.studies.figures import plot_ensemble_image
from cristae_zoo.uncertainty import std_map

GROUPS = ("patches", "init")
GROUP_TITLES = {"patches": "different patch draws, same initialisation", "init": "different initialisations, same patches"}


def stability_configs(base: TrainConfig, n: int, groups: Sequence[str] = GROUPS) -> dict[str, list[tuple[str, TrainConfig]]]:
    """The N training configurations of each group (see the module docstring)."""
    if n < 2:
        raise CristaeZooError(f"a stability study needs at least 2 trainings per group, got {n}")
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise CristaeZooError(f"unknown stability group(s) {sorted(unknown)}; expected {list(GROUPS)}")
    init0 = base.init_seed if base.init_seed is not None else base.seed
    base = base.model_copy(update={"init_seed": init0})
    out: dict[str, list[tuple[str, TrainConfig]]] = {}
    if "patches" in groups:
        out["patches"] = [
            (f"patches #{i}", base.model_copy(update={"patches": base.patches.model_copy(update={"seed": base.patches.seed + i})}))
            for i in range(n)
        ]
    if "init" in groups:
        out["init"] = [(f"init #{i}", base.model_copy(update={"init_seed": init0 + i})) for i in range(n)]
    return out


@dataclass
class StabilityResult:
    output: Path
    table_md: str
    spread_md: str
    summary: dict[str, dict[str, dict[str, tuple[float, float]]]]  # group → row → metric → (mean, sd)
    spread: dict[str, dict[str, float]]
    train_seconds: float
    eval_seconds: float
    models: dict[str, list[Path]] = field(default_factory=dict)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    d = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / d) if d > 0 else float("nan")


def run_stability(
    base: TrainConfig,
    output: Path,
    n: int = 3,
    groups: Sequence[str] = GROUPS,
    cache_dir: Path | None = None,
    reference: Path | None = None,
    log: Progress | None = None,
    progress: Callable[[int], None] | None = None,
) -> StabilityResult:
    """Train (or reuse) the 2 groups of N models, evaluate them and write the output folder."""
    output = Path(output)
    check_data(base.data_dir)
    cache_dir = Path(cache_dir) if cache_dir else output / "models"
    configs = stability_configs(base, n, groups)
    degradation = degradation_of(base.data_dir)
    pairs = load_split(Path(base.data_dir), "test")
    if not pairs:
        raise CristaeZooError(f"{base.data_dir}: the test split is empty")

    train_seconds: dict[Path, float] = {}
    models: dict[str, list[Path]] = {}
    for group, items in configs.items():
        models[group] = []
        for label, cfg in items:
            folder, seconds, _ = train_cached(cfg, cache_dir, label, log)
            train_seconds[folder] = seconds
            models[group].append(folder)
            if progress:
                progress(1)

    t0 = time.perf_counter()
    rows: list[dict] = []
    summary: dict[str, dict[str, dict[str, tuple[float, float]]]] = {}
    spread: dict[str, dict[str, float]] = {}
    for group, items in configs.items():
        restorers = {}
        for (label, _), folder in zip(items, models[group]):
            restorers[label], _ = keras_model_restorer(folder, degradation)
        result = evaluate(pairs, restorers, degradation)
        rows += [{"group": group, **r} for r in result.rows]
        per_model = result.summary()
        between = {
            c: (float(np.nanmean([per_model[m][c][0] for m in per_model])), float(np.nanstd([per_model[m][c][0] for m in per_model])))
            for c in COLUMNS
        }
        summary[group] = {**per_model, f"mean of {len(items)} (sd between trainings)": between}

        # Pixel-wise spread of the N restorations of each test image.
        sd_mito, sd_cristae, sd_bg, corr = [], [], [], []
        group_dir = output / group
        for pair in pairs:
            preds = [result.restored[label][pair.name] for label, _ in items]
            mean, std = std_map(np.stack(preds))
            write_tiff(group_dir / f"{pair.name}_mean.tif", mean)
            write_tiff(group_dir / f"{pair.name}_std.tif", std)
            mito = pair.mito_mask if pair.mito_mask is not None else mitochondria_mask(pair.input)
            sd_mito.append(float(std[mito].mean()))
            sd_bg.append(float(std[~mito].mean()))
            if pair.cristae_mask is not None and pair.cristae_mask.any():
                sd_cristae.append(float(std[pair.cristae_mask].mean()))
            corr += [_pearson(p[mito], q[mito]) for p, q in itertools.combinations(preds, 2)]
            gt = percentile_normalize(pair.gt, degradation.p_low, degradation.p_high)
            shown = {"input": result_input(pair, degradation)} | {label: preds[i] for i, (label, _) in enumerate(items[:3])}
            plot_ensemble_image(
                shown, mean, std, mito, group_dir / f"{pair.name}.png",
                title=f"{pair.name}: {len(items)} trainings, {GROUP_TITLES[group]}",
                profiles={label: preds[i] for i, (label, _) in enumerate(items)} | {"GT": gt},
            )  # fmt: skip
        spread[group] = {
            "sd_mito": float(np.mean(sd_mito)),
            "sd_cristae": float(np.mean(sd_cristae)) if sd_cristae else float("nan"),
            "sd_background": float(np.mean(sd_bg)),
            "pairwise_r_mito": float(np.nanmean(corr)),
            "pairwise_r_mito_min": float(np.nanmin(corr)),
        }

    reference_md = ""
    if reference is not None:
        restore, ref_cfg = keras_model_restorer(Path(reference), degradation)
        ref = evaluate(pairs, {Path(reference).name: restore}, degradation).summary()
        summary["reference"] = ref
        reference_md = f"\nReference (shipped model `{reference}`: {short_config(ref_cfg)}):\n\n" + _table(ref)
    eval_seconds = time.perf_counter() - t0

    write_csv(output / "stability.csv", rows, ["group", "method", "image", *COLUMNS])
    flat = [
        {"group": g, "row": r, **{f"{c}_mean": v[c][0] for c in COLUMNS}, **{f"{c}_sd": v[c][1] for c in COLUMNS}}
        for g, table in summary.items() for r, v in table.items()
    ]  # fmt: skip
    write_csv(output / "summary.csv", flat)
    table_md = "".join(f"\n**{g}** ({GROUP_TITLES.get(g, g)}):\n\n" + _table(t) for g, t in summary.items() if g in configs)
    spread_md = markdown_table(
        ["group", "mean sd in mitochondria", "mean sd on cristae", "mean sd in background", "pairwise r in mitochondria (min)"],
        [
            [g, f"{s['sd_mito']:.4f}", f"{s['sd_cristae']:.4f}", f"{s['sd_background']:.4f}",
             f"{s['pairwise_r_mito']:.3f} ({s['pairwise_r_mito_min']:.3f})"]
            for g, s in spread.items()
        ],
    )  # fmt: skip
    total_train = sum(train_seconds.values())
    text = "\n".join(
        [
            "# Stability across trainings",
            "",
            f"{n} trainings per group of: {short_config(base)}. Data: `{base.data_dir}`, {len(pairs)} test images."
            f" {len(train_seconds)} distinct trainings (training #0 is shared by the groups),"
            f" {total_train / 60:.1f} min of training wall time in all; evaluation {eval_seconds / 60:.1f} min.",
            table_md,
            "Spread of the restorations (pixel-wise sd over the trainings, in units of the GT's 2–99.8 % range;"
            " mean over test images), and Pearson correlation of every pair of trainings inside mitochondria:",
            "",
            spread_md,
            reference_md,
        ]
    )
    atomic_write_text(output / "summary.md", text)
    return StabilityResult(output, table_md, spread_md, summary, spread, total_train, eval_seconds, models)


def result_input(pair, degradation) -> np.ndarray:
    return percentile_normalize(pair.input, degradation.p_low, degradation.p_high)


def _table(table: dict[str, dict[str, tuple[float, float]]]) -> str:
    return markdown_table(["training", *COLUMNS], [[r, *(fmt(*v[c], c) for c in COLUMNS)] for r, v in table.items()])
