"""Ablation (paper: Supplementary Fig. 4, Supplementary Note 2.3): what each part of DeepCristae contributes.

Starting from a base configuration (DeepCristae: SCoP loss, mitochondria-focused patch sampling, residual input),
one part is changed at a time, with everything else (data, patches where possible, seeds, budget) kept equal:

| variant | change |
|---|---|
| `full` | none (the base) |
| `mae` | MAE loss instead of SCoP (CARE's loss) |
| `dssim` | plain DSSIM loss, i.e. SCoP with γ = 1 everywhere (no mitochondria weighting) |
| `uniform` | patches drawn uniformly instead of on mitochondria |
| `no-residual` | no input-to-output addition |
| `care` | MAE + uniform sampling (the CARE baseline, both changes at once) |

Every variant is evaluated on the test split; one table (mean ± sd over test images), the Input row for
reference, and optionally already trained reference models (e.g. the shipped full-size models).
`OUT/variants/NAME` links to each variant's model folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cristae_zoo.config import TrainConfig
from cristae_zoo.data.prepare import load_split
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.evaluate import COLUMNS, evaluate, summary_markdown
from cristae_zoo.io import atomic_write_text
from cristae_zoo.studies.common import (
    Progress,
    check_data,
    degradation_of,
    keras_model_restorer,
    markdown_table,
    short_config,
    train_cached,
    write_csv,
)

VARIANTS: dict[str, str] = {
    "full": "SCoP + mito sampling + residual (DeepCristae)",
    "mae": "MAE loss",
    "dssim": "plain DSSIM loss",
    "uniform": "uniform sampling",
    "no-residual": "no residual input",
    "care": "MAE + uniform sampling (CARE)",
}
DEFAULT_VARIANTS = ("full", "mae", "dssim", "uniform", "no-residual")


def variant_config(base: TrainConfig, variant: str) -> TrainConfig:
    """`base` with one part changed (see VARIANTS). The initialisation seed is made explicit so that the `full`
    variant is the same training as the base of `study stability`."""
    init = base.init_seed if base.init_seed is not None else base.seed
    cfg = base.model_copy(update={"init_seed": init})
    if variant == "full":
        return cfg
    if variant == "mae":
        return cfg.model_copy(update={"loss": "mae"})
    if variant == "dssim":
        return cfg.model_copy(update={"loss": "dssim"})
    if variant == "uniform":
        return cfg.model_copy(update={"patches": cfg.patches.model_copy(update={"sampling": "uniform"})})
    if variant == "no-residual":
        return cfg.model_copy(update={"network": cfg.network.model_copy(update={"residual": False})})
    if variant == "care":
        return cfg.model_copy(update={"loss": "mae", "patches": cfg.patches.model_copy(update={"sampling": "uniform"})})
    raise CristaeZooError(f"unknown ablation variant {variant!r}; expected one of {', '.join(VARIANTS)}")


@dataclass
class AblationResult:
    output: Path
    table_md: str
    summary: dict[str, dict[str, tuple[float, float]]]
    train_seconds: float
    eval_seconds: float
    models: dict[str, Path]


def run_ablation(
    base: TrainConfig,
    output: Path,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    cache_dir: Path | None = None,
    references: Sequence[Path] = (),
    log: Progress | None = None,
    progress: Callable[[int], None] | None = None,
) -> AblationResult:
    from cristae_zoo.studies.figures import plot_bars

    output = Path(output)
    check_data(base.data_dir)
    if not variants:
        raise CristaeZooError("no ablation variants to train")
    configs = {v: variant_config(base, v) for v in variants}
    cache_dir = Path(cache_dir) if cache_dir else output / "models"
    models, seconds, reused = {}, {}, {}
    for v, cfg in configs.items():
        models[v], seconds[v], reused[v] = train_cached(cfg, cache_dir, f"ablation {v}", log)
        if progress:
            progress(1)

    # OUT/variants/NAME → the model folder, so that other commands can name the variants (e.g. `study hallucination`).
    for v, folder in models.items():
        link = output / "variants" / v
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        try:
            link.symlink_to(folder.resolve(), target_is_directory=True)
        except OSError:  # pragma: no cover - file systems without symlinks
            pass

    t0 = time.perf_counter()
    degradation = degradation_of(base.data_dir)
    pairs = load_split(Path(base.data_dir), "test")
    restorers = {"Input": lambda x: x}
    for v, folder in models.items():
        restorers[f"{v}: {VARIANTS[v]}"], _ = keras_model_restorer(folder, degradation)
    ref_lines = []
    for ref in references:
        restore, ref_cfg = keras_model_restorer(Path(ref), degradation)
        name = f"reference {Path(ref).name}"
        restorers[name] = restore
        ref_lines.append(f"- `{name}`: `{ref}`, {short_config(ref_cfg)} (trained separately, full size).")
    result = evaluate(pairs, restorers, degradation)
    summary = result.summary()
    eval_seconds = time.perf_counter() - t0

    write_csv(output / "ablation.csv", result.rows, ["method", "image", *COLUMNS])
    table_md = summary_markdown(summary)
    plot_bars(
        {k.split(":")[0]: v for k, v in summary.items()}, ("PSNR", "SSIM_mito", "SSIM_cristae"), output / "ablation.png",
        title="ablation (mean ± sd over test images)",
    )  # fmt: skip
    total = sum(s for v, s in seconds.items() if not reused[v])
    budget = markdown_table(
        ["variant", "training (min)", "model folder"],
        [[v, f"{seconds[v] / 60:.1f}" + (" (trained earlier, reused)" if reused[v] else ""), f"`{models[v]}`"] for v in models],
    )
    text = "\n".join(
        [
            "# Ablation",
            "",
            f"Base: {short_config(base)}; data `{base.data_dir}`, {len(pairs)} test images. One part changed per"
            f" variant, same seeds and budget. Training wall time of this run {total / 60:.1f} min (variants trained"
            f" earlier, e.g. the base by `study stability`, are reused); evaluation {eval_seconds / 60:.1f} min.",
            "",
            table_md,
            *ref_lines,
            "",
            budget,
        ]
    )
    atomic_write_text(output / "summary.md", text)
    return AblationResult(output, table_md, summary, total, eval_seconds, models)
