"""`cristae-zoo labelfree simulate|train|evaluate|package`: transmitted light → mitochondria / DNA fluorescence.

`register(app)` adds the `labelfree` sub-app to the main Typer app.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cristae_zoo.cli_common import parse_ints as _ints, user_errors, validated as _validated
from cristae_zoo.errors import CristaeZooError

labelfree_app = typer.Typer(
    name="labelfree",
    help="Label-free prediction of mitochondria and DNA fluorescence from transmitted light (Hsu et al.).",
    no_args_is_help=True,
)




@labelfree_app.command()
@user_errors
def simulate(
    output: Annotated[Path, typer.Argument(help="folder to write tl/, mito/, dna/, masks/ and config.yaml")],
    n_images: Annotated[int, typer.Option(help="number of pairs")] = 40,
    size: Annotated[int, typer.Option(help="image height and width (px, ≥ 64)")] = 128,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Simulate paired transmitted-light / fluorescence (mitochondria, DNA) images."""
    from pydantic import ValidationError

    from cristae_zoo.labelfree.simulate import LabelFreeSimulationConfig, simulate_dataset

    try:
        config = LabelFreeSimulationConfig(n_images=n_images, height=size, width=size, seed=seed)
    except ValidationError as err:
        e = err.errors()[0]
        raise CristaeZooError(f"invalid option {'.'.join(map(str, e['loc']))}: {e['msg']}") from None
    from cristae_zoo.cli_common import progress_bar

    with progress_bar("simulate", n_images) as advance:
        paths = simulate_dataset(config, output, progress=advance)
    typer.echo(f"wrote {len(paths)} pairs to {output}")


@labelfree_app.command()
@user_errors
def train(
    data: Annotated[Path, typer.Option("--data", help="folder with tl/NAME.tif and <structure>/NAME.tif")],
    output: Annotated[Path, typer.Option("--output", "-o", help="model folder to write")],
    structures: Annotated[str, typer.Option(help="comma-separated structure folders = output channels (one model per channel: give one)")] = "mito,dna",
    ndim: Annotated[int, typer.Option(help="2 or 3 (z-stacks / time series as the third axis)")] = 2,
    depth: Annotated[int, typer.Option(help="number of stride-2 levels")] = 3,
    filters: Annotated[int, typer.Option(help="first-level channels")] = 12,
    patch: Annotated[Optional[str], typer.Option(help="patch size, e.g. 64,64 or 32,64,64 (default by --ndim)")] = None,
    steps: Annotated[int, typer.Option(help="training steps (batches)")] = 800,
    batch_size: Annotated[int, typer.Option(help="patches per batch")] = 8,
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate")] = 1e-3,
    seed: Annotated[int, typer.Option(help="seed of the split, patches and initialisation")] = 0,
) -> None:
    """Train the U-Net (MSE, Adam) on TL/fluorescence pairs; 75/25 train/test, 90/10 train/validation."""
    from pydantic import ValidationError

    from cristae_zoo.labelfree.network import LabelFreeNetworkConfig
    from cristae_zoo.labelfree.train import LabelFreeTrainConfig
    from cristae_zoo.labelfree.train import train as run

    names = [s.strip() for s in structures.split(",") if s.strip()]
    size = _ints(patch, "--patch") if patch else ([64, 64] if ndim == 2 else [32, 64, 64])
    try:
        config = LabelFreeTrainConfig(
            data_dir=str(data), structures=names, patch_size=size, steps=steps, batch_size=batch_size,
            learning_rate=learning_rate, seed=seed,
            network=LabelFreeNetworkConfig(ndim=ndim, depth=depth, filters=filters, n_out=len(names)),
        )  # fmt: skip
    except ValidationError as err:
        e = err.errors()[0]
        raise CristaeZooError(f"invalid option {'.'.join(map(str, e['loc']))}: {e['msg']}") from None
    from cristae_zoo.cli_common import progress_bar

    with progress_bar("train", steps) as advance:
        result = run(config, output, progress=advance)
    last = result["history"][-1]
    typer.echo(f"trained {steps} steps: train MSE {last['train_mse']:.4f}, best validation MSE {result['best_val_mse']:.4f} -> {output}")


@labelfree_app.command()
@user_errors
def evaluate(
    model: Annotated[Path, typer.Argument(help="model folder written by `labelfree train`")],
    data: Annotated[Optional[Path], typer.Option("--data", help="pairs to evaluate on (default: the model's test split)")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="folder for metrics.csv, summary.md, the PNG")] = None,
) -> None:
    """Pearson r and SSIM per structure and test image, U-Net vs inverted TL; table + TL/prediction/fluorescence PNG."""
    from cristae_zoo.labelfree.data import list_pairs, load_pair
    from cristae_zoo.labelfree.evaluate import evaluate as run
    from cristae_zoo.labelfree.evaluate import figure, summary_markdown, write_csv
    from cristae_zoo.labelfree.train import LabelFreeTrainConfig

    config = LabelFreeTrainConfig.from_yaml(model / "config.yaml")
    names = list_pairs(data, config.structures) if data else None
    rows = run(model, data, names)
    table = summary_markdown(rows)
    out = output or model / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "metrics.csv")
    (out / "summary.md").write_text(table)
    first = rows[0]["image"]
    pair = load_pair(Path(data or config.data_dir), first, config.structures, config.network.ndim)
    figure(model, pair, config.structures, out / f"labelfree_{Path(first).stem}.png")
    typer.echo(table)
    typer.echo(f"wrote {out / 'metrics.csv'}, {out / 'summary.md'}, {out / f'labelfree_{Path(first).stem}.png'}")


def register(app: typer.Typer) -> None:
    app.add_typer(labelfree_app, name="labelfree")
