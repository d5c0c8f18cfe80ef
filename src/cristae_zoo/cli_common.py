"""Plumbing shared by every command group of the `cristae-zoo` CLI: consoles, progress bars, one-line errors and
validated flag overrides.

Every `cli*.py` module imports from here and never from another `cli*.py` module, so the command modules form no
import cycle (checked by the import-linter contract in `tests/test_architecture.py`).
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cristae_zoo.errors import CristaeZooError

console = Console(stderr=True)  # messages, progress, errors
out = Console()  # results (tables, "wrote ..." lines)
F = TypeVar("F", bound=Callable[..., Any])

PACKAGE_HELP = "package folder, its rdf.yaml, a package .zip, or the name of a model in model_zoo/"
WEIGHTS_HELP = "weights format: onnx | tensorflow | torchscript (default: onnx)"


def new_progress() -> Progress:
    """The rich progress display of every long command (on stderr; tasks need an `info` field)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    )


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """A rich progress bar; yields `advance(n=1, info=None)`."""
    with new_progress() as progress:
        task = progress.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str | None = None) -> None:
            progress.update(task, advance=n, **({"info": info} if info is not None else {}))

        yield advance


def fail(message: str) -> None:
    """Print `error: message` on one line and exit with code 2."""
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True, markup=True)
    sys.exit(2)


def user_errors(fn: F) -> F:
    """Print a `CristaeZooError` as one line on stderr and exit with code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CristaeZooError as err:
            console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True, markup=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def override(cfg: Any, **overrides: Any) -> Any:
    """A copy of a pydantic config with the flags that were given (not None), validated like the YAML file is."""
    from pydantic import ValidationError

    data = cfg.model_dump() | {k: v for k, v in overrides.items() if v is not None}
    try:
        return type(cfg).model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        raise CristaeZooError(f"invalid option {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def validated(cls: type, **kwargs: Any) -> Any:
    """`cls(**kwargs)` for a pydantic model, with a validation error as one line naming the option."""
    from pydantic import ValidationError

    try:
        return cls(**kwargs)
    except ValidationError as err:
        e = err.errors()[0]
        raise CristaeZooError(f"invalid option {'.'.join(map(str, e['loc']))}: {e['msg']}") from None


@contextmanager
def scratch_cwd() -> Iterator[None]:
    """Run in a temporary working directory: bioimageio.core unzips TensorFlow weights into the working directory
    (`bioimageio_unzipped_tf_weights/`); this keeps the user's folder clean."""
    old = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="cristae_zoo_run_") as tmp:
        os.chdir(tmp)
        try:
            yield
        finally:
            os.chdir(old)


def abs_package(package: str) -> str:
    """Existing paths become absolute (the commands may change directory); model names stay as they are."""
    p = Path(package)
    return str(p.resolve()) if p.exists() else package


def help_text(fn: Callable[..., Any]) -> str:
    """The docstring with each paragraph on one line (rich keeps the source's line breaks otherwise)."""
    paragraphs = (fn.__doc__ or "").strip().split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def parse_ints(text: str, what: str) -> list[int]:
    """'64,64' or '64x64' → [64, 64]; a one-line error naming the option otherwise."""
    try:
        return [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise CristaeZooError(f"{what} {text!r}: expected integers separated by commas, e.g. 64,64") from None
