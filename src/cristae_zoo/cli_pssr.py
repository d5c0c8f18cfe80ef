"""`cristae-zoo pssr simulate|predict` (packaging: `cristae-zoo package`; training and evaluation: `cristae-zoo train|evaluate`): PSSR 4× super-sampling, single- and multi-frame.

`register(app)` adds the `pssr` sub-app to the main Typer app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cristae_zoo.cli_common import user_errors, validated as _validated
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


def register(app: typer.Typer) -> None:
    app.add_typer(pssr_app, name="pssr")
