"""bioimage.io package of a trained luminescence CARE model (2D or 3D): TF SavedModel (source), ONNX, TorchScript.

The packaged network outputs the Laplace mean only (`network.mean_model`). TF and ONNX weights come from
`cristae_zoo.export`'s exporters through `labelfree.package.LabelFreeExportContext` (channel-first wrapper with
`ndim`); TorchScript is the labelfree twin plus the residual mean (`torch_head`). Every format is checked against
Keras on the test input before it is written.

Halos: y, x get the receptive field rounded up to the divisor (tiles seamless); z gets the largest multiple of the
divisor that a `min_z`-plane stack allows (the spec needs min − 2·halo ≥ 1), since luminescence stacks are thin
(paper: 16 planes). The measured tiling error per halo, in z and in y/x, goes into config and README.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cristae_zoo.errors import CristaeZooError
from cristae_zoo.export.base import (
    DEFAULT_TOLERANCE,
    INPUT_NAME,
    OUTPUT_NAME,
    ExportedWeights,
    bioimageio_fields,
    keras_predict,
    weights_description,
)
from cristae_zoo.export.halo import tiled_apply
from cristae_zoo.export.onnx import OnnxExporter
from cristae_zoo.export.tensorflow import TensorflowExporter
from cristae_zoo.labelfree.package import (
    LabelFreeExportContext,
    LabelFreeTorchscriptExporter,
    _markdown,
    find_template,
    package_files,
    write_package,
)
from cristae_zoo.luminescence.modes import PERCENTILES, read_input
from cristae_zoo.luminescence.network import mean_model
from cristae_zoo.luminescence.predict import seamless_halo
from cristae_zoo.luminescence.train import load_model

TEMPLATE_NAME = "luminescence.yaml"
#: test tensor (Z, Y, X): small, so that `bioimageio test` is quick
TEST_SHAPE = (16, 64, 64)


class MeanTorchscriptExporter(LabelFreeTorchscriptExporter):
    """TorchScript of the labelfree twin + residual mean, i.e. of `network.mean_model`."""

    comment = "PyTorch twin of the Keras U-Net (weights copied) + residual Laplace mean, torch.jit.script."

    def build_twin(self, ctx: Any) -> Any:
        from cristae_zoo.luminescence.torch_head import build_mean_twin

        return build_mean_twin(ctx.keras_model, ctx.network)


def exporters() -> list[Any]:
    return [TensorflowExporter(), OnnxExporter(), MeanTorchscriptExporter()]


def brightest_crop(image: np.ndarray, shape: tuple[int, ...], step: int) -> np.ndarray:
    """The crop of `shape` (on the `step` grid) with the largest sum: the test tensor should show structure."""
    if any(s < k for s, k in zip(image.shape, shape)):
        raise CristaeZooError(f"test image {image.shape} smaller than the test tensor {shape}")
    starts = [range(0, s - k + 1, step) for s, k in zip(image.shape, shape)]
    best = max(itertools.product(*starts), key=lambda o: float(image[tuple(slice(a, a + k) for a, k in zip(o, shape))].sum()))
    return image[tuple(slice(a, a + k) for a, k in zip(best, shape))].copy()


def tiling_errors(model: Any, x: np.ndarray, axis: int, halos: list[int], inner: int, step: int) -> dict[int, float]:
    """Max |tiled − whole| of the mean when tiling only along `axis` of the normalised image `x`, per halo."""
    whole = keras_predict(model, x[None, None])[0, 0]
    out = {}
    for h in halos:
        inner_ = [s for s in x.shape]
        inner_[axis] = inner
        halo_ = [0] * x.ndim
        halo_[axis] = h
        tiled = tiled_apply(lambda t: keras_predict(model, t[None, None])[0, 0], x, inner_, halo_, min_size=step)
        out[h] = float(np.max(np.abs(tiled - whole)))
    return out


def package_luminescence(model_dir: Path, output: Path, test_image: Path | None = None, template: Path | None = None,
                         tolerance: float = DEFAULT_TOLERANCE, zip_package: bool = False) -> dict[str, Any]:
    """Write the package folder `output` (rdf.yaml + files) and optionally `output`.zip; return a summary."""
    import tifffile

    from cristae_zoo.export.package import load_template, write_cover
    from cristae_zoo.luminescence.modes import normalize

    model_dir, output = Path(model_dir), Path(output)
    care, config = load_model(model_dir)
    model, net = mean_model(care), config.network
    tmpl = load_template(find_template(template, TEMPLATE_NAME))
    step, halo_xy = net.divisor, seamless_halo(net)
    shape = TEST_SHAPE[-net.ndim:]
    min_xy = 2 * halo_xy + step
    min_z = TEST_SHAPE[0]
    halo_z = (min_z - 1) // 2 // step * step
    if min_xy > shape[-1]:
        raise CristaeZooError(f"{model_dir}: the network needs ≥ {min_xy} px in y, x, more than the test tensor {shape}")
    if test_image is None:
        name = json.loads((model_dir / "split.json").read_text())["test"][0]
        test_image = Path(config.data_dir) / config.mode.input_dir / name
    full = read_input(Path(test_image), config.mode, net.ndim)
    raw = np.rint(brightest_crop(full, shape, step)).astype(np.float32)

    summary = model_dir / "evaluation" / "summary.md"
    results = summary.read_text().strip() if summary.is_file() else "(not evaluated: run `cristae-zoo luminescence evaluate`)"
    work = Path(tempfile.mkdtemp(prefix="luminescence_package_"))
    ctx = LabelFreeExportContext(model, net, work_dir=work / "export")
    try:
        ctx.work_dir.mkdir(parents=True)
        f = package_files(work / "files")
        files = f["readme"].parent
        test_in = raw[None, None]
        np.save(f["test_input"], test_in)
        tifffile.imwrite(f["sample_input"], raw)
        x = normalize(raw)[None, None]
        # tiling errors on the whole test stack (windows of 16 + 2·halo px must fit inside it to mean anything)
        whole = normalize(full[tuple(slice(0, s - s % step) for s in full.shape)])
        tiling = {"x": tiling_errors(model, whole, -1, [0, halo_xy // 2 // step * step, halo_xy], 16, step)}
        if net.ndim == 3:
            tiling["z"] = tiling_errors(model, whole, 0, [0, halo_z, 2 * halo_z], 4, step)
        exported: list[ExportedWeights] = [e.export_and_check(ctx, files, x, tolerance=tolerance) for e in exporters()]
        values = _values(tmpl, config, net, dict(halo_xy=halo_xy, halo_z=halo_z, min_xy=min_xy, min_z=min_z, step=step,
                         results=results, diffs="; ".join(f"{e.weights_format}: {e.max_abs_diff:.2g}" for e in exported),
                         tiling=_tiling_text(tiling), steps=trained_steps(model_dir, config.steps)))  # fmt: skip

        def describe(y: np.ndarray) -> Any:
            np.save(f["test_output"], y)
            tifffile.imwrite(f["sample_output"], y[0, 0])
            mid = (lambda a: a[a.shape[0] // 2]) if net.ndim == 3 else (lambda a: a)
            write_cover(mid(raw), mid(y[0, 0]), f["cover"])
            f["readme"].write_text(_markdown({**tmpl, "name": values["name"], "description": values["description"]}, values))
            return _descr(tmpl, values, config, care, f, exported, tiling, tolerance)

        zip_path = write_package(describe, model, x, test_in, output, zip_package)
    finally:
        ctx.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    size = sum(p.stat().st_size for p in output.rglob("*") if p.is_file())
    return {"output": output, "zip": zip_path, "halo": {"yx": halo_xy, "z": halo_z}, "tiling_diffs": tiling,
            "max_abs_diff": {e.weights_format: e.max_abs_diff for e in exported}, "size_bytes": size}


def _tiling_text(tiling: dict[str, dict[int, float]]) -> str:
    parts = [f"{axes}: " + ", ".join(f"halo {h}: {d:.2g}" for h, d in v.items()) for axes, v in tiling.items()]
    return "Measured max |tiled − whole| of the mean (normalised units) when tiling " + "; ".join(parts) + "."


def trained_steps(model_dir: Path, default: int) -> str:
    """Steps actually trained (a time budget may stop training early) and the step whose weights were kept."""
    import csv

    history = Path(model_dir) / "history.csv"
    if not history.is_file():
        return str(default)
    with open(history, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return str(default)
    best = min(rows, key=lambda r: float(r["val_nll"]))
    return f"{rows[-1]['step']} (weights of step {best['step']}, the best validation NLL)"


def _values(tmpl: dict[str, Any], config: Any, net: Any, extra: dict[str, Any]) -> dict[str, Any]:
    import yaml

    sim_file = Path(config.data_dir) / "config.yaml"
    sim = yaml.safe_load(sim_file.read_text()) if sim_file.is_file() else {}
    short, long = sim.get("short_exposure_s", "?"), sim.get("long_exposure_s", "?")
    ratio = f"{long / short:g}" if sim else "?"
    base = dict(short=short, long=long, ratio=ratio, bin=config.mode.bin_factor, mode=config.mode.mode,
                depth=net.depth, filters=net.filters, batch_size=config.batch_size,
                patch="×".join(map(str, config.patch_size)), **extra)  # fmt: skip
    texts = tmpl["modes"][config.mode.mode]
    base["residual_note"] = " + the input (CARE's residual)" if config.residual else " (CARE's residual mean is off)"
    base["likelihood"] = "Laplace" if config.loss == "laplace" else "Gaussian"
    base["loss_note"] = (" (CSBDeep's `probabilistic=True`)" if config.loss == "laplace" else
                         " (not CSBDeep's Laplace: its minimiser is the median, and the median of a photon-starved"
                         " noise2noise target is the background; the Gaussian's is the mean)")  # fmt: skip
    base["binning_note"] = (f"The package does not bin: give it the {short} s stack binned {config.mode.bin_factor}×"
                            f"{config.mode.bin_factor} and repeated back to full size (`numpy.repeat`, no interpolation)."
                            if config.mode.bin_factor > 1 else "")  # fmt: skip
    base.update(mode_title=texts["title"], mode_text=" ".join(str(texts["text"]).split()).format(**base),
                input_text=" ".join(str(texts["input"]).split()).format(**base))  # fmt: skip
    base.update(name=str(tmpl["name"]).format(**base), description=" ".join(str(tmpl["description"]).split()).format(**base))
    return base


def _descr(tmpl: dict[str, Any], values: dict[str, Any], config: Any, care: Any, f: dict[str, Path],
           exported: list[ExportedWeights], tiling: dict[str, dict[int, float]], tolerance: float) -> Any:
    from bioimageio.spec.generic.v0_3 import Author
    from bioimageio.spec.model.v0_5 import (
        AxisId,
        BatchAxis,
        ChannelAxis,
        CiteEntry,
        Config,
        FileDescr,
        Identifier,
        InputTensorDescr,
        IntervalOrRatioDataDescr,
        LicenseId,
        ModelDescr,
        OutputTensorDescr,
        ParameterizedSize,
        ScaleRangeDescr,
        ScaleRangeKwargs,
        SizeReference,
        SpaceInputAxis,
        SpaceOutputAxisWithHalo,
        TensorId,
        Version,
    )  # fmt: skip

    net = config.network
    axes = "zyx"[-net.ndim:]
    mins = {"z": values["min_z"], "y": values["min_xy"], "x": values["min_xy"]}
    halos = {"z": values["halo_z"], "y": values["halo_xy"], "x": values["halo_xy"]}
    space_in = [SpaceInputAxis(id=AxisId(a), size=ParameterizedSize(min=mins[a], step=values["step"])) for a in axes]
    space_out = [SpaceOutputAxisWithHalo(id=AxisId(a), halo=halos[a],
                 size=SizeReference(tensor_id=TensorId(INPUT_NAME), axis_id=AxisId(a))) for a in axes]  # fmt: skip
    norm = ScaleRangeDescr(kwargs=ScaleRangeKwargs(axes=[AxisId(a) for a in axes], min_percentile=PERCENTILES[0],
                                                   max_percentile=PERCENTILES[1]))  # fmt: skip
    inp = InputTensorDescr(
        id=TensorId(INPUT_NAME), description=tmpl["inputs"]["description"].format(**values),
        axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier("luminescence")]), *space_in],
        test_tensor=FileDescr(source=f["test_input"]), sample_tensor=FileDescr(source=f["sample_input"]),
        data=IntervalOrRatioDataDescr(type="float32"), preprocessing=[norm],
    )  # fmt: skip
    out = OutputTensorDescr(
        id=TensorId(OUTPUT_NAME), description=" ".join(str(tmpl["outputs"]["description"]).split()).format(**values),
        axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier("restored_mean")]), *space_out],
        test_tensor=FileDescr(source=f["test_output"]), sample_tensor=FileDescr(source=f["sample_output"]),
        data=IntervalOrRatioDataDescr(type="float32"),
    )  # fmt: skip
    weights = weights_description(exported, exporters())
    bio = bioimageio_fields(tmpl, care, training_batch_size=float(config.batch_size),
                            initial_learning_rate=config.learning_rate, loss_function=f"{config.loss}_nll", optimizer="Adam")
    ours = {"mode": config.mode.model_dump(mode="json"), "network": net.model_dump(mode="json"),
            "exposure_s": {"input": values["short"], "long": values["long"]}, "trained_on": "simulated data",
            "halo": {"declared_px": halos, "tiling_max_abs_diff_by_halo": {k: {str(h): d for h, d in v.items()} for k, v in tiling.items()}},
            "export": {"tolerance": tolerance, "max_abs_diff_vs_keras": {e.weights_format: e.max_abs_diff for e in exported}}}  # fmt: skip
    tags = [t for t in tmpl["tags"] if t != "3d" or net.ndim == 3] + [config.mode.mode]
    return ModelDescr(
        name=values["name"], description=values["description"],
        authors=[Author(**a) for a in tmpl["authors"]], cite=[CiteEntry(**c) for c in tmpl["cite"]],
        license=LicenseId(tmpl["license"]), tags=tags, version=Version(str(tmpl["version"])),
        documentation=FileDescr(source=f["readme"]), covers=[FileDescr(source=f["cover"])],
        inputs=[inp], outputs=[out], weights=weights,
        config=Config(bioimageio=bio, deepimagej={"pyramidal_model": False, "allow_tiling": True},
                      cristae_zoo={"luminescence": ours}),
    )  # fmt: skip
