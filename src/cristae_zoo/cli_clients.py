"""`cristae-zoo check-clients PACKAGE`: which bioimage.io clients will load a package, and why not.

`register(app)` adds the command to the main Typer app. One line per client (deepImageJ, ilastik, the bioimage.io
website runner, BioImageIT, bioimageio.core, our CLI) from the cheap in-process checks of `cristae_zoo.clients`.
Exit code 0 when every applicable client loads the package, 1 when one does not, 2 for input that is not a readable
package (no rdf.yaml, an invalid rdf, a missing or changed file): one line, `error: ...`.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from cristae_zoo.cli_common import PACKAGE_HELP, abs_package, out, user_errors


@user_errors
def cmd_check_clients(package: Annotated[str, typer.Argument(help=PACKAGE_HELP)]) -> None:
    """Say, one line per client, whether deepImageJ (JDLL 0.6.1), ilastik, the bioimage.io website runner,
    BioImageIT, bioimageio.core 0.11 and cristae-zoo will load PACKAGE, which weights each runs, and what stops it
    (rules ported from the clients' own source; see docs/clients.md)."""
    from cristae_zoo.clients import check_clients

    verdicts = check_clients(abs_package(package))
    for verdict in verdicts:
        style = {"yes": "green", "no": "red", "n/a": "yellow"}[verdict.status]
        out.print(Text(verdict.line(), style=style), soft_wrap=True)  # Text: "[onnx]" is not rich markup
    if any(v.status == "no" for v in verdicts):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `check-clients` to the main app."""
    app.command("check-clients")(cmd_check_clients)
