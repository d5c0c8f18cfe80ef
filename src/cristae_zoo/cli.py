"""The `cristae-zoo` command line: one command per pipeline step.

simulate → prepare → patches → train → evaluate → package → validate/test → predict
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Annotated, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter is not for users

import typer  # noqa: E402
from rich.table import Table  # noqa: E402

from cristae_zoo.config import DegradationConfig, PatchConfig, SimulationConfig, TrainConfig  # noqa: E402
from cristae_zoo.cli_common import console, fail, new_progress, override, progress_bar, user_errors  # noqa: E402
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
def patches(
    data_dir: Annotated[Path, typer.Argument(help="data folder written by `prepare`")],
    output: Annotated[Path, typer.Option("--output", "-o", help=".npz file to write")] = Path("runs/patches.npz"),
    sampling: Annotated[str, typer.Option(help="'mito' (paper) or 'uniform'")] = "mito",
    seed: Annotated[int, typer.Option(help="seed of the patch draw")] = 0,
) -> None:
    """Sample 128×128 training patches centred on mitochondria (or uniformly), 20 % for validation."""
    from cristae_zoo.plots import plot_patch_overview
    from cristae_zoo.train import build_patch_set

    cfg = _override(TrainConfig(), data_dir=data_dir, patches=_override(PatchConfig(), sampling=sampling, seed=seed).model_dump())
    with progress_bar("sampling patches", None) as advance:
        patch_set, overview = build_patch_set(cfg, advance)
    from cristae_zoo.io import atomic_path

    with atomic_path(output) as tmp:
        with open(tmp, "wb") as f:
            patch_set.save(f)
    plot_patch_overview(overview, cfg.patches.patch_size, output.with_suffix(".png"))
    console.print(f"{len(patch_set.x_train)} training + {len(patch_set.x_val)} validation patches → {output}")


@app.command()
def train(
    config: Annotated[Optional[Path], typer.Argument(help="TrainConfig YAML (optional; flags override it)")] = None,
    data: Annotated[Optional[Path], typer.Option(help="data folder written by `prepare`")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="model folder to write")] = None,
    loss: Annotated[Optional[str], typer.Option(help="scop (DeepCristae) | mae (CARE) | mse | dssim")] = None,
    sampling: Annotated[Optional[str], typer.Option(help="mito (DeepCristae) | uniform (CARE)")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="epochs")] = None,
    steps_per_epoch: Annotated[Optional[int], typer.Option(help="batches per epoch (default: all patches)")] = None,
    filters: Annotated[Optional[int], typer.Option(help="filters of the first U-Net level")] = None,
    depth: Annotated[Optional[int], typer.Option(help="U-Net depth")] = None,
    no_residual: Annotated[bool, typer.Option("--no-residual", help="drop the input-to-output addition")] = False,
    seed: Annotated[Optional[int], typer.Option(help="seed of patch draw, shuffling and initialisation")] = None,
    resume: Annotated[bool, typer.Option(help="continue an interrupted training in --output")] = False,
) -> None:
    """Train a restoration network; keep the best model on validation loss in a model folder."""
    from cristae_zoo.train import train as run_training

    cfg = TrainConfig.from_yaml(config) if config else TrainConfig()
    net = _override(cfg.network, filters=filters, depth=depth, residual=False if no_residual else None)
    pat = _override(cfg.patches, sampling=sampling, seed=seed)
    cfg = _override(
        cfg, data_dir=data, output_dir=output, loss=loss, epochs=epochs, steps_per_epoch=steps_per_epoch, seed=seed,
        network=net.model_dump(), patches=pat.model_dump(),
    )
    with progress_bar(f"training ({cfg.loss})", cfg.epochs) as advance:
        out = run_training(
            cfg,
            resume=resume,
            on_epoch=lambda e, logs: advance(1, f"loss {logs['loss']:.4f}  val {logs['val_loss']:.4f}"),
            on_patches=None,
        )
    console.print(f"model folder: {out} (best weights: {out / 'weights.keras'}, curve: {out / 'loss_curve.png'})")


@app.command()
def evaluate(
    model_dirs: Annotated[list[Path], typer.Argument(help="one or more model folders written by `train`")],
    data: Annotated[Optional[Path], typer.Option(help="data folder (default: the first model's data_dir)")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="folder for CSV/PNG (default: MODEL/evaluation)")] = None,
    baselines: Annotated[bool, typer.Option(help="also evaluate input, median, Wiener and RL")] = True,
) -> None:
    """Metrics of the paper (NRMSE, PSNR, SSIM; whole, _mito, _cristae) on the test split, vs baselines."""
    from cristae_zoo.data.prepare import load_split
    from cristae_zoo.evaluate import COLUMNS, baselines as baseline_restorers, evaluate as run_eval, keras_restorer, summary_markdown
    from cristae_zoo.io import atomic_write_text
    from cristae_zoo.models.unet import divisibility
    from cristae_zoo.plots import plot_restoration
    from cristae_zoo.train import load_model

    models = {}
    for d in model_dirs:
        model, cfg = load_model(d)
        models[d.name] = (model, cfg)
    first_cfg = next(iter(models.values()))[1]
    data_dir = data or first_cfg.data_dir
    out = output or model_dirs[0] / "evaluation"
    deg_file = Path(data_dir) / "degradation.yaml"
    degradation = DegradationConfig.from_yaml(deg_file) if deg_file.is_file() else DegradationConfig()
    pairs = load_split(Path(data_dir), "test")
    restorers = baseline_restorers(degradation) if baselines else {}
    for name, (model, cfg) in models.items():
        restorers[name] = keras_restorer(model, degradation, divisibility(cfg.network))
    with progress_bar("evaluating", len(pairs) * len(restorers)) as advance:
        result = run_eval(pairs, restorers, degradation, progress=advance)
    summary = result.summary()

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["method", "image", *COLUMNS])
        writer.writeheader()
        writer.writerows(result.rows)
    md = summary_markdown(summary)
    atomic_write_text(out / "summary.md", md)
    table = Table(title=f"test set: {len(pairs)} images of {data_dir} (mean ± sd)")
    table.add_column("metric")
    for m in summary:
        table.add_column(m, justify="right")
    for c in COLUMNS:
        table.add_row(c, *(f"{summary[m][c][0]:.3f} ± {summary[m][c][1]:.3f}" for m in summary))
    Console().print(table)
    from cristae_zoo.data.degrade import percentile_normalize
    from cristae_zoo.data.mask import mitochondria_mask

    for pair in pairs[:3]:
        gt = percentile_normalize(pair.gt, degradation.p_low, degradation.p_high)
        panels = {"input": result.restored.get("Input", {}).get(pair.name, percentile_normalize(pair.input))}
        panels |= {name: result.restored[name][pair.name] for name in models}
        panels["ground truth"] = gt
        mito = pair.mito_mask if pair.mito_mask is not None else mitochondria_mask(pair.input)
        plot_restoration(panels, mito, out / f"{pair.name}_restoration.png", title=pair.name)
    console.print(f"wrote {out / 'metrics.csv'}, {out / 'summary.md'} and restoration PNGs")


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
