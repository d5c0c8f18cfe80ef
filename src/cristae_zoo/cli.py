"""The `cristae-zoo` command line: one command per pipeline step.

simulate → prepare → patches → train → evaluate → package → validate/test → predict
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter is not for users

import typer  # noqa: E402

from cristae_zoo.cli_common import console, fail, new_progress, override, parse_ints, progress_bar, user_errors  # noqa: E402
from cristae_zoo.errors import CristaeZooError  # noqa: E402

app = typer.Typer(
    name="cristae-zoo",
    help="Deep-learning restoration of mitochondria cristae (DeepCristae) and related models, as bioimage.io packages.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
_fail = fail
_override = override


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        app()
    except CristaeZooError as err:
        _fail(str(err))


@app.command()
@user_errors
def simulate(
    output: Annotated[Path, typer.Argument(help="folder to write hr/, mito_mask/, cristae_mask/ and montage.png into")],
    config: Annotated[Optional[Path], typer.Option(help="SimulationConfig YAML; flags below override it")] = None,
    n_images: Annotated[Optional[int], typer.Option(help="number of images (paper: 33)")] = None,
    size: Annotated[Optional[int], typer.Option(help="image height and width in px")] = None,
    seed: Annotated[Optional[int], typer.Option(help="random seed")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing folder written by simulate (as a whole)")] = False,
) -> None:
    """Simulate HR 2D STED images of live mitochondria (25 nm/px) with their exact mitochondria and cristae masks."""
    from cristae_zoo.data.simulate import SIMULATION_MARKER, simulate_dataset
    from cristae_zoo.config import SimulationConfig  # (pydantic models: built only for the commands that use them)
    from cristae_zoo.io import check_target, cleanup_on_signals

    cfg = SimulationConfig.from_yaml(config) if config else SimulationConfig()
    cfg = _override(cfg, n_images=n_images, seed=seed, height=size, width=size)
    check_target(output, overwrite=overwrite, marker=SIMULATION_MARKER, folder=True, inputs=[config] if config else [])
    with cleanup_on_signals(), progress_bar("simulating", cfg.n_images) as advance:
        paths = simulate_dataset(cfg, output, progress=advance, overwrite=overwrite)
    console.print(f"wrote {len(paths)} HR images to {output / 'hr'} and a montage to {output / 'montage.png'}")


@app.command()
@user_errors
def prepare(
    hr_dir: Annotated[Path, typer.Argument(help="folder of HR 2D TIFF images (e.g. simulate's hr/)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="data folder to write")] = Path("runs/data"),
    config: Annotated[Optional[Path], typer.Option(help="DegradationConfig YAML; flags below override it")] = None,
    rl_iterations: Annotated[Optional[int], typer.Option(help="RL iterations for the ground truth")] = None,
    n_test: Annotated[Optional[int], typer.Option(help="images held out for testing (paper: 9 of 33)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="seed of the split and the noise")] = None,
    overwrite: Annotated[bool, typer.Option(help="rebuild an existing data folder written by prepare from scratch")] = False,
) -> None:
    """Build D_synt: RL-deconvolved ground truths, blurred + Poisson–Gaussian-noised inputs, train/test split."""
    from cristae_zoo.data.prepare import _mask_folders, prepare_dataset, rl_iteration_sweep
    from cristae_zoo.io import cleanup_on_signals, list_images, read_image_2d
    from cristae_zoo.config import DegradationConfig  # (pydantic models: built only for the commands that use them)
    from cristae_zoo.plots import plot_rl_sweep

    cfg = DegradationConfig.from_yaml(config) if config else DegradationConfig()
    cfg = _override(cfg, rl_iterations=rl_iterations, n_test=n_test, seed=seed)
    n = len(list_images(hr_dir))
    masks = _mask_folders(Path(hr_dir))

    def rl_figure(folder: Path) -> None:  # written into the staged folder, so it is part of the atomic move
        if "mito_mask" not in masks:
            return
        import tifffile

        first = list_images(hr_dir)[0]
        mito = tifffile.imread(masks["mito_mask"] / first.name) > 0
        cristae = tifffile.imread(masks["cristae_mask"] / first.name) > 0 if "cristae_mask" in masks else None
        crops, scores = rl_iteration_sweep(read_image_2d(first), mito, cristae, cfg.rl_psf_sigma_px)
        plot_rl_sweep(crops, scores, cfg.rl_iterations, folder / "rl_iterations.png")

    with cleanup_on_signals(), progress_bar("preparing D_synt", n) as advance:
        splits = prepare_dataset(hr_dir, output, cfg, progress=advance, overwrite=overwrite, finish=rl_figure)
    console.print(f"{len(splits['train'])} training and {len(splits['test'])} test images in {output}")


@app.command()
@user_errors
def patches(
    data_dir: Annotated[Path, typer.Argument(help="data folder written by `prepare`")],
    output: Annotated[Path, typer.Option("--output", "-o", help=".npz file to write")] = Path("runs/patches.npz"),
    sampling: Annotated[Optional[str], typer.Option(help="'mito' (paper) or 'uniform' (default: the config's)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="seed of the patch draw (default: the config's)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing OUTPUT (.npz and .png)")] = False,
) -> None:
    """Sample 128×128 DeepCristae training patches centred on mitochondria (or uniformly), 20 % for validation."""
    from cristae_zoo.io import atomic_path
    from cristae_zoo.plots import plot_patch_overview
    from cristae_zoo.systems.deepcristae import DeepCristaeConfig, build_patch_set

    for target in (output, output.with_suffix(".png")):
        if target.exists() and not overwrite:
            raise CristaeZooError(f"{target}: already exists; use --overwrite to replace it")
    base = DeepCristaeConfig(data_dir=data_dir)
    cfg = _override(base, patches=_override(base.patches, sampling=sampling, seed=seed).model_dump())
    with progress_bar("sampling patches", None) as advance:
        patch_set, overview = build_patch_set(cfg, advance)
    with atomic_path(output) as tmp:
        with open(tmp, "wb") as f:
            patch_set.save(f)
    plot_patch_overview(overview, cfg.patches.patch_size, output.with_suffix(".png"))
    console.print(f"{len(patch_set.x_train)} training + {len(patch_set.x_val)} validation patches → {output}")


#: `train` flag → key path in the training config (every flag defaults to None: the config's value stands)
TRAIN_FLAGS: dict[str, tuple[str, ...]] = {
    "data": ("data_dir",), "output": ("output_dir",), "loss": ("loss",), "epochs": ("epochs",),
    "steps_per_epoch": ("steps_per_epoch",), "steps": ("steps",), "validate_every": ("validate_every",),
    "batch_size": ("batch_size",), "learning_rate": ("learning_rate",), "seed": ("seed",),
    "pixel_size": ("pixel_size_nm",), "init_from": ("init_from",), "max_minutes": ("max_minutes",),
    "filters": ("network", "filters"), "depth": ("network", "depth"), "ndim": ("network", "ndim"),
    "frames": ("network", "n_frames"), "sampling": ("patches", "sampling"), "structures": ("structures",),
    "patch": ("patch_size",),
}  # fmt: skip


def training_config(config: Optional[Path], system: Optional[str], **flags: Any) -> Any:
    """The training config of `cristae-zoo train`: the YAML (or the system's defaults), then the flags that were
    given, each checked against the system's config ('--epochs: not an option of labelfree')."""
    from cristae_zoo.core.system import get_system, training_config_from_dict, training_config_from_yaml

    if config is not None:
        base = training_config_from_yaml(config)
        if system is not None and system != base.system:
            raise CristaeZooError(f"--system {system}: {config} is a {base.system} config")
        data = base.model_dump(mode="json", exclude_unset=False)
    else:
        name = system or "deepcristae"
        data = {"system": get_system(name).name}
    cls = get_system(data["system"]).config_class
    paths = dict(TRAIN_FLAGS)
    mode, bin_factor = flags.pop("mode", None), flags.pop("bin_factor", None)
    if flags.pop("no_residual", False):  # DeepCristae: network.residual; luminescence: the head's residual
        flags["residual"] = False
        paths["residual"] = ("residual",) if "residual" in cls.model_fields else ("network", "residual")
    for flag, value in flags.items():
        if value is None:
            continue
        path = paths.get(flag, (flag,))
        field = cls.model_fields.get(path[0])
        if field is None or (len(path) > 1 and path[1] not in getattr(field.annotation, "model_fields", {})):
            raise CristaeZooError(f"--{flag.replace('_', '-')}: not an option of the {data['system']} system")
        if flag == "structures":
            value = [s.strip() for s in str(value).split(",") if s.strip()]
        elif flag == "patch":
            value = parse_ints(str(value), "--patch")
        elif flag in ("data", "output"):
            value = str(value)
        target = data
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    if mode is not None or bin_factor is not None:
        if "mode" not in cls.model_fields:
            raise CristaeZooError(f"--mode/--bin-factor: not options of the {data['system']} system")
        from cristae_zoo.luminescence.modes import ModeConfig

        if mode is not None:  # a mode's folders and binning defaults, as `ModeConfig.for_mode` gives them
            if mode not in ("pairs", "binning", "noise2noise"):
                raise CristaeZooError(f"--mode {mode!r}: expected pairs, binning or noise2noise")
            data["mode"] = ModeConfig.for_mode(mode, bin_factor or 4).model_dump()  # type: ignore[arg-type]
        else:
            data.setdefault("mode", {})["bin_factor"] = bin_factor
    return training_config_from_dict(data, str(config) if config else "options")


@app.command()
@user_errors
def train(
    config: Annotated[Optional[Path], typer.Argument(help="training config YAML; its `system:` names the system (flags override it)")] = None,
    system: Annotated[Optional[str], typer.Option(help="without a CONFIG: deepcristae (default) | labelfree | pssr | luminescence")] = None,
    data: Annotated[Optional[Path], typer.Option(help="training data folder")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="model folder to write")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace the files a training writes in an existing --output")] = False,
    resume: Annotated[bool, typer.Option(help="continue the interrupted training in --output (same config; budget may grow)")] = False,
    init_from: Annotated[Optional[str], typer.Option(help="fine-tune: start from this package (name, folder, rdf, zip) of the same system")] = None,
    pixel_size: Annotated[Optional[float], typer.Option(help="pixel size of the training data (nm): the package's rescale requirement")] = None,
    max_minutes: Annotated[Optional[float], typer.Option(help="wall-time budget; the training stops resumably")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="stop this run after this many steps (resumable)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="seed of split, patch draws and initialisation")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="patches per batch")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(help="Adam learning rate (PSSR: the one-cycle peak)")] = None,
    steps: Annotated[Optional[int], typer.Option(help="training steps (labelfree, pssr, luminescence)")] = None,
    validate_every: Annotated[Optional[int], typer.Option(help="steps between validations (labelfree, pssr, luminescence)")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="epochs (deepcristae)")] = None,
    steps_per_epoch: Annotated[Optional[int], typer.Option(help="batches per epoch (deepcristae; default: all patches)")] = None,
    loss: Annotated[Optional[str], typer.Option(help="deepcristae: scop | mae (CARE) | mse | dssim; luminescence: laplace | gaussian")] = None,
    sampling: Annotated[Optional[str], typer.Option(help="mito (DeepCristae) | uniform (CARE)")] = None,
    filters: Annotated[Optional[int], typer.Option(help="filters of the first U-Net level")] = None,
    depth: Annotated[Optional[int], typer.Option(help="U-Net depth")] = None,
    no_residual: Annotated[bool, typer.Option("--no-residual", help="deepcristae: drop the input-to-output addition")] = False,
    ndim: Annotated[Optional[int], typer.Option(help="labelfree, luminescence: 2 or 3")] = None,
    frames: Annotated[Optional[int], typer.Option(help="pssr: 1 (PSSR-SF) or 5 (PSSR-MF)")] = None,
    structures: Annotated[Optional[str], typer.Option(help="labelfree: comma-separated structure folders")] = None,
    patch: Annotated[Optional[str], typer.Option(help="labelfree, luminescence: patch size, e.g. 64,64 or 16,32,32")] = None,
    mode: Annotated[Optional[str], typer.Option(help="luminescence: pairs | binning | noise2noise")] = None,
    bin_factor: Annotated[Optional[int], typer.Option(help="luminescence binning: 2, 4 or 8")] = None,
    device: Annotated[str, typer.Option(help="auto (a GPU if Keras' backend sees one) | cpu | gpu (refused if none)")] = "auto",
) -> None:
    """Train any system's network with the one trainer; keep the best weights on validation loss in a model folder.

    CONFIG.yaml names its system (`system:`); without one, the flags build a DeepCristae config (or --system's).

    Flags override the config; flags not given keep the config's values (the CLI has no defaults of its own)."""
    from cristae_zoo.cli_common import new_progress
    from cristae_zoo.core.trainer import train as run_training
    from cristae_zoo.io import cleanup_on_signals

    cfg = training_config(
        config, system, data=data, output=output, init_from=init_from, pixel_size=pixel_size, max_minutes=max_minutes,
        seed=seed, batch_size=batch_size, learning_rate=learning_rate, steps=steps, validate_every=validate_every,
        epochs=epochs, steps_per_epoch=steps_per_epoch, loss=loss, sampling=sampling, filters=filters, depth=depth,
        no_residual=no_residual, ndim=ndim, frames=frames, structures=structures, patch=patch, mode=mode,
        bin_factor=bin_factor,
    )  # fmt: skip
    if config is not None and output is None and cfg.output_dir is None:
        raise CristaeZooError(f"{config}: no output_dir in the config; give --output")
    # SIGTERM/SIGHUP unwind like Ctrl-C: the lock is released; the folder keeps its last checkpoint for --resume
    with cleanup_on_signals(), new_progress() as bar:
        task: list[Any] = []

        def progress(step: int, total: int, message: str) -> None:
            if not task:
                task.append(bar.add_task(f"training {cfg.system}", total=total, completed=step, info=""))
            bar.update(task[0], completed=step, total=total, **({"info": message} if message else {}))

        result = run_training(cfg, resume=resume, overwrite=overwrite, max_steps=max_steps, progress=progress,
                              device=device)
    how = "" if result.finished else f" (stopped by the {result.stopped} at step {result.steps} of {result.total_steps}: --resume continues)"
    console.print(
        f"model folder: {result.model_dir} (best validation loss {result.best_val_loss:.4g}; trained on"
        f" {result.device}){how}"
    )


@app.command()
@user_errors
def evaluate(
    model_dirs: Annotated[list[Path], typer.Argument(help="one or more model folders of one system written by `train`, or packages (folder, rdf, zip or model_zoo name: evaluated through their Keras weights; need --output, and --data where the training data is not here)")],
    data: Annotated[Optional[Path], typer.Option(help="data to evaluate on (default: the training's held-out data)")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="folder for CSV/MD/PNG (default: MODEL/evaluation)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an earlier evaluation in the output folder")] = False,
) -> None:
    """The system's metrics and baselines on held-out data (DeepCristae: NRMSE, PSNR, SSIM vs median, Wiener, RL;
    label-free: Pearson r, SSIM; PSSR: PSNR, SSIM, SNR vs bilinear; luminescence: PSNR, SSIM, mask MAE, Pearson r)."""
    from cristae_zoo.core.model_dir import load_init_source

    # A package is evaluated through its trainable Keras weights (the attachment `init_from` reads), which the
    # packager checked reproduce the shipped weights' test outputs: before/after tables need no model folder.
    models = [load_init_source(d) for d in model_dirs]
    system = models[0].system
    for m in models[1:]:
        if m.system.name != system.name:
            raise CristaeZooError(f"{m.source}: a {m.system.name} model; {models[0].source} is {system.name}: evaluate one system at a time")
    labels = [m.label for m in models]
    twice = next((label for label in labels if labels.count(label) > 1), None)
    if twice is not None:
        raise CristaeZooError(f"{twice}: two models have this name; give each model folder or package a distinct name")
    if output is None and models[0].model_dir is None:
        raise CristaeZooError(f"{model_dirs[0]}: a package; give the folder to write the evaluation in (--output)")
    out = output or model_dirs[0] / "evaluation"
    for name in ("metrics.csv", "summary.md"):
        if (out / name).exists() and not overwrite:
            raise CristaeZooError(f"{out / name}: an earlier evaluation is there; use --overwrite to replace it or choose another --output")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with progress_bar(f"evaluating ({system.name})", None) as advance:
            md = system.evaluate(models, out, data_dir=data, progress=advance)
    except OSError as err:  # a full disk, a read-only folder: one line
        raise CristaeZooError(f"{err.filename or out}: cannot write the evaluation ({err.strerror or err})") from None
    from cristae_zoo.cli_common import out as stdout

    stdout.print(md, highlight=False, markup=False)
    console.print(f"wrote {out / 'metrics.csv'}, {out / 'summary.md'} and figures")


@app.command()
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for everything the demo writes")] = Path("runs/demo"),
    n_images: Annotated[int, typer.Option(help="simulated images")] = 8,
    size: Annotated[int, typer.Option(help="image size in px")] = 256,
    epochs: Annotated[int, typer.Option(help="training epochs")] = 3,
) -> None:
    """The whole pipeline on a small default: simulate → prepare → train (short) → evaluate."""
    import shutil

    if (output / "model" / "config.yaml").is_file():  # the demo's own model from an earlier run
        shutil.rmtree(output / "model")
    simulate(output / "sim", n_images=n_images, size=size, seed=0, overwrite=True)  # the demo's own folders
    prepare(output / "sim" / "hr", output=output / "data", n_test=2, seed=0, overwrite=True)
    train(data=output / "data", output=output / "model", epochs=epochs, filters=16, depth=3)
    evaluate([output / "model"], data=output / "data", output=output / "model" / "evaluation")


from cristae_zoo import cli_labelfree, cli_zoo  # noqa: E402  (package, validate, test, predict; labelfree)

cli_zoo.register(app)
cli_labelfree.register(app)
from cristae_zoo import cli_pssr  # noqa: E402  (PSSR super-sampling)

cli_pssr.register(app)
from cristae_zoo import cli_luminescence  # noqa: E402  (luminescence CARE, Boothe et al.)

cli_luminescence.register(app)
from cristae_zoo import cli_clients  # noqa: E402  (check-clients: which bioimage.io clients load a package)

cli_clients.register(app)
try:  # studies of trust (stability, limits, ablation), kept in their own module
    from cristae_zoo import cli_studies  # noqa: E402

    cli_studies.register(app)
except ImportError:  # pragma: no cover - while that module is being written
    pass


if __name__ == "__main__":
    main()
