"""Restore whole acquisitions (2D, z-stacks, time series, 3D+t; TIFF or OME-Zarr) with a bioimage.io package.

For each file: describe it (`acquisition`), choose the rescale factor (`rescale`), then restore every plane —
read, rescale, normalise and predict in tiles, optionally resample back to the input grid — on the chosen engine
(`distributed`), and write a file of the same kind with the same axes (the channel axis dropped), float32 values,
the pixel size divided by the factor, and the input's metadata. The output appears atomically: it is written to a
hidden partial path beside the target and moved into place only when complete; on any error (a NaN plane, a full
disk, Ctrl-C) the partial output is removed and nothing else is touched. Inputs are never overwritten; an existing
output only with `overwrite`.
"""

from __future__ import annotations

import errno
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from contextlib import ExitStack
from typing import Any

import numpy as np

from cristae_zoo.acquisition import (
    Acquisition,
    OutputSpec,
    create_zarr,
    is_acquisition,
    is_zarr,
    list_acquisitions,
    open_acquisition,
    output_spec,
    staged_output,
    write_tiff_planes,
)
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.predict import DEFAULT_TILE, cpu_cores
from cristae_zoo.uncertainty import uncertainty_path

#: Planes per network call. Batching amortises the per-call overhead of small planes (see docs/benchmarks.md);
#: a batch is capped at about one full tile of pixels, because the network's activations grow with the batch
#: (four 1024² planes at once took ONNX Runtime past 5 GB).
DEFAULT_BATCH = 4
_BATCH_PIXELS = 1152 * 1152


@dataclass(frozen=True)
class RestoreOptions:
    weights: str | None = None
    tile: int | None = DEFAULT_TILE
    batch: int = DEFAULT_BATCH
    axes: str | None = None
    channel: int | None = None
    rescale: float | str | None = None  # a factor, "auto", or None (from the pixel size)
    pixel_size_nm: float | None = None
    resample_back: bool = False
    overwrite: bool = False
    preview: bool = False
    scheduler: str | None = None
    workers: int | None = None  # units restored at once; None: as many as cores where that is faster (`units_at_once`)
    estimate_planes: int = 5
    ensemble: int = 1  # dihedral test-time augmentations per plane (2–8 → an uncertainty map)
    members: tuple[str, ...] = ()  # more packages averaged with the first one (→ an uncertainty map)
    strict: bool = False  # refuse inputs outside the package's conditions of use instead of warning
    engine: str = "auto"  # auto | onnxruntime | openvino | bioimageio (cristae_zoo.engines)
    precision: str = "fp32"  # fp32 | bf16 (bf16: OpenVINO on a CPU with bfloat16 units; opt-in)

    @property
    def uncertainty(self) -> bool:
        return self.ensemble > 1 or bool(self.members)


@dataclass
class RestoreResult:
    input: Path
    output: Path
    source: Acquisition
    spec: OutputSpec
    choice: Any  # rescale.RescaleChoice
    seconds: float
    preview: Path | None = None
    uncertainty: Path | None = None  # the pixel-wise standard deviation over the ensemble, beside the output
    engine: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # e.g. outside the package's conditions of use


Progress = Callable[[str, int, int], None]  # (file name, planes done, planes total)


def output_path_for(input: Path, output: Path, many: bool) -> Path:
    """`output` itself for one file; for a folder of inputs, the input's name inside the `output` folder."""
    return Path(output) / Path(input).name if many else Path(output)


def plan(inputs: Path, output: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs: one file, or every acquisition of a folder into an output folder."""
    inputs = Path(inputs)
    if not inputs.exists():
        raise CristaeZooError(f"{inputs}: file not found")
    if inputs.is_dir() and not is_acquisition(inputs):
        files = list_acquisitions(inputs)
        if Path(output).exists() and not Path(output).is_dir():
            raise CristaeZooError(f"{output}: expected an output folder for the folder of inputs {inputs}")
        pairs = [(f, output_path_for(f, output, True)) for f in files]
    else:
        output = Path(output)
        if output.is_dir() and not is_zarr(output):  # an existing folder: write the input's name into it
            output = output / inputs.name
        pairs = [(inputs, output)]
    for inp, out in pairs:
        i, o = inp.resolve(), out.resolve()
        if o == i or i in o.parents:  # the input itself, or a path inside an input OME-Zarr folder
            raise CristaeZooError(f"{out}: refusing to overwrite an input file")
    return pairs


def restore_path(
    package: str | Path,
    inputs: Path,
    output: Path,
    options: RestoreOptions,
    progress: Progress | None = None,
) -> list[RestoreResult]:
    """Restore one acquisition or a folder of them; see the module docstring. `package`: a package folder, rdf,
    zip or model name. The package is loaded (and checked) once, here, before any input is read."""
    from cristae_zoo.distributed import engine, load_restorer

    pairs = plan(inputs, output)
    if options.uncertainty:
        _check_ensemble(options, pairs)
    package_source = str(_package_source(package))
    restorer = load_restorer(package_source, options.weights, options.tile, options.engine, options.precision)
    members = tuple(str(_package_source(m)) for m in options.members)
    for member in members:  # load them now: a bad member is an error before any work
        load_restorer(member, options.weights, options.tile, options.engine, options.precision)
    options = replace(options, members=members)
    results = []
    workers = options.workers if options.workers is not None else (cpu_cores() if options.scheduler is None else 1)
    with engine(options.scheduler, workers) as eng:
        for inp, out in pairs:
            results.append(restore_one(package_source, restorer, inp, out, options, eng, progress=progress))
    return results


def _check_ensemble(options: RestoreOptions, pairs: list[tuple[Path, Path]]) -> None:
    from cristae_zoo.uncertainty import N_DIHEDRAL, uncertainty_path

    if not 1 <= options.ensemble <= N_DIHEDRAL:
        raise CristaeZooError(f"--ensemble {options.ensemble}: expected 2 to 8 test-time augmentations (or 1 with"
                              " --ensemble-member)")  # fmt: skip
    if options.ensemble == 1 and not options.members:
        raise CristaeZooError("an ensemble needs --ensemble 2..8 or at least one --ensemble-member package")
    for inp, out in pairs:
        std = uncertainty_path(out)
        if std.resolve() == inp.resolve():
            raise CristaeZooError(f"{std}: refusing to overwrite an input file with the uncertainty map")
        if std.exists() and not options.overwrite:
            raise CristaeZooError(f"{std}: already exists; use --overwrite to replace it")


def _package_source(package: str | Path) -> Path:
    from cristae_zoo.predict import resolve_package

    return resolve_package(package).resolve()


def restore_one(
    package: str,
    restorer: Any,
    input: Path,
    output: Path,
    options: RestoreOptions,
    eng: Any,
    *,
    progress: Progress | None = None,
) -> RestoreResult:
    from cristae_zoo import __version__
    from cristae_zoo.acquisition import output_kind
    from cristae_zoo.distributed import InOrder, PlaneJob, restore_batch
    from cristae_zoo.rescale import RescaleChoice, rescaled_shape
    from cristae_zoo.units import output_axes, output_planes, plan_units

    start = time.perf_counter()
    tensors = restorer.tensors
    weights = restorer.weights_format
    acq = open_acquisition(input, axes=options.axes, channel=options.channel, pixel_size_nm=options.pixel_size_nm)
    unit_plan = plan_units(acq, tensors, str(input))
    if Path(output).exists() and not options.overwrite:  # before the slow parts
        raise CristaeZooError(f"{output}: already exists; use --overwrite to replace it")
    if options.preview and not options.overwrite:
        for png in preview_paths(Path(output), tensors.output_channels):
            if png.exists():
                raise CristaeZooError(f"{png}: the preview already exists; use --overwrite to replace it")
    if tensors.rescale is None:
        if options.rescale is not None or options.resample_back:
            flag = "--rescale" if options.rescale is not None else "--resample-back"
            raise CristaeZooError(
                f"{flag}: the package {restorer.name!r} has no rescale requirement (it runs on the file's own pixels);"
                " drop the option"
            )
        choice = RescaleChoice(factor=1.0, source="none: the package has no rescale requirement")
    else:
        choice = _rescale_choice(acq, tensors.rescale, options, str(input))
    t_factor = time.perf_counter() - start
    restored_shape = rescaled_shape(acq.plane_shape, choice.factor)
    s = tensors.output_scale
    written_shape = acq.plane_shape if options.resample_back else (restored_shape[0] * s, restored_shape[1] * s)
    provenance = {
        "software": f"cristae-zoo {__version__}",
        "model": restorer.name,
        "package": package,
        "weights": weights or "onnx",
        "engine": restorer.engine,
        "precision": restorer.precision,
        "input": str(Path(input).name),
        "rescale_factor": choice.factor,
        "rescale_source": choice.source,
        "output_scale": s,
        "output_channels": tensors.output_channels,
        "resampled_back_to_input_grid": options.resample_back,
    }
    if choice.width is not None:
        provenance["estimated_width_px"] = round(choice.width.mean, 3)
    warnings: list[str] = []
    kind = output_kind(acq, Path(output))
    out_axes = output_axes(acq.axes, tensors.n_out, kind)
    unit_spatial = ((acq.sizes["Z"],) if unit_plan.spatial == "zyx" else ()) + tuple(restored_shape)
    batch = max(1, min(options.batch, _BATCH_PIXELS // max(1, int(np.prod(unit_spatial)))))
    indices = unit_plan.indices()
    batches = [indices[i : i + batch] for i in range(0, len(indices), batch)]
    at_once = units_at_once(restorer, options, eng.workers, unit_spatial, len(batches))
    window = max(2, at_once + 1)  # one batch read ahead while `at_once` are restored
    job = PlaneJob(package=package, weights=options.weights, tile=options.tile, engine=options.engine,
                   precision=options.precision, input=str(Path(input).resolve()),
                   axes=options.axes, channel=options.channel, factor=choice.factor,
                   restored_shape=restored_shape, output_shape=written_shape, plan=unit_plan,
                   out_axes=out_axes, tta=options.ensemble, members=options.members, at_once=at_once)  # fmt: skip
    # A TIFF output is written from returned units, so the first batches start now and run while the conditions
    # check measures the input (on one core: the check is single-threaded). OME-Zarr workers write into the staged
    # output, which exists only once the check has passed.
    started = InOrder(eng.executor, restore_batch, batches, job, window=window) if kind != "ome-zarr" else None
    name = Path(input).name
    done = 0
    std_output = uncertainty_path(Path(output)) if options.uncertainty else None
    try:
        conditions = restorer.conditions
        if conditions is not None:
            known = None if choice.width is None else choice.width.mean * choice.factor
            report = _check_conditions(acq, conditions, restored_shape, width_px=known)
            provenance["conditions_of_use"] = {"measured": report.measured, "outside": report.outside}
            if not report.ok:
                if options.strict:
                    raise CristaeZooError(report.message(str(input)) + " (--strict: nothing was written)")
                warnings.append(report.message(str(input)))
        spec = output_spec(acq, Path(output), written_shape, 1.0 if options.resample_back else choice.factor * s,
                           provenance, axes=out_axes,
                           channel_names=tuple(tensors.output_channels) if tensors.n_out > 1 else ())  # fmt: skip
        if progress:
            progress(name, 0, len(indices))
        with ExitStack() as stack:
            tmp = stack.enter_context(staged_output(Path(output), overwrite=options.overwrite, inputs=[input]))
            tmp_std = (stack.enter_context(staged_output(std_output, overwrite=options.overwrite, inputs=[input]))
                       if std_output else None)  # fmt: skip
            std_spec = _std_spec(spec, std_output, options) if std_output else None
            if started is None:  # OME-Zarr
                job = replace(job, zarr_output=str(tmp.resolve()),
                              std_zarr_output=str(tmp_std.resolve()) if tmp_std is not None else None)  # fmt: skip
                create_zarr(spec, tmp)
                if std_spec is not None:
                    create_zarr(std_spec, tmp_std)
                for n in InOrder(eng.executor, restore_batch, batches, job, window=window):
                    done += n
                    if progress:
                        progress(name, done, len(indices))
            else:
                # The std units wait in a scratch file beside the output (bounded memory) while the restoration
                # streams into its TIFF; then they stream into theirs. Written with write() (a full disk is an
                # OSError) and read back memory-mapped: writing through a memory map would die by SIGBUS instead.
                std_file = None
                unit_shape = (tensors.n_out, *unit_spatial[:-2], *written_shape)
                if std_spec is not None:
                    scratch = stack.enter_context(tempfile.TemporaryDirectory(dir=Path(output).parent,
                                                                              prefix=".cristae-zoo-"))  # fmt: skip
                    std_path = Path(scratch) / "std.f32"
                    std_file = stack.enter_context(open(std_path, "wb"))

                def planes() -> Any:
                    nonlocal done
                    for restored in started:
                        if std_file is not None:
                            restored, std = restored
                            std_file.write(np.ascontiguousarray(std, np.float32).tobytes())
                        for unit in restored:
                            yield from output_planes(unit, unit_plan, spec.axes)
                        done += len(restored)
                        if progress:
                            progress(name, done, len(indices))

                write_tiff_planes(spec, tmp, planes())
                if std_file is not None:
                    std_file.close()
                    std_units = np.memmap(std_path, dtype=np.float32, mode="r", shape=(len(indices), *unit_shape))
                    write_tiff_planes(std_spec, tmp_std,
                                      (p for u in std_units for p in output_planes(u, unit_plan, spec.axes)))  # fmt: skip
                    del std_units
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CristaeZooError(
                f"{output}: disk full while writing ({err.strerror}); the partial output was removed, {input} is"
                " untouched"
            ) from None
        raise CristaeZooError(f"{output}: cannot write ({err}); the partial output was removed") from None
    finally:
        if started is not None:  # a refusal or an error before the TIFF was written: drop the batches not started
            started.cancel()
    seconds = time.perf_counter() - start
    result = RestoreResult(input=Path(input), output=Path(output), source=acq, spec=spec, choice=choice,
                           seconds=seconds, engine=f"{restorer.description}, {eng.description}",
                           timings={"factor_s": t_factor, "restore_s": seconds - t_factor},
                           uncertainty=std_output, warnings=warnings)  # fmt: skip
    if options.preview:
        result.preview = write_preview(result)
    return result


def units_at_once(restorer: Any, options: RestoreOptions, workers: int, unit_spatial: tuple[int, ...],
                  n_batches: int) -> int:  # fmt: skip
    """How many batches of units run at the same time in this process, each on its own runner with
    cores // that many intra-op threads (`Restorer.lend_runner`). `--workers N` says N. By default (workers
    None): as many as there are threads (one per core) when ONNX Runtime restores several batches whose units each
    fit in one tile: on these 2 cores that restored a 20 × 1024² stack faster than one session using both cores
    per operator (docs/benchmarks.md, "e2e"), with bit-identical results. Otherwise 1: one plane that needs tiles
    (the tiles of a 2048² plane at once would double the memory of its arena), OpenVINO (its own latency
    threading) or bioimageio.core, and Dask (each worker process runs its own)."""
    if options.scheduler is not None:
        return 1
    if options.workers is not None:
        return max(1, min(options.workers, n_batches))
    if restorer.engine != "onnxruntime" or n_batches < 2 or restorer.n_tiles(unit_spatial) > 1:
        return 1
    at_once = max(1, min(workers, n_batches))
    # Each runner keeps an arena for its unit's activations (~0.7 KiB per pixel for DeepCristae's U-Net; a
    # 1024² plane: 0.7 GiB; per output pixel where the network enlarges). Two at once only where twice that leaves half the available memory free.
    pixels = int(np.prod(unit_spatial)) * restorer.tensors.output_scale ** 2  # PSSR works at 4× the input's pixels
    need = at_once * _ARENA_BYTES_PER_PIXEL * pixels
    return at_once if need <= available_memory() / 2 else 1


#: Activation memory of one ONNX Runtime call per input pixel, rounded up (measured: a 1024² DeepCristae plane
#: peaks at 880 MiB in a process that holds nothing else, ~700 MiB of it the arena).
_ARENA_BYTES_PER_PIXEL = 1024


def available_memory() -> float:
    """Bytes the kernel says can be allocated without swapping (MemAvailable); infinite where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


def _check_conditions(
    acq: Acquisition, conditions: Any, shape: tuple[int, int], *, width_px: float | None = None
) -> Any:
    """Measure a sample of the input's planes, rescaled as the network will see them (`conditions.check`), reading
    one plane at a time (one plane of memory, however many are sampled). `width_px`: the rescaled width, where
    `--rescale auto` already measured it."""
    from cristae_zoo.conditions import STRUCTURE_PLANES, WIDTH_PLANES, check_stream
    from cristae_zoo.rescale import pick_planes

    indices = acq.plane_indices()
    step = max(1, len(indices) // STRUCTURE_PLANES)
    sampled = set(indices[::step][:STRUCTURE_PLANES])
    widest = set(pick_planes(acq, WIDTH_PLANES))
    order = sorted(sampled | widest)

    def planes() -> Any:
        for i, plane in zip(order, acq.iter_planes(order)):
            if tuple(plane.shape) != tuple(shape):  # skimage is imported only when a plane is rescaled
                from cristae_zoo.rescale import resample

                plane = resample(plane, shape)
            yield plane, i in sampled, i in widest

    return check_stream(conditions, planes(), width_px=width_px)


def _rescale_choice(acq: Acquisition, requirement: Any, options: RestoreOptions, name: str) -> Any:
    """The rescale factor towards the package's training scale (`requirement`: a `RescaleRequirement`)."""
    from cristae_zoo.rescale import TRAINING_WIDTH_PX, Training, choose_factor, estimate_width, pick_planes

    width = requirement.structure_width_px
    if options.rescale == "auto" and width is None:
        raise CristaeZooError(
            "--rescale auto: the package does not state the mitochondrion width it was trained at; give --pixel-size"
            " NM or --rescale FACTOR"
        )
    train = Training(pixel_size_nm=requirement.pixel_size_nm, width_px=width or TRAINING_WIDTH_PX)

    def estimate() -> Any:
        return estimate_width(list(acq.iter_planes(pick_planes(acq, options.estimate_planes))), name=name)

    from cristae_zoo.acquisition import pixel_size_note

    return choose_factor(options.rescale, options.pixel_size_nm, acq.pixel_size_nm, train, name=name,
                         estimate=estimate, plane_shape=acq.plane_shape,
                         metadata_note=pixel_size_note(acq))  # fmt: skip


def _std_spec(spec: OutputSpec, path: Path, options: RestoreOptions) -> OutputSpec:
    """The uncertainty map: same axes, shape and pixel size as the restoration, its provenance saying what it is."""
    what = {"content": "pixel-wise standard deviation (ddof 0) over the ensemble",
            "test_time_augmentations": options.ensemble, "models": 1 + len(options.members)}  # fmt: skip
    return replace(spec, path=path, provenance=spec.provenance | what)


def preview_paths(output: Path, channels: list[str] | None = None) -> list[Path]:
    """`OUT.preview.png`, or one `OUT.<channel>.preview.png` per output channel of a multi-channel package."""
    name = Path(output).name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    if channels and len(channels) > 1:
        return [Path(output).parent / f"{name}.{c}.preview.png" for c in channels]
    return [Path(output).parent / f"{name}.preview.png"]


def write_preview(result: RestoreResult) -> Path:
    """The before/after PNG(s) of a restoration; returns the first (one per output channel)."""
    from cristae_zoo.preview import projection, save_preview

    channels = list(result.spec.channel_names)
    paths = preview_paths(result.output, channels)
    raw = None
    for i, path in enumerate(paths):
        restored_acq = open_acquisition(result.output, channel=i if channels else None)
        restored = projection(restored_acq)
        if raw is None:
            raw = projection(result.source, shape=restored.shape)
        what = f" {channels[i]}" if channels else ""
        scale = f", {result.choice.describe()}" if result.choice.factor != 1 or "none" not in result.choice.source else ""
        title = f"{result.input.name}: raw (bottom left) / restored{what} (top right){scale}"
        save_preview(raw, restored, path, title)
    return paths[0]
