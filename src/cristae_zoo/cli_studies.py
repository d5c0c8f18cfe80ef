"""`cristae-zoo study …`: the studies of trust (stability, limits of use, ablation, hallucination)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from cristae_zoo.errors import CristaeZooError

if TYPE_CHECKING:  # the pydantic configs are built only by the commands that use them (start-up of every command)
    from cristae_zoo.config import TrainConfig

study_app = typer.Typer(
    name="study",
    help="Studies of trust: stability across trainings, limits of use, ablation, hallucination check, TTA uncertainty.",
    no_args_is_help=True,
)

# Defaults of the trainings in `stability` and `ablation`: a smaller network and a shorter training than the shipped
# model (32 filters, 12 × 50 steps of 16 patches), so that the 9 trainings of `stability -n 3` + `ablation` fit in
# ~45 min on 2 CPU cores (docs/trust.md). Raise them on a GPU.
STUDY_FILTERS = 16
STUDY_EPOCHS = 4
STUDY_STEPS = 20

DataOpt = Annotated[Path, typer.Option("--data", help="data folder written by `prepare`")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="base TrainConfig YAML; the flags below override it")]
FiltersOpt = Annotated[int, typer.Option(help="first-level filters of the trained networks (shipped model: 32)")]
DepthOpt = Annotated[int, typer.Option(help="U-Net depth")]
EpochsOpt = Annotated[int, typer.Option(help="epochs per training")]
StepsOpt = Annotated[int, typer.Option(help="batches per epoch")]
BatchOpt = Annotated[int, typer.Option(help="batch size")]
SeedOpt = Annotated[int, typer.Option(help="base seed (patches, shuffling, initialisation)")]
CacheOpt = Annotated[Optional[Path], typer.Option("--cache", help="folder of trained models shared between studies (default: OUTPUT/models)")]


def _split(text: str | None, cast=str) -> list:
    if text is None:
        return []
    try:
        return [cast(t.strip()) for t in text.split(",") if t.strip()]
    except ValueError:
        raise CristaeZooError(f"invalid list {text!r}: expected comma-separated values") from None


def _base_config(config, data, filters, depth, epochs, steps, batch, seed) -> TrainConfig:
    from cristae_zoo.cli_common import override as _override
    from cristae_zoo.config import TrainConfig

    cfg = TrainConfig.from_yaml(config) if config else TrainConfig()
    net = _override(cfg.network, filters=filters, depth=depth)
    pat = _override(cfg.patches, seed=seed)
    return _override(
        cfg, data_dir=data, epochs=epochs, steps_per_epoch=steps, batch_size=batch, seed=seed,
        network=net.model_dump(), patches=pat.model_dump(),
    )  # fmt: skip


def _log(message: str) -> None:
    from cristae_zoo.cli_common import console

    console.print(message, highlight=False)


@study_app.command()
def stability(
    data: DataOpt = Path("runs/data"),
    output: Annotated[Path, typer.Option("--output", "-o", help="study folder")] = Path("runs/studies/stability"),
    n: Annotated[int, typer.Option("-n", help="trainings per group (paper: 10)")] = 3,
    groups: Annotated[str, typer.Option(help="comma-separated: patches (different patch draws), init (different initialisations)")] = "patches,init",
    config: ConfigOpt = None,
    filters: FiltersOpt = STUDY_FILTERS,
    depth: DepthOpt = 3,
    epochs: EpochsOpt = STUDY_EPOCHS,
    steps_per_epoch: StepsOpt = STUDY_STEPS,
    batch_size: BatchOpt = 16,
    seed: SeedOpt = 0,
    cache: CacheOpt = None,
    reference: Annotated[Optional[Path], typer.Option(help="an already trained model folder to add to the table (e.g. the shipped one)")] = None,
) -> None:
    """N trainings with different patch draws (same initialisation) and N with different initialisations: the
    metrics of each, mean ± sd between trainings, and per test image the mean prediction and the pixel-wise
    normalised standard-deviation map (Fig. 4g–l)."""
    from cristae_zoo.cli_common import progress_bar
    from cristae_zoo.studies.stability import run_stability

    base = _base_config(config, data, filters, depth, epochs, steps_per_epoch, batch_size, seed)
    group_list = _split(groups)
    with progress_bar("stability: trainings", n * len(group_list)) as advance:
        result = run_stability(base, output, n, group_list, cache, reference, log=_log, progress=advance)
    typer.echo(result.table_md + "\n" + result.spread_md)
    _log(f"{result.train_seconds / 60:.1f} min of training; wrote {output / 'summary.md'}, per-image maps and PNGs in {output}")


@study_app.command()
def limits(
    model_dir: Annotated[Path, typer.Argument(help="model folder written by `train` (e.g. runs/deepcristae)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="study folder")] = Path("runs/studies/limits"),
    data: Annotated[Optional[Path], typer.Option(help="data folder (default: the model's data_dir)")] = None,
    hr: Annotated[Optional[Path], typer.Option(help="HR folder the data was prepared from (for the blur and noise sweeps)")] = None,
    widths: Annotated[str, typer.Option(help="mean mitochondrion widths (px), comma-separated")] = "6,8.4,10.8,13.2,15.6,18,20.4,22.8,25.2,27.6,30",
    blurs: Annotated[str, typer.Option(help="σ_blur values (px), comma-separated")] = "1.5,2,2.5,3.25,4,4.5,5,6",
    noises: Annotated[str, typer.Option(help="σ_noise values, comma-separated")] = "0,2,4,6,8,12,16,24",
    tolerance: Annotated[float, typer.Option(help="relative drop of SSIM_mito / SSIM_cristae allowed in the safe range")] = 0.10,
    write_conditions: Annotated[bool, typer.Option(help="write MODEL_DIR/conditions_of_use.md (used by `package`)")] = True,
) -> None:
    """The model on test images rescaled to other mitochondrion widths and re-degraded with other blur and noise:
    metric-vs-parameter plots with the training condition marked, and the safe range (conditions of use)."""
    from cristae_zoo.cli_common import progress_bar
    from cristae_zoo.studies.limits import run_limits

    w, b, nz = _split(widths, float), _split(blurs, float), _split(noises, float)
    with progress_bar("limits: conditions", None) as advance:
        result = run_limits(model_dir, output, data, hr, w, b if hr else (), nz if hr else (), tolerance, write_conditions, log=None, progress=advance)
    typer.echo(result.summary_md + "\n" + result.conditions_md)
    where = f" and {model_dir / 'conditions_of_use.md'}" if write_conditions else ""
    _log(f"wrote {output / 'summary.md'}, {output / 'limits.png'}{where}")


@study_app.command()
def ablation(
    data: DataOpt = Path("runs/data"),
    output: Annotated[Path, typer.Option("--output", "-o", help="study folder")] = Path("runs/studies/ablation"),
    variants: Annotated[str, typer.Option(help="comma-separated: full, mae, dssim, uniform, no-residual, care")] = "full,mae,dssim,uniform,no-residual",
    config: ConfigOpt = None,
    filters: FiltersOpt = STUDY_FILTERS,
    depth: DepthOpt = 3,
    epochs: EpochsOpt = STUDY_EPOCHS,
    steps_per_epoch: StepsOpt = STUDY_STEPS,
    batch_size: BatchOpt = 16,
    seed: SeedOpt = 0,
    cache: CacheOpt = None,
    reference: Annotated[Optional[list[Path]], typer.Option(help="already trained model folders to add to the table (repeatable)")] = None,
) -> None:
    """SCoP vs MAE vs plain DSSIM, mitochondria-focused vs uniform sampling, with vs without the residual input:
    one training per variant, one table."""
    from cristae_zoo.cli_common import progress_bar
    from cristae_zoo.studies.ablation import run_ablation

    base = _base_config(config, data, filters, depth, epochs, steps_per_epoch, batch_size, seed)
    names = _split(variants)
    with progress_bar("ablation: trainings", len(names)) as advance:
        result = run_ablation(base, output, names, cache, reference or [], log=_log, progress=advance)
    typer.echo(result.table_md)
    _log(f"{result.train_seconds / 60:.1f} min of training; wrote {output / 'summary.md'} and {output / 'ablation.png'}")


@study_app.command()
def hallucination(
    model_dirs: Annotated[list[Path], typer.Argument(help="one or more model folders written by `train`")],
    output: Annotated[Path, typer.Option("--output", "-o", help="study folder")] = Path("runs/studies/hallucination"),
    n_images: Annotated[int, typer.Option(help="simulated images per case")] = 3,
    size: Annotated[int, typer.Option(help="image size (px)")] = 512,
    seed: Annotated[int, typer.Option(help="seed of the simulated images")] = 1000,
    rl: Annotated[bool, typer.Option(help="also measure Richardson–Lucy (20 iterations) as a reference")] = True,
    tta: Annotated[bool, typer.Option(help="also measure the first model's test-time-augmentation sd (uncertainty map)")] = True,
) -> None:
    """Cristae-like structure created on pure background, out-of-focus haze and tubes without cristae, vs the input
    and the same tubes with cristae."""
    from cristae_zoo.cli_common import progress_bar
    from cristae_zoo.studies.hallucination import CASES, run_hallucination

    if n_images < 1 or size < 64:
        raise CristaeZooError("--n-images must be ≥ 1 and --size ≥ 64")
    with progress_bar("hallucination: images", n_images * len(CASES)) as advance:
        result = run_hallucination(
            model_dirs, output, n_images, size, seed=seed, include_rl=rl, tta=tta, log=_log, progress=advance
        )
    typer.echo(result.table_md + "\n" + result.ratios_md)
    _log(f"wrote {output / 'summary.md'} and {output / 'hallucination.png'}")


@study_app.command()
def tta(
    model_dir: Annotated[Path, typer.Argument(help="model folder written by `train`")],
    output: Annotated[Path, typer.Option("--output", "-o", help="study folder")] = Path("runs/studies/tta"),
    data: Annotated[Optional[Path], typer.Option(help="data folder (default: the model's data_dir)")] = None,
    transforms: Annotated[int, typer.Option(help="dihedral transforms (2–8)")] = 8,
) -> None:
    """Is the uncertainty map informative? Test-time augmentation on the test images: metrics of one prediction vs
    the TTA mean, and how well the TTA standard deviation ranks the actual error."""
    from cristae_zoo.cli_common import progress_bar
    from cristae_zoo.studies.tta import run_tta_check

    with progress_bar("tta: test images", None) as advance:
        result = run_tta_check(model_dir, output, data, transforms, progress=advance)
    typer.echo(result.table_md)
    _log(f"wrote {output / 'summary.md'}, {output / 'tta.csv'}, mean/sd TIFFs and PNGs")


@study_app.command()
def independent(
    packages: Annotated[Optional[list[str]], typer.Argument(help="model packages to score (folder, rdf.yaml, .zip or a model_zoo name; default: deepcristae)")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="study folder")] = Path("runs/studies/independent"),
    name: Annotated[Optional[list[str]], typer.Option("--name", help="a name per package for the tables (repeatable; default: folder names)")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="IndependentConfig YAML (datasets, photons, STED power, degradation)")] = None,
    images_per_dataset: Annotated[Optional[int], typer.Option(help="datamaps per structure (pysted ships 6–7)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="seed of the photon budgets and the noise")] = None,
) -> None:
    """Data we did not write: pysted renders STED images of its real tubulin, F-actin and PSD95 datamaps (no
    cristae); they are degraded the DeepCristae way and each package is scored against the input, median and RL
    (PSNR/SSIM/NRMSE, and high-pass energy invented in empty regions). Needs the `validation` extra (pysted)."""
    from cristae_zoo.cli_common import abs_package, progress_bar, user_errors
    from cristae_zoo.cli_common import override as _override
    from cristae_zoo.studies.independent import IndependentConfig, run_independent

    @user_errors
    def go() -> None:
        cfg = IndependentConfig.from_yaml(config) if config else IndependentConfig()
        cfg = _override(cfg, images_per_dataset=images_per_dataset, seed=seed)
        pkgs = [abs_package(p) for p in (packages or ["deepcristae"])]
        from cristae_zoo.api import load

        for p in pkgs:  # a missing or broken package is one line before anything is rendered
            load(p).close()
        with progress_bar("independent: images", None) as advance:
            result = run_independent(pkgs, output, cfg, names=name, log=_log, progress=advance)
        typer.echo(result.summary_md)
        _log(f"wrote {output / 'summary.md'}, {output / 'independent.csv'} and {output / 'independent.png'}")

    go()


def register(app: typer.Typer) -> None:
    """Add the `study` sub-app to the main CLI."""
    app.add_typer(study_app, name="study")
