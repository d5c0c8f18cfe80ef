"""`cristae-zoo package | validate | test | predict`: bioimage.io packages on the command line.

`register(app)` adds the four commands to the main Typer app. PACKAGE may be a package folder, its rdf.yaml, a
package .zip, or the name of a model in model_zoo/. User errors print one line (`error: ...`) and exit with code 2;
`test` exits with code 1 when a check fails.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from cristae_zoo.cli_common import (
    PACKAGE_HELP,
    WEIGHTS_HELP,
    abs_package,
    console,
    help_text,
    new_progress,
    out,
    scratch_cwd,
    user_errors,
)
from cristae_zoo.errors import CristaeZooError

_progress = new_progress
_abs_package = abs_package


# ---------------------------------------------------------------------------------------------------- package


def cmd_package(
    model_dir: Annotated[Path, typer.Argument(help="trained model folder (config.yaml + weights.keras) of any system")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="package folder to write (OUTPUT.zip is written beside it)")
    ],
    template: Annotated[
        Optional[Path], typer.Option(help="static rdf fields (default: rdf_templates/<system>.yaml)")
    ] = None,
    test_input: Annotated[
        Optional[Path],
        typer.Option("--test-input", "--test-image",
                     help="TIFF or .npy to crop the test input from (default: the system's held-out data)"),
    ] = None,
    crop: Annotated[int, typer.Option(help="largest y/x edge of the test input in px")] = 256,
    zip_package: Annotated[bool, typer.Option("--zip/--no-zip", help="also write OUTPUT.zip")] = True,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace an existing package folder (never a model folder)")
    ] = False,
) -> None:
    """Export a trained model of any system as a bioimage.io package: TensorFlow SavedModel, ONNX and TorchScript
    weights (each checked against Keras), rdf.yaml from the system's tensor description, README, cover, test and
    sample tensors, Keras weights and training config. Written atomically; an existing OUTPUT is replaced only with
    --overwrite, and only if it is a package folder."""
    from cristae_zoo.export.package import PACKAGE_STEPS, package_model

    with _progress() as progress:
        task = progress.add_task("packaging", total=len(PACKAGE_STEPS), info="")

        def advance(step: str) -> None:
            progress.update(task, advance=1, info=step)

        result = package_model(
            model_dir, output, template=template, test_input=test_input, crop=crop, zip_package=zip_package,
            overwrite=overwrite, progress=advance,
        )  # fmt: skip
    table = Table(title=f"{result.folder} ({result.size_bytes / 1024**2:.1f} MB)")
    table.add_column("weights")
    table.add_column("file")
    table.add_column("max |Δ| vs Keras", justify="right")
    for e in result.exported:
        table.add_row(e.weights_format, e.path.name, f"{e.max_abs_diff:.2e}")
    out.print(table)
    td = result.tensors
    sizes = ", ".join(f"{a} {td.min_size.get(a)} + n·{td.step.get(a)}" for a in td.spatial_axes)
    out.print(
        f"inputs {', '.join(td.input_channels)} → outputs {', '.join(td.output_channels)}"
        + (f" (×{td.output_scale})" if td.output_scale > 1 else "")
        + f"; sizes {sizes}; halo {dict(td.halo)} px; test input: {result.test_input}",
        highlight=False,
    )
    if result.zip_path is not None:
        out.print(f"zip: {result.zip_path}", highlight=False)


# --------------------------------------------------------------------------------------------------- validate


def _details_table(summary: Any, title: str) -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("", width=2)
    table.add_column("check")
    table.add_column("location")
    table.add_column("message", overflow="fold")
    icon = {"passed": "[green]✔[/green]", "failed": "[red]✘[/red]", "valid-format": "[green]✔[/green]"}
    for d in summary.details:
        msgs = [f"[red]{' '.join(str(e.msg).split())[:300]}[/red]" for e in d.errors]
        msgs += [f"[yellow]{' '.join(str(w.msg).split())[:300]}[/yellow]" for w in d.warnings]
        loc = ".".join(str(p) for p in d.loc) if d.loc else ""
        table.add_row(icon.get(str(d.status), str(d.status)), d.name, loc, "\n".join(msgs))
    return table


def cmd_validate(package: Annotated[str, typer.Argument(help=PACKAGE_HELP)]) -> None:
    """Validate the package format (bioimage.io spec, file hashes, test tensor shapes); no model is run."""
    from bioimageio.spec import InvalidDescr, load_description

    from cristae_zoo.predict import first_error, resolve_package

    source = resolve_package(package)
    with console.status(f"validating {source}"):
        try:
            descr = load_description(source, perform_io_checks=True)
        except Exception as err:  # unreadable YAML, broken zip members, ...
            raise CristaeZooError(f"{source}: cannot load the package ({type(err).__name__}: {err})") from None
    summary = descr.validation_summary
    out.print(_details_table(summary, f"{source}: {summary.status}"))
    if isinstance(descr, InvalidDescr):
        raise CristaeZooError(f"{source}: the rdf fails validation ({first_error(summary)})")
    warnings = sum(len(d.warnings) for d in summary.details)
    out.print(
        f"[green]valid[/green] {descr.type} {descr.format_version}: {descr.name!r}"
        + (f" ({warnings} warning{'s' if warnings != 1 else ''})" if warnings else "")
    )


# ------------------------------------------------------------------------------------------------------- test


def run_package_tests(package: str, weights: Optional[str] = None, progress: Callable[[str], None] | None = None):
    """bioimageio.core's `test_model` for each weights format; returns [(format, ValidationSummary)]."""
    from bioimageio.core import test_model

    from cristae_zoo.predict import load_package, normalize_weights_format, resolve_package

    source = resolve_package(package)
    descr = load_package(source)
    formats = [name for name, entry in descr.weights if entry is not None]
    if weights is not None:
        formats = [normalize_weights_format(weights, descr)]
    results = []
    for wf in formats:
        if progress:
            progress(wf)
        results.append((wf, test_model(source, weight_format=wf)))
    return results


def cmd_test(
    package: Annotated[str, typer.Argument(help=PACKAGE_HELP)],
    weights: Annotated[
        Optional[str], typer.Option(help="test only this format: onnx | tensorflow | torchscript")
    ] = None,
) -> None:
    """Run bioimageio.core's model test for every weights format (reproduce the test output, run all allowed
    input sizes and batch sizes) and show a table of results; exit code 1 if any check fails."""
    from cristae_zoo.predict import load_package, normalize_weights_format, resolve_package

    source = str(resolve_package(_abs_package(package)))
    normalize_weights_format(weights, load_package(source))  # user errors before the progress bar
    with scratch_cwd(), _progress() as progress:
        task = progress.add_task("bioimageio test", total=None, info="")
        results = run_package_tests(source, weights, progress=lambda wf: progress.update(task, info=wf))
        progress.update(task, total=len(results), completed=len(results), info="done")

    table, ok = results_table(results, title=f"bioimageio test {source}")
    out.print(table)
    if not ok:
        raise typer.Exit(1)


def results_table(results: list[tuple[str, Any]], title: str) -> tuple[Table, bool]:
    """One row per weights format: format checks, test output reproduction, inference at every allowed size."""
    mark = {True: "[green]✔[/green]", False: "[red]✘[/red]"}
    table = Table(title=title)
    table.add_column("weights", no_wrap=True)
    for col in ("format", "reproduce test output", "sizes × batch", "result", "first error"):
        table.add_column(col, overflow="fold")
    all_ok = True
    for wf, summary in results:
        fmt, repro, sizes, errors = [], [], [], []
        for d in summary.details:
            passed = d.status != "failed"
            if d.name.startswith("Reproduce test outputs"):
                repro.append(passed)
            elif d.name.startswith("Run ") and "inference" in d.name:
                sizes.append(passed)
            else:
                fmt.append(passed)
            if not passed:
                errors += [" ".join(str(e.msg).split())[:300] for e in d.errors] or [d.name]
        ok = summary.status == "passed" and all(fmt + repro + sizes) and bool(repro) and bool(sizes)
        all_ok &= ok
        table.add_row(
            wf,
            mark[all(fmt)],
            mark[bool(repro) and all(repro)],
            f"{sum(sizes)}/{len(sizes)}",
            "[green]passed[/green]" if ok else f"[red]{summary.status}[/red]",
            f"[red]{errors[0]}[/red]" if errors else "",
        )
    return table, all_ok


# ---------------------------------------------------------------------------------------------------- predict


def cmd_predict(
    package: Annotated[str, typer.Argument(help=PACKAGE_HELP)],
    input: Annotated[
        Path,
        typer.Argument(
            help="TIFF (ImageJ hyperstack, OME-TIFF, plain) or OME-Zarr: 2D, ZYX, TYX or TZYX (a channel axis with"
            " --channel); or a folder of them"
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o",
            help="file to write (.tif, .ome.tif, .zarr; the kind follows the input unless the suffix says), or a"
            " folder for a folder of inputs; never an input",
        ),
    ],
    weights: Annotated[Optional[str], typer.Option(help=WEIGHTS_HELP)] = None,
    rescale: Annotated[
        Optional[str],
        typer.Option(
            help="rescale factor before restoring (>1 enlarges), or 'auto' to measure the mitochondria width in the"
            " image; default: from the pixel size (--pixel-size or the file's metadata)"
        ),
    ] = None,
    pixel_size: Annotated[
        Optional[float], typer.Option("--pixel-size", help="input pixel size in nm (overrides the metadata)")
    ] = None,
    resample_back: Annotated[
        bool,
        typer.Option(
            "--resample-back/--keep-rescaled", help="resample the restored planes back to the input's grid"
        ),
    ] = False,
    axes: Annotated[
        Optional[str], typer.Option(help="axes of the input, one letter of T Z C Y X per dimension, e.g. TZYX")
    ] = None,
    channel: Annotated[Optional[int], typer.Option(help="channel to restore (0-based) when the input has several")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace existing outputs (never inputs)")] = False,
    preview: Annotated[
        bool, typer.Option("--preview", help="also write OUTPUT.preview.png: raw / restored, split diagonally")
    ] = False,
    tile: Annotated[
        int, typer.Option(help="largest network input edge in px (halo included); larger planes are tiled")
    ] = 1152,
    batch: Annotated[int, typer.Option(help="planes per network call")] = 4,
    scheduler: Annotated[
        Optional[str],
        typer.Option(
            help="Dask scheduler address (tcp://HOST:8786) to distribute planes over a cluster, or 'local[:N]' for"
            " a local cluster of N processes; default: this process"
        ),
    ] = None,
    workers: Annotated[
        Optional[int],
        typer.Option(
            help="threads (or local cluster processes) restoring planes at once; default: one per core for stacks"
            " of planes that fit one tile (each on its own single-threaded ONNX Runtime session), else 1"
        ),
    ] = None,
    ensemble: Annotated[
        int,
        typer.Option(
            help="K test-time augmentations (2–8 dihedral transforms: rotations by 90°, flipped or not) per plane;"
            " writes the mean as OUTPUT and the pixel-wise standard deviation as OUTPUT_std (an uncertainty map)."
            " K× slower"
        ),
    ] = 1,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="refuse (exit 2, nothing written) an input outside the package's conditions of use (no"
            " mitochondria in some planes, widths or noise outside the range the model was shown to handle);"
            " default: warn and record it in the output's metadata",
        ),
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            help="auto (ONNX Runtime when the package has ONNX weights and standard processing, else"
            " bioimageio.core) | onnxruntime | openvino | bioimageio"
        ),
    ] = "auto",
    precision: Annotated[
        str,
        typer.Option(
            help="fp32 (exact, the default) | bf16 (opt-in: OpenVINO on a CPU with bfloat16 units, ~2× faster,"
            " results differ by ~1 % of the range; an error where the CPU cannot)"
        ),
    ] = "fp32",
    ensemble_member: Annotated[
        Optional[list[str]],
        typer.Option(
            "--ensemble-member",
            help="another package (e.g. a model trained with another seed) averaged with PACKAGE; repeat for more."
            " Also writes OUTPUT_std",
        ),
    ] = None,
) -> None:
    """Predict an acquisition (2D, z-stack, time series or 3D+t; TIFF or OME-Zarr) or a folder of them with any
    bioimage.io package: planes, z-stacks or frame windows, as the package takes them. A package with a rescale
    requirement (DeepCristae) first rescales each plane to the scale it was trained at, from the pixel size or with
    --rescale. The result keeps the input's axes and metadata, with a C axis for several output channels and the
    pixel size divided by the rescale factor and the package's output scale (PSSR: 4)."""
    from cristae_zoo.rescale import parse_rescale
    from cristae_zoo.restore import RestoreOptions, plan, restore_path

    package = _abs_package(package)
    input, output = input.resolve(), output.resolve()
    options = RestoreOptions(
        weights=weights, tile=tile, batch=batch, axes=axes, channel=channel, rescale=parse_rescale(rescale),
        pixel_size_nm=pixel_size, resample_back=resample_back, overwrite=overwrite, preview=preview,
        scheduler=scheduler, workers=workers, ensemble=ensemble,
        members=tuple(_abs_package(m) for m in ensemble_member or ()), engine=engine, precision=precision, strict=strict,
    )  # fmt: skip
    plan(input, output)  # user errors before any progress bar
    from cristae_zoo.io import cleanup_on_signals

    with cleanup_on_signals(), scratch_cwd(), _progress() as progress:
        tasks: dict[str, Any] = {}

        def tick(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(f"restore {name}", total=total, info="planes")
            progress.update(tasks[name], completed=done, total=total)

        results = restore_path(package, input, output, options, progress=tick)
    for r in results:
        out.print(
            f"wrote {r.output} ({_dims(r.spec.axes, r.spec.shape)}, {r.choice.describe()}, {r.seconds:.1f} s"
            f" on {r.engine})",
            highlight=False,
        )
        for warning in r.warnings:
            console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
        if r.uncertainty is not None:
            out.print(f"uncertainty (pixel-wise std over the ensemble) {r.uncertainty}", highlight=False)
        if r.preview is not None:
            out.print(f"preview {r.preview}", highlight=False)


def _dims(axes: str, shape: tuple[int, ...]) -> str:
    return " × ".join(f"{a}{n}" for a, n in zip(axes, shape))


# ---------------------------------------------------------------------------------------------- estimate-scale


def cmd_estimate_scale(
    inputs: Annotated[list[Path], typer.Argument(help="TIFF or OME-Zarr acquisitions (any axes)")],
    axes: Annotated[Optional[str], typer.Option(help="axes of the input, e.g. TZYX")] = None,
    channel: Annotated[Optional[int], typer.Option(help="channel to measure (0-based)")] = None,
    planes: Annotated[int, typer.Option(help="planes to measure per file (those with the most signal)")] = 5,
    target: Annotated[
        float, typer.Option(help="mitochondrion width (px) the model was trained at")
    ] = 15.64,
) -> None:
    """Measure the mean mitochondrion width (px, with its spread) in each file and print the rescale factor
    towards the width the model was trained at (what `predict --rescale auto` uses)."""
    from cristae_zoo.acquisition import describe, open_acquisition
    from cristae_zoo.rescale import TRAINING_PIXEL_SIZE_NM, estimate_width, pick_planes

    table = Table(title=f"mitochondrion width → rescale factor (target {target:g} px)")
    for col in ("file", "planes", "objects", "width (px)", "width (nm)", "factor", "factor from pixel size"):
        table.add_column(col, overflow="fold")
    lines = []
    for path in inputs:
        acq = open_acquisition(path, axes=axes, channel=channel)
        with console.status(f"measuring {path.name}: {describe(acq)}"):
            est = estimate_width(list(acq.iter_planes(pick_planes(acq, planes))), name=str(path))
        lo, hi = est.factor_range(target)
        px = acq.pixel_size_nm[1] if acq.pixel_size_nm else None
        table.add_row(
            path.name,
            str(est.n_planes),
            str(est.n_objects),
            f"{est.mean:.2f} ± {est.sd:.2f} (sem {est.sem:.2f})",
            f"{est.mean * px:.0f} ± {est.sd * px:.0f}" if px else "—",
            f"{est.factor(target):.2f} ({lo:.2f}–{hi:.2f})",
            f"{px / TRAINING_PIXEL_SIZE_NM:.2f} ({px:.4g} nm / {TRAINING_PIXEL_SIZE_NM:g})" if px else "—",
        )
        lines.append(
            f"{path}: width {est.mean:.2f} ± {est.sd:.2f} px → factor {est.factor(target):.2f}"
            f" ({lo:.2f}–{hi:.2f})" + (f"; from the pixel size: {px / TRAINING_PIXEL_SIZE_NM:.2f}" if px else "")
        )
    out.print(table)
    for line in lines:  # one plain line per file, for scripts
        out.print(line, highlight=False, soft_wrap=True)
    out.print(
        "width: length-weighted mean ± sd over mitochondria (sem: uncertainty of the mean); factor range: mean ± 2"
        " sem",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add `package`, `validate`, `test`, `predict` and `estimate-scale` to `app`."""
    commands = {
        "package": cmd_package,
        "validate": cmd_validate,
        "test": cmd_test,
        "predict": cmd_predict,
        "estimate-scale": cmd_estimate_scale,
    }
    for name, fn in commands.items():
        app.command(name, help=help_text(fn))(user_errors(fn))


if __name__ == "__main__":  # pragma: no cover - manual use: python -m cristae_zoo.cli_zoo ...
    _app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
    register(_app)
    _app(sys.argv[1:])
