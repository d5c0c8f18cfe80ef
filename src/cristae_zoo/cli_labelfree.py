"""`cristae-zoo labelfree simulate` (packaging: `cristae-zoo package`; training and evaluation: `cristae-zoo train|evaluate`): transmitted light → mitochondria / DNA fluorescence.

`register(app)` adds the `labelfree` sub-app to the main Typer app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cristae_zoo.cli_common import user_errors
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


def register(app: typer.Typer) -> None:
    app.add_typer(labelfree_app, name="labelfree")
