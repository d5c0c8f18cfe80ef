"""`cristae-zoo pssr simulate|train|evaluate|package|predict`: PSSR 4× super-sampling, single- and multi-frame.

`register(app)` adds the `pssr` sub-app to the main Typer app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cristae_zoo.cli_common import parse_ints as _ints, user_errors, validated as _validated
from cristae_zoo.errors import CristaeZooError

pssr_app = typer.Typer(
    name="pssr",
    help="Point-scanning super-resolution (Fang et al.): 4× super-sampling of mitochondria time-lapses, single- and multi-frame.",
    no_args_is_help=True,
)




@pssr_app.command()
@user_errors
def simulate(
    output: Annotated[Path, typer.Argument(help="folder to write hr/, lr/, mask/ (movie_NNN.tif, T×Y×X), events.json")],
    n_movies: Annotated[int, typer.Option(help="number of time-lapses")] = 24,
    n_frames: Annotated[int, typer.Option(help="frames per movie (≥ 5)")] = 12,
    size: Annotated[int, typer.Option(help="HR frame size in px (multiple of 4)")] = 256,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Simulate Airyscan-like time-lapses of moving mitochondria with fission and fusion, and crappify them."""
    from cristae_zoo.cli_common import progress_bar
    from cristae_zoo.pssr.movies import MovieConfig, simulate_movies

    config = _validated(MovieConfig, n_movies=n_movies, n_frames=n_frames, size=size, seed=seed)
    with progress_bar("simulate", n_movies) as advance:
        paths = simulate_movies(config, output, progress=advance)
    typer.echo(f"wrote {len(paths)} movies to {output}")


@pssr_app.command()
@user_errors
def train(
    data: Annotated[Path, typer.Option("--data", help="folder written by `pssr simulate` (hr/*.tif)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="model folder to write")],
    frames: Annotated[int, typer.Option(help="1 (PSSR-SF) or 5 (PSSR-MF)")] = 1,
    filters: Annotated[int, typer.Option(help="channels at LR resolution")] = 24,
    depth: Annotated[int, typer.Option(help="stride-2 levels")] = 2,
    steps: Annotated[int, typer.Option(help="training steps (batches)")] = 1500,
    batch_size: Annotated[int, typer.Option(help="patches per batch")] = 8,
    lr_patch: Annotated[int, typer.Option(help="LR patch size (HR = 4×)")] = 32,
    max_lr: Annotated[float, typer.Option(help="one-cycle peak learning rate")] = 1e-3,
    validate_every: Annotated[int, typer.Option(help="steps between validations (best model kept)")] = 100,
    seed: Annotated[int, typer.Option(help="seed of initialisation, patches and noise")] = 0,
    init_from: Annotated[Path | None, typer.Option(help="start from this model folder (SF → MF: the stem's kernel goes to the middle frame)")] = None,
) -> None:
    """Train PSSR (MSE, Adam, one-cycle); keep the best model on validation loss."""
    from cristae_zoo.cli_common import progress_bar
    from cristae_zoo.pssr.network import PSSRNetworkConfig
    from cristae_zoo.pssr.train import PSSRTrainConfig
    from cristae_zoo.pssr.train import train as run

    if frames not in (1, 5):
        raise CristaeZooError(f"--frames {frames}: PSSR uses 1 (single-frame) or 5 (multi-frame, t-2 … t+2)")
    net = _validated(PSSRNetworkConfig, n_frames=frames, filters=filters, depth=depth)
    config = _validated(PSSRTrainConfig, data_dir=str(data), network=net, steps=steps, batch_size=batch_size,
                        lr_patch=lr_patch, max_learning_rate=max_lr, validate_every=validate_every, seed=seed,
                        init_from=str(init_from) if init_from else None)  # fmt: skip
    with progress_bar("train", steps) as advance:
        result = run(config, output, progress=lambda n, info: advance(n, info or None))
    typer.echo(f"trained {steps} steps: best validation MSE {result['best_val_mse']:.5f} -> {output}")


@pssr_app.command()
@user_errors
def evaluate(
    models: Annotated[list[Path], typer.Argument(help="model folders (e.g. runs/pssr/sf runs/pssr/mf), same data")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="folder for metrics.csv, summary.md, fission PNG")] = None,
) -> None:
    """PSNR, SSIM, SNR of bilinear vs each model on the held-out movies; PNG of a fission event."""
    import json

    from cristae_zoo.cli_common import progress_bar
    from cristae_zoo.io import atomic_write_text, write_csv
    from cristae_zoo.pssr.evaluate import evaluate as run
    from cristae_zoo.pssr.evaluate import (
        fission_event,
        fission_figure,
        restore_all,
        summary_markdown,
    )
    from cristae_zoo.pssr.train import load_model

    loaded, labels = {}, {"bilinear": "bilinear 4×"}
    for d in models:
        key = d.resolve().name
        if key in ("bilinear", "hr", "lr", "mask") or key in loaded:
            raise CristaeZooError(f"{d}: give each model folder a distinct name other than bilinear/hr/lr/mask")
        loaded[key] = load_model(d)
        variant = "PSSR-MF" if loaded[key][1].network.n_frames > 1 else "PSSR-SF"
        labels[key] = variant if key in ("sf", "mf") else f"{variant} ({key})"
    first = next(iter(loaded.values()))[1]
    data = Path(first.data_dir)
    names = json.loads((models[0] / "split.json").read_text())["test"]
    with progress_bar("restore test movies", None) as advance:
        restored = restore_all(data, names, loaded)
        advance(len(names))
    rows = run(restored, list(labels))
    md = summary_markdown(rows, labels | {"hr": "HR ground truth"})
    out = output or models[0] / "evaluation"
    write_csv(out / "metrics.csv", rows)
    atomic_write_text(out / "summary.md", md)
    name, event = fission_event(data, restored)
    png = fission_figure(restored[name], event, labels | {"hr": "HR ground truth"}, out / "pssr_fission.png")
    typer.echo(md)
    typer.echo(f"wrote {out / 'metrics.csv'}, {out / 'summary.md'}, {png} ({name}, frame {event['frame']})")


@pssr_app.command()
@user_errors
def predict(
    model: Annotated[Path, typer.Argument(help="model folder written by `pssr train`")],
    source: Annotated[Path, typer.Argument(help="LR TIFF: (T, Y, X) time-lapse (or one 2D frame for PSSR-SF)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="TIFF to write, (T, 4Y, 4X) float32")],
) -> None:
    """Super-sample a time-lapse: frame by frame (SF) or by a sliding 5-frame window mirrored at the ends (MF)."""
    import tifffile

    from cristae_zoo.cli_common import progress_bar
    from cristae_zoo.pssr.predict import predict_file

    if Path(output).resolve() == Path(source).resolve():
        raise CristaeZooError(f"{output}: would overwrite the input")
    try:
        with tifffile.TiffFile(source) as tif:
            shape = tif.series[0].shape
        n = shape[0] if len(shape) == 3 else 1
    except Exception:  # an unreadable file: predict_file reports it as one line
        n = None
    with progress_bar("predict", n) as advance:
        out_shape = predict_file(model, source, output, progress=advance)
    typer.echo(f"wrote {output} {out_shape}")


def register(app: typer.Typer) -> None:
    app.add_typer(pssr_app, name="pssr")
