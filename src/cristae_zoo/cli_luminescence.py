"""`cristae-zoo luminescence simulate|train|evaluate|package|predict`: CARE for luminescence (Boothe et al.).

`register(app)` adds the `luminescence` sub-app to the main Typer app.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cristae_zoo.cli_common import parse_ints as _ints, user_errors, validated as _validated
from cristae_zoo.errors import CristaeZooError

luminescence_app = typer.Typer(
    name="luminescence",
    help="CARE for luminescence: short → long exposure, binned upsampling, noise2noise; 3D, Laplace output.",
    no_args_is_help=True,
)




@luminescence_app.command()
@user_errors
def simulate(
    output: Annotated[Path, typer.Argument(help="folder to write gt/, long/, short/, short2/ and config.yaml")],
    n_scenes: Annotated[int, typer.Option(help="number of 3D scenes")] = 24,
    size: Annotated[int, typer.Option(help="height and width (px)")] = 128,
    depth: Annotated[int, typer.Option(help="z planes")] = 16,
    short_exposure: Annotated[float, typer.Option(help="input exposure (s); also both noise2noise acquisitions")] = 2.0,
    long_exposure: Annotated[float, typer.Option(help="long-exposure target (s)")] = 60.0,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Simulate 3D luminescence acquisitions of mitochondria (EM-CCD) with their noise-free ground truth."""
    from cristae_zoo.luminescence.simulate import (
        LuminescenceSimulationConfig,
        simulate_dataset,
    )

    config = _validated(LuminescenceSimulationConfig, n_scenes=n_scenes, height=size, width=size, depth=depth,
                        short_exposure_s=short_exposure, long_exposure_s=long_exposure, seed=seed)  # fmt: skip
    from cristae_zoo.cli_common import progress_bar

    with progress_bar("simulate", n_scenes) as advance:
        names = simulate_dataset(config, output, progress=advance)  # type: ignore[arg-type]
    typer.echo(f"wrote {len(names)} scenes to {output} (exposure ratio {long_exposure / short_exposure:g})")


@luminescence_app.command()
@user_errors
def train(
    data: Annotated[Path, typer.Option("--data", help="folder with <input-dir>/NAME.tif and <target-dir>/NAME.tif")],
    output: Annotated[Path, typer.Option("--output", "-o", help="model folder to write")],
    mode: Annotated[str, typer.Option(help="pairs | binning | noise2noise")] = "pairs",
    input_dir: Annotated[str | None, typer.Option(help="input folder (default by mode: short)")] = None,
    target_dir: Annotated[str | None, typer.Option(help="target folder (default by mode: long, noise2noise: short2)")] = None,
    bin_factor: Annotated[int, typer.Option(help="binning mode: 2, 4 or 8")] = 4,
    ndim: Annotated[int, typer.Option(help="2 or 3")] = 3,
    depth: Annotated[int, typer.Option(help="number of stride-2 levels")] = 2,
    filters: Annotated[int, typer.Option(help="first-level channels")] = 16,
    patch: Annotated[str | None, typer.Option(help="patch size, e.g. 16,32,32 (default by --ndim)")] = None,
    steps: Annotated[int, typer.Option(help="training steps (batches)")] = 250,
    batch_size: Annotated[int, typer.Option(help="patches per batch")] = 4,
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate")] = 1e-3,
    residual: Annotated[bool, typer.Option("--residual/--no-residual", help="CSBDeep's residual mean")] = False,
    loss: Annotated[str, typer.Option(help="laplace | gaussian (NLL; gaussian estimates the mean: noise2noise)")] = "laplace",
    minutes: Annotated[float | None, typer.Option(help="time budget: stop after this many minutes")] = None,
    seed: Annotated[int, typer.Option(help="seed of the split, patches and initialisation")] = 0,
) -> None:
    """Train a CARE network with Laplace output (mean, scale) in one mode; 80/20 train/test, 90/10 validation."""
    from cristae_zoo.luminescence.modes import ModeConfig
    from cristae_zoo.luminescence.network import care_network_config
    from cristae_zoo.luminescence.train import LuminescenceTrainConfig
    from cristae_zoo.luminescence.train import train as run

    if mode not in ("pairs", "binning", "noise2noise"):
        raise CristaeZooError(f"--mode {mode!r}: expected pairs, binning or noise2noise")
    m = ModeConfig.for_mode(mode, bin_factor)  # type: ignore[arg-type]
    m = m.model_copy(update={k: v for k, v in (("input_dir", input_dir), ("target_dir", target_dir)) if v})
    size = _ints(patch, "--patch") if patch else ([16, 32, 32] if ndim == 3 else [64, 64])
    config = _validated(LuminescenceTrainConfig, data_dir=str(data), mode=m, patch_size=size, steps=steps,
                        batch_size=batch_size, learning_rate=learning_rate, seed=seed, time_budget_min=minutes, residual=residual, loss=loss,
                        network=_validated(type(care_network_config()), ndim=ndim, depth=depth, filters=filters, n_out=2))  # fmt: skip
    from cristae_zoo.cli_common import progress_bar

    with progress_bar(f"train {mode}", steps) as advance:
        result = run(config, output, progress=advance)  # type: ignore[arg-type]
    last = result["history"][-1]
    typer.echo(f"trained {last['step']} steps: train NLL {last['train_nll']:.4f}, best validation NLL {result['best_val_nll']:.4f} -> {output}")


@luminescence_app.command()
@user_errors
def evaluate(
    model: Annotated[Path, typer.Argument(help="model folder written by `luminescence train`")],
    data: Annotated[Path | None, typer.Option("--data", help="data folder (default: the training data, test split)")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="folder for metrics.csv, summary.md, the PNG")] = None,
    gt_dir: Annotated[str, typer.Option(help="ground-truth folder inside the data folder")] = "gt",
    png: Annotated[Path | None, typer.Option(help="also write the before/after PNG here (default: in --output)")] = None,
) -> None:
    """PSNR, SSIM, mask MAE and Pearson r in masks: input vs restoration vs long exposure, on held-out scenes."""
    from cristae_zoo.io import atomic_write_text
    from cristae_zoo.luminescence.evaluate import evaluate as run
    from cristae_zoo.luminescence.evaluate import figure, summary_markdown, write_csv
    from cristae_zoo.luminescence.modes import list_names
    from cristae_zoo.luminescence.train import LuminescenceTrainConfig

    config = LuminescenceTrainConfig.from_yaml(model / "config.yaml")
    names = list_names(data, config.mode) if data else None
    from cristae_zoo.cli_common import progress_bar

    with progress_bar("evaluate", None) as advance:
        rows = run(model, data, names, gt_dir=gt_dir)
        advance(1)
    table = summary_markdown(rows)
    out = output or model / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "metrics.csv")
    atomic_write_text(out / "summary.md", table)
    picture = png or out / f"luminescence_{config.mode.mode}.png"
    figure(model, rows[0]["image"], picture, data_dir=data, gt_dir=gt_dir)
    typer.echo(table)
    typer.echo(f"wrote {out / 'metrics.csv'}, {out / 'summary.md'}, {picture}")


@luminescence_app.command()
@user_errors
def predict(
    model: Annotated[Path, typer.Argument(help="model folder written by `luminescence train`")],
    inputs: Annotated[list[Path], typer.Argument(help="raw input stacks (.tif), as the model's training inputs")],
    output: Annotated[Path, typer.Option("--output", "-o", help="output folder (NAME.tif = restored mean)")],
    scale: Annotated[bool, typer.Option("--scale/--no-scale", help="also write the Laplace scale as NAME_scale.tif")] = False,
    tile: Annotated[int | None, typer.Option(help="predict in tiles of this many px (with a seamless halo)")] = None,
) -> None:
    """Restore raw stacks: the Laplace mean, and with --scale its per-voxel scale (uncertainty) beside it."""
    from cristae_zoo.luminescence.modes import read_input
    from cristae_zoo.luminescence.predict import predict_file
    from cristae_zoo.luminescence.train import load_model

    loaded = load_model(model)
    for source in inputs:  # user errors (2D stack for a 3D model, binning) before any output or progress bar
        read_input(source, loaded[1].mode, loaded[1].network.ndim)
    output.mkdir(parents=True, exist_ok=True)
    from cristae_zoo.cli_common import progress_bar

    written = []
    with progress_bar("predict", len(inputs)) as advance:
        for source in inputs:
            written += predict_file(model, source, output / f"{source.stem}.tif", write_scale=scale, tile=tile, loaded=loaded)
            advance(1)
    typer.echo("wrote " + ", ".join(str(p) for p in written))


def register(app: typer.Typer) -> None:
    app.add_typer(luminescence_app, name="luminescence")
