"""bioimage.io packages of PSSR-SF and PSSR-MF: TF SavedModel (source), ONNX and TorchScript weights.

Reuses the label-free package's pieces: the TF and ONNX exporters through an `ExportContext` whose channel-first
wrapper takes `n_frames` input channels, its TorchScript exporter with this architecture's twin, its template
lookup and README rendering. Each format is checked against Keras on the test input before it is written.

Axes: input (batch, channel, y, x) with y, x of scale 4; output (batch, channel, y, x) with y, x a `SizeReference`
to the input axis and scale 1, so size_out = size_in · 4 / 1 exactly (unit-free scales: 0.196/0.049 µm would
round some sizes down). The multi-frame input takes t-2 … t+2 as 5 channels (see docs/pssr.md for why).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from cristae_zoo.errors import CristaeZooError
from cristae_zoo.export.base import (
    DEFAULT_TOLERANCE,
    INPUT_NAME,
    OUTPUT_NAME,
    ExportContext,
    ExportedWeights,
    bioimageio_fields,
    keras_predict,
    weights_description,
)
from cristae_zoo.export.onnx import OnnxExporter
from cristae_zoo.export.tensorflow import TensorflowExporter
from cristae_zoo.labelfree.package import (
    LabelFreeTorchscriptExporter,
    _markdown,
    channels_first_wrapper,
    find_template,
    model_descr,
    package_files,
    write_package,
)  # fmt: skip
from cristae_zoo.pssr.network import PSSRNetworkConfig
from cristae_zoo.pssr.train import (
    PSSRTrainConfig,
    load_model,
    normalize_frames,
    window_indices,
)

TEMPLATE_NAME = "pssr.yaml"
HALO_IN = 16  # LR px (64 HR px); `measure_halo` records what tiling with it and less costs
FRAME_NAMES = {1: ["lr"], 5: ["t_minus_2", "t_minus_1", "t", "t_plus_1", "t_plus_2"]}


class PSSRExportContext(ExportContext):
    @cached_property
    def channels_first_model(self) -> Any:
        return channels_first_wrapper(self.keras_model, 2, self.network.n_frames)  # type: ignore[attr-defined]


class PSSRTorchscriptExporter(LabelFreeTorchscriptExporter):
    comment = "PyTorch twin of the Keras PSSR network (kernels copied; sub-pixel channels DCR -> CRD), torch.jit.script."

    def build_twin(self, ctx: ExportContext) -> Any:
        from cristae_zoo.pssr.torch_twin import build_twin

        return build_twin(ctx.keras_model, ctx.network)  # type: ignore[arg-type]


def exporters() -> list[Any]:
    return [TensorflowExporter(), OnnxExporter(), PSSRTorchscriptExporter()]


def measure_halo(keras_model: Any, x: np.ndarray, halos: list[int], scale: int) -> dict[int, float]:
    """Max |Δ| on the left half of the output when the input is cut `h` LR px right of that half (B, C, Y, X)."""
    whole = keras_predict(keras_model, x)
    half = x.shape[-1] // 2
    return {h: float(np.max(np.abs(keras_predict(keras_model, x[..., : half + h])[..., : scale * half] - whole[..., : scale * half])))
            for h in halos}  # fmt: skip


def test_window(config: PSSRTrainConfig, model_dir: Path) -> tuple[np.ndarray, str]:
    """(n_frames, h, w) 8-bit LR window around the middle frame of the first test movie, and its name."""
    import tifffile

    name = json.loads((Path(model_dir) / "split.json").read_text())["test"][0]
    path = Path(config.data_dir) / "lr" / name
    if not path.is_file():
        raise CristaeZooError(f"{path}: test movie not found (pass --test-movie)")
    return np.asarray(tifffile.imread(path), np.float32), str(path)


def package_pssr(model_dir: Path, output: Path, test_movie: Path | None = None, template: Path | None = None,
                 tolerance: float = DEFAULT_TOLERANCE, zip_package: bool = True, results: Path | None = None) -> dict[str, Any]:
    """Write the package folder `output` (rdf.yaml + files) and `output`.zip; return a summary."""
    import tifffile
    from bioimageio.spec.model.v0_5 import (
        AxisId, BatchAxis, ChannelAxis, Config, FileDescr, Identifier, InputTensorDescr, IntervalOrRatioDataDescr,
        OutputTensorDescr, ParameterizedSize, ScaleRangeDescr, ScaleRangeKwargs, SizeReference, SpaceInputAxis,
        SpaceOutputAxisWithHalo, TensorId,
    )  # fmt: skip

    from cristae_zoo.export.package import load_template, write_cover
    from cristae_zoo.pssr.predict import check_movie

    model_dir, output = Path(model_dir), Path(output)
    model, config = load_model(model_dir)
    net: PSSRNetworkConfig = config.network
    variant = "MF" if net.n_frames > 1 else "SF"
    tmpl = load_template(find_template(template, TEMPLATE_NAME))
    if test_movie is None:
        movie, where = test_window(config, model_dir)
    else:
        movie, where = np.asarray(tifffile.imread(test_movie), np.float32), str(test_movie)
    movie = check_movie(movie, net, where)
    raw = movie[window_indices(len(movie) // 2, net.n_frames, len(movie))]  # 8-bit values: Fiji and Python agree
    step, s = net.divisor, net.scale
    halo_in = HALO_IN
    min_size = 2 * halo_in + step
    h, w = (d - d % step for d in raw.shape[1:])
    if min(h, w) < min_size:
        raise CristaeZooError(f"{where}: frames {raw.shape[1:]} smaller than the package's minimum {min_size} px")
    raw = raw[:, :h, :w]
    summary = Path(results) if results is not None else model_dir / "evaluation" / "summary.md"
    results = summary.read_text().strip() if summary.is_file() else "(not evaluated: run `cristae-zoo pssr evaluate`)"
    work = Path(tempfile.mkdtemp(prefix="pssr_package_"))
    ctx = PSSRExportContext(model, net, work_dir=work / "export")  # type: ignore[arg-type]
    try:
        ctx.work_dir.mkdir(parents=True)
        files = work / "files"
        f = package_files(files)
        test_in = raw[None]
        np.save(f["test_input"], test_in)
        tifffile.imwrite(f["sample_input"], raw)
        x = normalize_frames(test_in)
        halo_diffs = measure_halo(model, x, [4, halo_in // 2, halo_in], s)
        exported: list[ExportedWeights] = [e.export_and_check(ctx, files, x, tolerance=tolerance) for e in exporters()]
        frames = "one frame" if net.n_frames == 1 else f"{net.n_frames} consecutive frames t-2 … t+2 as channels"
        values = dict(variant=variant, frames=frames, filters=net.filters, depth=net.depth, steps=config.steps,
                      batch_size=config.batch_size, lr_patch=config.lr_patch, max_lr=config.max_learning_rate,
                      halo_in=halo_in, halo_out=s * halo_in, min_size=min_size, step=step, results=results,
                      input_axes=f"(batch, channel = {', '.join(FRAME_NAMES.get(net.n_frames, ['lr']))}, y, x)",
                      diffs="; ".join(f"{e.weights_format}: {e.max_abs_diff:.2g}" for e in exported))  # fmt: skip
        filled = dict(tmpl, name=tmpl["name"].format(**values), description=" ".join(str(tmpl["description"]).format(**values).split()))

        def describe(y: np.ndarray) -> Any:
            np.save(f["test_output"], y)
            tifffile.imwrite(f["sample_output"], y[0, 0])
            write_cover(np.kron(raw[net.n_frames // 2], np.ones((s, s), np.float32)), y[0, 0], f["cover"])
            f["readme"].write_text(_markdown(filled, values))
            space_in = [SpaceInputAxis(id=AxisId(a), size=ParameterizedSize(min=min_size, step=step), scale=float(s)) for a in "yx"]
            space_out = [SpaceOutputAxisWithHalo(id=AxisId(a), halo=s * halo_in, scale=1.0,
                         size=SizeReference(tensor_id=TensorId(INPUT_NAME), axis_id=AxisId(a))) for a in "yx"]  # fmt: skip
            names = FRAME_NAMES.get(net.n_frames) or [f"frame_{i}" for i in range(net.n_frames)]
            inp = InputTensorDescr(
                id=TensorId(INPUT_NAME), description=tmpl["inputs"]["description"].format(**values),
                axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier(n) for n in names]), *space_in],
                test_tensor=FileDescr(source=f["test_input"]), sample_tensor=FileDescr(source=f["sample_input"]),
                data=IntervalOrRatioDataDescr(type="float32"),
                preprocessing=[ScaleRangeDescr(kwargs=ScaleRangeKwargs(axes=[AxisId("y"), AxisId("x")], min_percentile=0.0, max_percentile=100.0))],
            )  # fmt: skip
            out = OutputTensorDescr(
                id=TensorId(OUTPUT_NAME), description=tmpl["outputs"]["description"],
                axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier("hr")]), *space_out],
                test_tensor=FileDescr(source=f["test_output"]), sample_tensor=FileDescr(source=f["sample_output"]),
                data=IntervalOrRatioDataDescr(type="float32"),
            )  # fmt: skip
            weights = weights_description(exported, exporters())
            bio = bioimageio_fields(tmpl, model, training_batch_size=float(config.batch_size),
                                    initial_learning_rate=config.max_learning_rate, loss_function="mse",
                                    optimizer="Adam, one-cycle policy")  # fmt: skip
            cfg = Config(bioimageio=bio, deepimagej={"pyramidal_model": False, "allow_tiling": True},
                         cristae_zoo={"pssr": {"network": net.model_dump(mode="json"), "crappifier": config.crappifier.model_dump(mode="json"),
                                      "halo": {"declared_input_px": halo_in, "max_abs_diff_by_input_halo": {str(k): v for k, v in halo_diffs.items()}},
                                      "export": {"tolerance": tolerance, "max_abs_diff_vs_keras": {e.weights_format: e.max_abs_diff for e in exported}}}})  # fmt: skip
            return model_descr(filled, f, inp, out, weights, cfg)

        zip_path = write_package(describe, model, x, test_in, output, zip_package)
    finally:
        ctx.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    return {"output": output, "zip": zip_path, "halo_in": halo_in, "min_size": min_size, "halo_diffs": halo_diffs,
            "max_abs_diff": {e.weights_format: e.max_abs_diff for e in exported}}
