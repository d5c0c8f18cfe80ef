"""`cristae-zoo luminescence simulate|predict` (packaging: `cristae-zoo package`; training and evaluation: `cristae-zoo train|evaluate`): CARE for luminescence (Boothe et al.).

`register(app)` adds the `luminescence` sub-app to the main Typer app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cristae_zoo.cli_common import user_errors, validated as _validated
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


def register(app: typer.Typer) -> None:
    app.add_typer(luminescence_app, name="luminescence")
