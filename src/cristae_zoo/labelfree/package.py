"""bioimage.io package of a trained label-free model (2D): TF SavedModel (source), ONNX and TorchScript weights.

Reuses `cristae_zoo.export`'s TF and ONNX exporters as they are (through an `ExportContext` whose channel-first
wrapper has one input and `n_out` output channels) and adds a TorchScript exporter for this architecture's
PyTorch twin. Every format is checked against Keras on the test input (max |Δ| ≤ 1e-4) before it is written.
Static fields (name, authors, cite, documentation text) come from `rdf_templates/labelfree.yaml`.
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
from cristae_zoo.export.halo import tiled_apply
from cristae_zoo.export.onnx import OnnxExporter
from cristae_zoo.export.tensorflow import TensorflowExporter
from cristae_zoo.export.torchscript import TorchscriptExporter
from cristae_zoo.labelfree.network import LabelFreeNetworkConfig
from cristae_zoo.labelfree.train import load_model

TEMPLATE_NAME = "labelfree.yaml"


def find_template(template: Path | None = None, name: str = TEMPLATE_NAME) -> Path:
    """`template` if given, else `rdf_templates/<name>` in the working directory or the source checkout."""
    from cristae_zoo.export.package import template_dirs

    if template is not None:
        if not Path(template).is_file():
            raise CristaeZooError(f"{template}: template not found (expected a YAML file like rdf_templates/{name})")
        return Path(template)
    for folder in template_dirs():
        if (folder / name).is_file():
            return folder / name
    dirs = ", ".join(str(d) for d in template_dirs())
    raise CristaeZooError(f"rdf_templates/{name} not found in {dirs}; pass --template")


def channels_first_wrapper(keras_model: Any, ndim: int = 2, in_channels: int = 1) -> Any:
    """(B, in_channels, Y, X) in, `{"output": (B, C, Y', X')}` out, around a channels-last model."""
    import keras
    from keras import layers

    inp = keras.Input(shape=(in_channels,) + (None,) * ndim, name=INPUT_NAME, dtype="float32")
    order = tuple(range(2, ndim + 2)) + (1,)
    x = layers.Permute(order, name="to_channels_last")(inp)
    x = keras_model(x)
    back = (ndim + 1,) + tuple(range(1, ndim + 1))
    out = layers.Permute(back, name="to_channels_first")(x)
    return keras.Model(inp, {OUTPUT_NAME: out}, name="labelfree_bcyx")


class LabelFreeExportContext(ExportContext):
    """`ExportContext` for the label-free U-Net: its wrapper, and its network config for the twin."""

    def __init__(self, keras_model: Any, network: LabelFreeNetworkConfig, work_dir: Path) -> None:
        super().__init__(keras_model, network, work_dir=work_dir)  # type: ignore[arg-type]

    @cached_property
    def channels_first_model(self) -> Any:
        return channels_first_wrapper(self.keras_model, self.network.ndim)


class LabelFreeTorchscriptExporter(TorchscriptExporter):
    """TorchScript of `torch_twin.LabelFreeTwin` with the Keras weights (conv, transposed conv, batch norm).

    Subclasses for other architectures override `build_twin` and `comment`.
    """

    comment = "PyTorch twin of the Keras U-Net (conv/transposed conv/batch norm weights copied), torch.jit.script."

    def build_twin(self, ctx: ExportContext) -> Any:
        from cristae_zoo.labelfree.torch_twin import build_twin

        return build_twin(ctx.keras_model, ctx.network)  # type: ignore[arg-type]

    def export(self, ctx: ExportContext, dest: Path) -> Path:
        import torch

        from cristae_zoo.io import atomic_path

        scripted = torch.jit.script(self.build_twin(ctx))
        with atomic_path(Path(dest)) as tmp:
            torch.jit.save(scripted, str(tmp))
        return Path(dest)

    def weights_descr(self, source: Path, versions: dict[str, str], parent: str | None) -> Any:
        from bioimageio.spec.model.v0_5 import TorchscriptWeightsDescr, Version

        return TorchscriptWeightsDescr(
            source=source, pytorch_version=Version(versions["pytorch_version"]), parent=parent, comment=self.comment,
        )  # fmt: skip


def exporters() -> list[Any]:
    return [TensorflowExporter(), OnnxExporter(), LabelFreeTorchscriptExporter()]


def receptive_radius(network: LabelFreeNetworkConfig) -> int:
    """Upper bound of the receptive-field radius (px): 3×3 convs add their scale, 2×2 stride-2 (transposed) convs too."""
    return sum(6 * 2**level for level in range(network.depth)) + 2 * 2**network.depth + 1


def measure_halo(keras_model: Any, network: LabelFreeNetworkConfig, image: np.ndarray, candidates: list[int]) -> dict[int, float]:
    """Max |tiled − whole| per halo, tiling `image` (normalised, 2D) in tiles of 2·divisor… px."""
    step = network.divisor
    whole = keras_predict(keras_model, image[None, None])[0]
    diffs = {}
    for halo in candidates:
        worst = 0.0
        for c in range(whole.shape[0]):
            fn = lambda im, c=c: keras_predict(keras_model, im[None, None])[0, c]  # noqa: E731
            tiled = tiled_apply(fn, image, max(step, 4 * step), halo, min_size=2 * halo + step)
            worst = max(worst, float(np.max(np.abs(tiled - whole[c]))))
        diffs[halo] = worst
    return diffs


def _markdown(template: dict[str, Any], values: dict[str, Any]) -> str:
    parts = [f"# {template['name']}", "", " ".join(str(template["description"]).split()), ""]
    for title, text in (template.get("documentation") or {}).items():
        parts += [f"## {title.replace('_', ' ').capitalize()}", "", str(text).format(**values).strip(), ""]
    return "\n".join(parts)


def package_files(folder: Path) -> dict[str, Path]:
    """Paths of the files every package writes (test/sample tensors, README, cover), in a new `folder`."""
    folder.mkdir(parents=True)
    names = {"test_input": "test_input.npy", "test_output": "test_output.npy", "sample_input": "sample_input.tif",
             "sample_output": "sample_output.tif", "readme": "README.md", "cover": "cover.png"}  # fmt: skip
    return {k: folder / v for k, v in names.items()}


def model_descr(tmpl: dict[str, Any], files: dict[str, Path], inp: Any, out: Any, weights: Any, config: Any) -> Any:
    """The `ModelDescr`: static fields from the template, README and cover from `files`, the rest as computed."""
    from bioimageio.spec.generic.v0_3 import Author
    from bioimageio.spec.model.v0_5 import CiteEntry, FileDescr, LicenseId, ModelDescr, Version

    return ModelDescr(
        name=tmpl["name"], description=" ".join(str(tmpl["description"]).split()),
        authors=[Author(**a) for a in tmpl["authors"]], cite=[CiteEntry(**c) for c in tmpl["cite"]],
        license=LicenseId(tmpl["license"]), tags=list(tmpl["tags"]), version=Version(str(tmpl["version"])),
        documentation=FileDescr(source=files["readme"]), covers=[FileDescr(source=files["cover"])],
        inputs=[inp], outputs=[out], weights=weights, config=config,
    )  # fmt: skip


def write_package(describe: Any, model: Any, x: np.ndarray, test_in: np.ndarray, output: Path, zip_package: bool) -> Path | None:
    """`describe(test_output)` → validated description, written as the folder `output` (and `output`.zip).

    The test output is recomputed from the input exactly as bioimageio.core preprocesses it (`x` is only the
    first approximation needed to build a description core can read).
    """
    from bioimageio.spec import save_bioimageio_package, save_bioimageio_package_as_folder

    from cristae_zoo.export.package import _raise_if_invalid, preprocess_like_core

    descr = describe(keras_predict(model, x))
    y = keras_predict(model, preprocess_like_core(descr, test_in))
    descr = _raise_if_invalid(describe(y), str(output))
    if output.exists():
        shutil.rmtree(output)
    save_bioimageio_package_as_folder(descr, output_path=output)
    zip_path = output.with_suffix(".zip") if zip_package else None
    if zip_path is not None:
        save_bioimageio_package(descr, output_path=zip_path)
    return zip_path


def package_labelfree(model_dir: Path, output: Path, test_image: Path | None = None, template: Path | None = None,
                      tolerance: float = DEFAULT_TOLERANCE, zip_package: bool = True) -> dict[str, Any]:
    """Write the package folder `output` (rdf.yaml + files) and `output`.zip; return a summary."""
    from bioimageio.spec.model.v0_5 import (
        AxisId, BatchAxis, ChannelAxis, Config, FileDescr, Identifier, InputTensorDescr, IntervalOrRatioDataDescr,
        OutputTensorDescr, ParameterizedSize, SizeReference, SpaceInputAxis, SpaceOutputAxisWithHalo, TensorId,
        ZeroMeanUnitVarianceDescr, ZeroMeanUnitVarianceKwargs,
    )  # fmt: skip

    from cristae_zoo.export.package import load_template, write_cover
    from cristae_zoo.labelfree.data import read_image, zscore

    model_dir, output = Path(model_dir), Path(output)
    model, config = load_model(model_dir)
    net = config.network
    if net.ndim != 2:
        raise CristaeZooError(f"{model_dir}: packaging supports 2D models only (this one is {net.ndim}D)")
    tmpl = load_template(find_template(template))
    step = net.divisor
    halo = -(-receptive_radius(net) // step) * step
    min_size = 2 * halo + step
    if test_image is None:
        name = json.loads((model_dir / "split.json").read_text())["test"][0]
        test_image = Path(config.data_dir) / "tl" / name
    raw = np.rint(read_image(Path(test_image), 2))
    h, w = (s - s % step for s in raw.shape)
    if min(h, w) < min_size:
        raise CristaeZooError(f"{test_image}: test image {raw.shape} smaller than the package's minimum {min_size} px")
    raw = raw[:h, :w].astype(np.float32)

    summary = model_dir / "evaluation" / "summary.md"
    results = summary.read_text().strip() if summary.is_file() else "(not evaluated: run `cristae-zoo labelfree evaluate`)"
    work = Path(tempfile.mkdtemp(prefix="labelfree_package_"))
    ctx = LabelFreeExportContext(model, net, work_dir=work / "export")
    try:
        ctx.work_dir.mkdir(parents=True)
        files = work / "files"
        f = package_files(files)
        test_in = raw[None, None]
        np.save(f["test_input"], test_in)
        import tifffile

        tifffile.imwrite(f["sample_input"], raw)
        x = zscore(raw)[None, None]
        diffs = measure_halo(model, net, x[0, 0], [0, halo // 2 // step * step, halo])
        exported: list[ExportedWeights] = [e.export_and_check(ctx, files, x, tolerance=tolerance) for e in exporters()]

        def describe(y: np.ndarray) -> Any:
            np.save(f["test_output"], y)
            tifffile.imwrite(f["sample_output"], y[0])
            write_cover(raw, y[0, 0], f["cover"])
            values = dict(depth=net.depth, filters=net.filters, structures=", ".join(config.structures),
                          steps=config.steps, batch_size=config.batch_size, patch=("×".join(map(str, config.patch_size))),
                          halo=halo, min_size=min_size, step=step, results=results,
                          diffs="; ".join(f"{e.weights_format}: {e.max_abs_diff:.2g}" for e in exported))  # fmt: skip
            f["readme"].write_text(_markdown(tmpl, values))
            space_in = [SpaceInputAxis(id=AxisId(a), size=ParameterizedSize(min=min_size, step=step)) for a in "yx"]
            space_out = [SpaceOutputAxisWithHalo(id=AxisId(a), halo=halo,
                         size=SizeReference(tensor_id=TensorId(INPUT_NAME), axis_id=AxisId(a))) for a in "yx"]  # fmt: skip
            inp = InputTensorDescr(
                id=TensorId(INPUT_NAME), description=tmpl["inputs"]["description"],
                axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier("transmitted_light")]), *space_in],
                test_tensor=FileDescr(source=f["test_input"]), sample_tensor=FileDescr(source=f["sample_input"]),
                data=IntervalOrRatioDataDescr(type="float32"),
                preprocessing=[ZeroMeanUnitVarianceDescr(kwargs=ZeroMeanUnitVarianceKwargs(axes=[AxisId("y"), AxisId("x")]))],
            )  # fmt: skip
            out = OutputTensorDescr(
                id=TensorId(OUTPUT_NAME), description=tmpl["outputs"]["description"],
                axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier(s) for s in config.structures]), *space_out],
                test_tensor=FileDescr(source=f["test_output"]), sample_tensor=FileDescr(source=f["sample_output"]),
                data=IntervalOrRatioDataDescr(type="float32"),
            )  # fmt: skip
            weights = weights_description(exported, exporters())
            bio = bioimageio_fields(tmpl, model, training_batch_size=float(config.batch_size),
                                    initial_learning_rate=config.learning_rate, loss_function="mse", optimizer="Adam")
            cfg = Config(bioimageio=bio, deepimagej={"pyramidal_model": False, "allow_tiling": True},
                         cristae_zoo={"labelfree": {"network": net.model_dump(mode="json"), "structures": config.structures,
                                      "halo": {"declared_px": halo, "tiling_max_abs_diff_by_halo": {str(k): v for k, v in diffs.items()}},
                                      "export": {"tolerance": tolerance, "max_abs_diff_vs_keras": {e.weights_format: e.max_abs_diff for e in exported}}}})  # fmt: skip
            return model_descr(tmpl, f, inp, out, weights, cfg)

        zip_path = write_package(describe, model, x, test_in, output, zip_package)
    finally:
        ctx.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    return {"output": output, "zip": zip_path, "halo": halo, "min_size": min_size, "tiling_diffs": diffs,
            "max_abs_diff": {e.weights_format: e.max_abs_diff for e in exported}}
