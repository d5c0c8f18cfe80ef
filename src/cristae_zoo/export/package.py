"""Build a bioimage.io model package (rdf.yaml, weights in three formats, README, covers, test tensors).

`package_model(MODEL_DIR, "model_zoo/deepcristae")` writes the folder with `save_bioimageio_package_as_folder`
and `model_zoo/deepcristae.zip` with `save_bioimageio_package`. What goes in, and why (see
docs in `../shared/notes/bioimageio-clients.md`):

- axes with explicit ids `batch, channel, y, x`; input y/x sized `{min, step}` with `step` = 2**depth and `min` the
  smallest multiple of `step` that leaves one pixel inside the halo; output y/x = input y/x with a `halo`
  = receptive field rounded up to `step` (checked by `halo.measure_halo`);
- preprocessing `scale_range` over `axes: [y, x]` (per image), percentiles 2 / 99.8; no postprocessing;
- `config.deepimagej.allow_tiling: true`; `config.cristae_zoo` holds the rescale requirement, the halo
  measurement and the export differences;
- test input: an integer-valued crop of the first test image (so that deepImageJ's nearest-rank and
  bioimageio.core's interpolated percentiles agree), sample input: the same pixels as a TIFF; test output: the Keras
  model on the input as bioimageio.core preprocesses it.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cristae_zoo.errors import CristaeZooError
from cristae_zoo.export.base import (
    DEFAULT_TOLERANCE,
    INPUT_NAME,
    OUTPUT_NAME,
    ExportContext,
    ExportedWeights,
    TrainedModel,
    bioimageio_fields,
    keras_predict,
    weights_description,
    load_trained_model,
)
from cristae_zoo.export.halo import HaloMeasurement, measure_halo, min_input_size
from cristae_zoo.io import IMAGE_SUFFIXES, read_image_2d
from cristae_zoo.models.unet import divisibility

# ---- the rescale requirement (DeepCristae paper, "Reliability and limits of image restoration") ----
TRAINING_PIXEL_SIZE_NM = 25.0
MITO_WIDTH_PX = 15.64
MITO_WIDTH_NM = 391.0
PAPER_RESCALE_FACTORS = {"Fast STED": 1.87, "Live-SR": 2.6, "LLSM": 4.16}

PERCENTILES = (2.0, 99.8)
DEFAULT_CROP = 256
MAX_PACKAGE_BYTES = 30 * 1024**2
TEMPLATE_NAME = "deepcristae"

#: Steps reported to `progress` (for a progress bar).
PACKAGE_STEPS = (
    "load model",
    "test input",
    "halo",
    "tensorflow_saved_model_bundle",
    "onnx",
    "torchscript",
    "test output",
    "write package",
    "zip",
)


@dataclass(frozen=True)
class PackageResult:
    folder: Path
    zip_path: Path | None
    rdf: Path
    exported: list[ExportedWeights]
    halo: HaloMeasurement
    min_size: int
    step: int
    size_bytes: int
    test_image: Path
    crop_origin: tuple[int, int]


# ---------------------------------------------------------------------------------------------------- template


def template_dirs() -> list[Path]:
    """Where `rdf_templates/` is looked for: the working directory, then the source checkout."""
    here = Path(__file__).resolve()
    return [Path.cwd() / "rdf_templates", here.parents[3] / "rdf_templates"]


def find_template(template: Path | str | None = None) -> Path:
    if template is not None:
        path = Path(template)
        if not path.is_file():
            raise CristaeZooError(
                f"{path}: template not found (expected a YAML file like rdf_templates/deepcristae.yaml)"
            )
        return path
    for folder in template_dirs():
        if (folder / f"{TEMPLATE_NAME}.yaml").is_file():
            return folder / f"{TEMPLATE_NAME}.yaml"
    raise CristaeZooError(
        f"rdf_templates/{TEMPLATE_NAME}.yaml not found in {', '.join(str(d) for d in template_dirs())}; pass --template"
    )


REQUIRED_TEMPLATE_KEYS = ("name", "description", "authors", "license", "tags", "cite", "documentation")


def load_template(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise CristaeZooError(f"{path}: invalid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        raise CristaeZooError(f"{path}: expected a YAML mapping with {', '.join(REQUIRED_TEMPLATE_KEYS)}")
    missing = [k for k in REQUIRED_TEMPLATE_KEYS if k not in data]
    if missing:
        raise CristaeZooError(f"{path}: missing template fields {', '.join(missing)}")
    return data


# -------------------------------------------------------------------------------------------------- test input


def resolve_data_dir(trained: TrainedModel) -> Path:
    """`config.data_dir` as written (relative to the working directory), else relative to the model folder."""
    data_dir = Path(trained.config.data_dir)
    candidates = [data_dir] if data_dir.is_absolute() else [
        data_dir, trained.model_dir / data_dir, trained.model_dir.parent / data_dir
    ]  # fmt: skip
    for c in candidates:
        if (c / "test" / "input").is_dir():
            return c
    return candidates[0]


def find_test_image(trained: TrainedModel, test_image: Path | None = None) -> Path:
    if test_image is not None:
        return Path(test_image)
    folder = resolve_data_dir(trained) / "test" / "input"
    if not folder.is_dir():
        raise CristaeZooError(
            f"{folder}: no test images (expected the prepared data's test/input/*.tif named by data_dir in"
            f" {trained.model_dir / 'config.yaml'}); pass --test-image"
        )
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise CristaeZooError(f"{folder}: no TIFF images; pass --test-image")
    return files[0]


def select_crop(image: np.ndarray, crop: int, step: int, min_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The `crop`×`crop` window (or the largest valid one) with the most structure (highest standard deviation)."""
    height, width = image.shape
    size_y = min(crop, height) // step * step
    size_x = min(crop, width) // step * step
    if size_y < min_size or size_x < min_size:
        raise CristaeZooError(
            f"test image {image.shape} is too small: the package's test input needs at least {min_size}×{min_size} px"
        )
    stride = max(step, min(size_y, size_x) // 8)
    best, origin = -1.0, (0, 0)
    for y0 in range(0, height - size_y + 1, stride):
        for x0 in range(0, width - size_x + 1, stride):
            s = float(image[y0 : y0 + size_y, x0 : x0 + size_x].std())
            if s > best:
                best, origin = s, (y0, x0)
    y0, x0 = origin
    return image[y0 : y0 + size_y, x0 : x0 + size_x].copy(), origin


def scale_range_like_core(image: np.ndarray, low: float = PERCENTILES[0], high: float = PERCENTILES[1]) -> np.ndarray:
    """What the package's `scale_range` does (per image, linear interpolation, eps 1e-6)."""
    lo, hi = np.percentile(image, [low, high])
    return ((image - lo) / (hi - lo + 1e-6)).astype(np.float32)


# ------------------------------------------------------------------------------------------------------ covers


def _to_uint8(image: np.ndarray, low: float = 0.5, high: float = 99.8) -> np.ndarray:
    lo, hi = np.percentile(image, [low, high])
    return (np.clip((image - lo) / (hi - lo + 1e-12), 0, 1) * 255).round().astype(np.uint8)


def write_cover(raw: np.ndarray, restored: np.ndarray, dest: Path) -> Path:
    """Side by side, 2:1: the raw input on the left, the restoration on the right."""
    import imageio.v3 as iio

    iio.imwrite(dest, np.concatenate([_to_uint8(raw), _to_uint8(restored)], axis=1))
    return dest


# ------------------------------------------------------------------------------------------------------ README


def _fmt(text: str, values: dict[str, Any]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", str(value))
    return text


def rescale_markdown(example_width: int = 512) -> str:
    rows = "\n".join(
        f"| {name} | {factor:g} | {factor * TRAINING_PIXEL_SIZE_NM:.0f} nm | {round(example_width * factor)} px |"
        for name, factor in PAPER_RESCALE_FACTORS.items()
    )
    f = PAPER_RESCALE_FACTORS["Live-SR"]
    w = round(example_width * f)
    return f"""## Rescale your image first (required)

The network was trained on images with **{TRAINING_PIXEL_SIZE_NM:g} nm pixels**, in which mitochondria are on average
**{MITO_WIDTH_PX} px ({MITO_WIDTH_NM:.0f} nm) wide**. It does not adapt to other scales: resize every image so that
mitochondria are about {MITO_WIDTH_PX} px wide *before* running the model, and resize the result back if needed.

**Rescale factor** (the number to type into ImageJ's *X Scale* and *Y Scale*):

- from the pixel size: `factor = (pixel size in nm) / {TRAINING_PIXEL_SIZE_NM:g}`
  (e.g. 65 nm pixels → 65 / 25 = 2.6);
- or from the mitochondria: measure the width (px) of several mitochondria, then
  `factor = {MITO_WIDTH_PX} / (mean width in px)` (e.g. 6 px wide → 15.64 / 6 = 2.61).

A factor above 1 enlarges the image. Factors used in the DeepCristae paper:

| Data (paper) | Factor | Pixel size giving this factor (factor × 25 nm) | New width of a 512 px image |
|---|---|---|---|
{rows}

### In Fiji / ImageJ

1. *File › Open* your raw image (one channel, one plane; for stacks use *Image › Duplicate…* or process plane by
   plane). Check the pixel size with *Image › Properties…* (µm × 1000 = nm).
2. Optional, to measure the width instead: draw a line across a mitochondrion with the *Straight Line* tool,
   *Analyze › Plot Profile*, and read the width at half maximum in pixels; average several mitochondria.
3. *Image › Scale…*: set **X Scale** and **Y Scale** to the factor, **Interpolation: Bicubic**, tick
   *Average when downsizing* and *Create new window*. The same as a macro line (width/height = original × factor,
   rounded; here a {example_width} × {example_width} Live-SR image):

   ```
   run("Scale...", "x={f:g} y={f:g} width={w} height={w} interpolation=Bicubic average create title=rescaled");
   ```

4. Run the model on the rescaled image (*Plugins › deepImageJ › deepImageJ Run*, pick this model). Use the
   **ONNX** weights in Fiji (see below).
5. To overlay the result on the original: *Image › Scale…* with factor `1 / factor` (e.g. 1 / 2.6 = 0.3846).

### In Python

```python
from skimage.transform import rescale
image_rescaled = rescale(image.astype("float32"), factor, order=3, preserve_range=True)
```

then `cristae-zoo predict <this package> rescaled.tif --output restored.tif`.
"""


def weights_markdown(exported: Sequence[ExportedWeights]) -> str:
    rows = "\n".join(
        f"| `{e.weights_format}` | `{e.path.name}` | {', '.join(f'{k} {v}' for k, v in e.versions.items())} |"
        f" {e.max_abs_diff:.2e} |"
        for e in exported
    )
    return f"""## Which weights to use

| Weights | File | Versions | Max abs difference to Keras (test input) |
|---|---|---|---|
{rows}

- **Fiji / deepImageJ: pick ONNX.** deepImageJ runs TensorFlow through TensorFlow Java (≤ 2.10), which cannot
  always load a SavedModel written by TensorFlow 2.16+ ("Op type not registered" errors); the ONNX file uses
  opset 17 and IR version 8, which deepImageJ's ONNX Runtime (1.13) and onnxruntime ≥ 1.15 load.
- **ilastik: TorchScript** (ilastik's neural network workflow has neither TensorFlow nor ONNX Runtime).
- **Python (bioimageio.core, `cristae-zoo predict`)**: any; ONNX is the lightest.

All three were checked against the trained Keras model on the test input (tolerance {DEFAULT_TOLERANCE:g}) and pass
`bioimageio test`.
"""


def tiling_markdown(halo: HaloMeasurement, min_size: int, step: int) -> str:
    diffs = ", ".join(f"{h}: {d:.1e}" for h, d in halo.diffs.items())
    return f"""## Input size and tiling

- Input: 2D, one channel, any size that is a multiple of {step} px and at least {min_size} px per side (the tools
  pad other sizes). Large images are processed in tiles.
- Halo: **{halo.declared} px** per side. The receptive field of this U-Net is {halo.receptive_field} px (exact, from
  the architecture); tiled and whole-image predictions of the trained network agree from a halo of
  {halo.measured if halo.measured is not None else "n/a"} px on (max |tiled − whole| per halo in px: {diffs}).
  The declared halo is the receptive field rounded up to a multiple of {step}, so tiles stay on the network's pooling
  grid and tiling leaves no seams.
"""


def training_markdown(trained: TrainedModel) -> str:
    cfg = trained.config
    lines = [
        "## Training",
        "",
        f"- Network: depth {cfg.network.depth}, {cfg.network.filters} first-level filters, kernel"
        f" {cfg.network.kernel_size}, residual {cfg.network.residual}.",
        f"- Loss: {cfg.loss} (γ_mito {cfg.gamma_mito:g}, γ_background {cfg.gamma_background:g}); Adam, learning rate"
        f" {cfg.learning_rate:g}; batch size {cfg.batch_size}; patches {cfg.patches.patch_size} px"
        f" ({cfg.patches.sampling} sampling); up to {cfg.epochs} epochs"
        + (f" of {cfg.steps_per_epoch} steps" if cfg.steps_per_epoch else "")
        + f"; seed {cfg.seed}.",
        f"- Data: `{cfg.data_dir}` (training pairs at {TRAINING_PIXEL_SIZE_NM:g} nm/px).",
    ]
    history = trained.model_dir / "history.csv"
    if history.is_file():
        try:
            with history.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, csv.Error):
            rows = []
        if rows:
            lines.append(f"- Trained for {len(rows)} epochs (`history.csv`, curve in `loss_curve.png`).")
            key = next((k for k in ("val_loss", "validation_loss") if k in rows[0]), None)
            if key:
                vals = [(float(r[key]), i + 1) for i, r in enumerate(rows) if r.get(key) not in (None, "")]
                if vals:
                    best, epoch = min(vals)
                    lines.append(f"- Best validation loss {best:.4g} at epoch {epoch} (the packaged weights).")
    return "\n".join(lines) + "\n"


def validation_markdown(trained: TrainedModel, exported: Sequence[ExportedWeights]) -> str:
    summary = trained.model_dir / "evaluation" / "summary.md"
    parts = ["## Validation", ""]
    if summary.is_file():
        text = summary.read_text().strip()
        # demote headings so that they nest under this section
        text = "\n".join("##" + line if line.startswith("#") else line for line in text.splitlines())
        parts += [
            "Metrics of the packaged model on the held-out test images of its training data set"
            " (`evaluation/metrics.csv`, attached):",
            "",
            text,
            "",
        ]
    else:
        parts += ["No evaluation of this model was found (`evaluation/summary.md` in the model folder).", ""]
    parts += [
        "To validate on your own data, acquire pairs of low- and high-resolution images of the same mitochondria,"
        " rescale the low-resolution image as above, predict, and compare with the (deconvolved) high-resolution image"
        " inside a mitochondria mask (SSIM / PSNR / NRMSE), as in the DeepCristae paper.",
        "",
        "Technical reproducibility: `bioimageio test rdf.yaml` reproduces the packaged test output with every weights"
        " format (" + ", ".join(f"{e.weights_format} {e.max_abs_diff:.1e}" for e in exported) + " max abs difference"
        " to Keras at export).",
        "",
    ]
    return "\n".join(parts)


def write_readme(
    dest: Path,
    template: dict[str, Any],
    trained: TrainedModel,
    exported: Sequence[ExportedWeights],
    halo: HaloMeasurement,
    min_size: int,
    step: int,
) -> Path:
    values = dict(trained.network.model_dump()) | {"loss": trained.config.loss, "epochs": trained.config.epochs}
    doc = {k: _fmt(str(v), values) for k, v in (template.get("documentation") or {}).items()}
    sections = [f"# {template['name']}", "", template["description"].strip(), ""]
    if "overview" in doc:
        sections += ["## Overview", "", doc["overview"].strip(), ""]
    if "intended_use" in doc:
        sections += ["## Intended use", "", doc["intended_use"].strip(), ""]
    sections += [rescale_markdown(), weights_markdown(exported), tiling_markdown(halo, min_size, step)]
    sections += [training_markdown(trained), validation_markdown(trained, exported)]
    sections += conditions_of_use_markdown(trained.model_dir)
    if "limitations" in doc:
        sections += ["## Known limits", "", doc["limitations"].strip(), ""]
    for key, text in doc.items():
        if key not in ("overview", "intended_use", "limitations"):
            sections += [f"## {key.replace('_', ' ').capitalize()}", "", text.strip(), ""]
    cites = "\n".join(f"- {' '.join(c['text'].split())}" for c in template.get("cite", []))
    sections += ["## Citation", "", cites, ""]
    dest.write_text("\n".join(sections))
    return dest


# ------------------------------------------------------------------------------------------ conditions of use
# (issue 5) `cristae-zoo study limits` writes MODEL_DIR/conditions_of_use.md: the safe ranges of mitochondrion
# width, blur and noise measured for this model. When present it becomes the README's "Conditions of use" section.

CONDITIONS_OF_USE_FILE = "conditions_of_use.md"


def conditions_of_use_markdown(model_dir: Path) -> list[str]:
    """README lines of the "Conditions of use" section, or none when the model folder has no such file."""
    path = Path(model_dir) / CONDITIONS_OF_USE_FILE
    if not path.is_file():
        return []
    text = path.read_text().strip()
    # demote headings so that they nest under this section
    text = "\n".join("##" + line if line.startswith("#") else line for line in text.splitlines())
    return ["## Conditions of use", "", text, ""]


# ------------------------------------------------------------------------------------------------- description


def rescale_config() -> dict[str, Any]:
    f = PAPER_RESCALE_FACTORS["Live-SR"]
    return {
        "training_pixel_size_nm": TRAINING_PIXEL_SIZE_NM,
        "mitochondrion_width_px": MITO_WIDTH_PX,
        "mitochondrion_width_nm": MITO_WIDTH_NM,
        "factor_from_pixel_size": f"factor = pixel_size_nm / {TRAINING_PIXEL_SIZE_NM:g}",
        "factor_from_width": f"factor = {MITO_WIDTH_PX} / mean_mitochondrion_width_px",
        "paper_factors": {"fast_sted": 1.87, "live_sr": 2.6, "llsm": 4.16},
        "imagej_menu": "Image > Scale... (X Scale = Y Scale = factor, Interpolation: Bicubic, Average when"
        " downsizing, Create new window)",
        "imagej_macro": f'run("Scale...", "x={f:g} y={f:g} width=W height=H interpolation=Bicubic average create'
        ' title=rescaled"); // W, H = original size x factor',
    }


def build_description(
    *,
    template: dict[str, Any],
    trained: TrainedModel,
    exported: Sequence[ExportedWeights],
    halo: HaloMeasurement,
    min_size: int,
    files: dict[str, Path],
    attachments: Sequence[Path] = (),
    test_input_info: dict[str, Any] | None = None,
) -> Any:
    """The `ModelDescr` (bioimageio.spec v0.5 classes); files are absolute paths in a work folder."""
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
    )
    from bioimageio.spec.generic.v0_3 import Author, Maintainer

    from cristae_zoo import __version__
    from cristae_zoo.export import exporters

    step = divisibility(trained.network)
    scale_nm = TRAINING_PIXEL_SIZE_NM
    space_in = [
        SpaceInputAxis(
            id=AxisId(a), size=ParameterizedSize(min=min_size, step=step), unit="nanometer", scale=scale_nm
        )
        for a in ("y", "x")
    ]
    space_out = [
        SpaceOutputAxisWithHalo(
            id=AxisId(a),
            size=SizeReference(tensor_id=TensorId(INPUT_NAME), axis_id=AxisId(a)),
            halo=halo.declared,
            unit="nanometer",
            scale=scale_nm,
        )
        for a in ("y", "x")
    ]
    in_descr = (template.get("inputs") or {}).get("description", "")
    out_descr = (template.get("outputs") or {}).get("description", "")
    inp = InputTensorDescr(
        id=TensorId(INPUT_NAME),
        description=in_descr,
        axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier("mitochondria")]), *space_in],
        test_tensor=FileDescr(source=files["test_input"]),
        sample_tensor=FileDescr(source=files["sample_input"]),
        data=IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[
            ScaleRangeDescr(
                kwargs=ScaleRangeKwargs(
                    axes=[AxisId("y"), AxisId("x")], min_percentile=PERCENTILES[0], max_percentile=PERCENTILES[1]
                )
            )
        ],
    )
    out = OutputTensorDescr(
        id=TensorId(OUTPUT_NAME),
        description=out_descr,
        axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier("restored")]), *space_out],
        test_tensor=FileDescr(source=files["test_output"]),
        sample_tensor=FileDescr(source=files["sample_output"]),
        data=IntervalOrRatioDataDescr(type="float32"),
    )
    weights = weights_description(exported, exporters().values())
    bio = bioimageio_fields(
        template,
        trained.keras_model,
        training_epochs=float(trained.config.epochs),
        training_batch_size=float(trained.config.batch_size),
        initial_learning_rate=float(trained.config.learning_rate),
        loss_function=trained.config.loss,
        optimizer="Adam",
    )
    config = Config(
        bioimageio=bio,
        deepimagej={
            "pyramidal_model": False,
            "allow_tiling": True,
            "model_keys": {
                "model_tag": "tf.saved_model.tag_constants.SERVING",
                "signature_definition": "tf.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY",
            },
        },
        cristae_zoo={
            "version": __version__,
            "rescale": rescale_config(),
            "network": trained.network.model_dump(mode="json"),
            "halo": {
                "receptive_field_px": halo.receptive_field,
                "measured_px": halo.measured,
                "declared_px": halo.declared,
                "tiling_max_abs_diff_by_halo": {str(k): v for k, v in halo.diffs.items()},
            },
            "export": {
                "tolerance": DEFAULT_TOLERANCE,
                "max_abs_diff_vs_keras": {e.weights_format: e.max_abs_diff for e in exported},
            },
            "test_input": test_input_info or {},
        },
    )
    return ModelDescr(
        name=template["name"],
        description=" ".join(str(template["description"]).split()),
        authors=[Author(**a) for a in template["authors"]],
        maintainers=[Maintainer(**m) for m in template.get("maintainers") or []],
        cite=[CiteEntry(**c) for c in template["cite"]],
        license=LicenseId(template["license"]),
        tags=list(template["tags"]),
        version=Version(str(template["version"])) if template.get("version") else None,
        documentation=FileDescr(source=files["readme"]),
        covers=[FileDescr(source=files["cover"])],
        attachments=[FileDescr(source=p) for p in attachments],
        inputs=[inp],
        outputs=[out],
        weights=weights,
        config=config,
    )


def _raise_if_invalid(descr: Any, what: str) -> Any:
    from bioimageio.spec import InvalidDescr

    if isinstance(descr, InvalidDescr):
        errors = descr.validation_summary.errors
        first = f"{'.'.join(map(str, errors[0].loc))}: {errors[0].msg}" if errors else "unknown error"
        raise CristaeZooError(f"{what}: the package description fails validation ({first})")
    return descr


def preprocess_like_core(descr: Any, test_input: np.ndarray) -> np.ndarray:
    """The test input after the package's preprocessing, computed by bioimageio.core itself."""
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import get_test_input_sample

    weights_format = "onnx" if descr.weights.onnx is not None else None
    sample = get_test_input_sample(descr)
    with create_prediction_pipeline(descr, weights_format=weights_format) as pp:
        pp.apply_preprocessing(sample)
    x = sample.members[INPUT_NAME].data.to_numpy().astype(np.float32)
    return x.reshape(test_input.shape)


# ------------------------------------------------------------------------------------------------------ package


def package_model(
    model_dir: Path | str,
    output: Path | str,
    *,
    template: Path | str | None = None,
    test_image: Path | str | None = None,
    crop: int = DEFAULT_CROP,
    zip_package: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    progress: Callable[[str], None] | None = None,
) -> PackageResult:
    """Export the trained model in MODEL_DIR to a bioimage.io package folder `output` (and `output`.zip)."""
    from bioimageio.spec import save_bioimageio_package, save_bioimageio_package_as_folder

    from cristae_zoo.export import exporters

    def step_done(name: str) -> None:
        if progress is not None:
            progress(name)

    output = Path(output)
    template_path = find_template(template)
    tmpl = load_template(template_path)
    trained = load_trained_model(Path(model_dir))
    step_done("load model")

    network = trained.network
    step = divisibility(network)

    work = Path(tempfile.mkdtemp(prefix="cristae_zoo_package_"))
    ctx = ExportContext(trained.keras_model, network, work_dir=work / "export")
    try:
        ctx.work_dir.mkdir(parents=True)
        files_dir = work / "files"
        files_dir.mkdir()

        # test input: an integer-valued crop of the first test image
        image_path = find_test_image(trained, Path(test_image) if test_image else None)
        from cristae_zoo.export.halo import declared_halo

        halo_px = declared_halo(network)
        min_size = min_input_size(halo_px, step)
        image = read_image_2d(image_path)
        rounded = not bool(np.all(image == np.rint(image)))
        if rounded:
            image = np.rint(image)  # integer-valued so that nearest-rank and interpolated percentiles agree
        raw_crop, origin = select_crop(image, crop, step, min_size)
        test_input_info = {
            "source": image_path.name,
            "crop_origin_yx": list(origin),
            "shape_yx": list(raw_crop.shape),
            "rounded_to_integers": rounded,
        }
        raw_crop = raw_crop.astype(np.float32)
        test_in = raw_crop[None, None]
        files = {
            "test_input": files_dir / "test_input.npy",
            "sample_input": files_dir / "sample_input.tif",
            "test_output": files_dir / "test_output.npy",
            "sample_output": files_dir / "sample_output.tif",
            "readme": files_dir / "README.md",
            "cover": files_dir / "cover.png",
        }
        np.save(files["test_input"], test_in)
        _write_tif(files["sample_input"], raw_crop)
        step_done("test input")

        # halo: measured on the trained network
        def predict2d(im: np.ndarray) -> np.ndarray:
            return keras_predict(trained.keras_model, im[None, None])[0, 0]

        halo = measure_halo(predict2d, network)
        step_done("halo")

        # weights
        x_check = scale_range_like_core(raw_crop)[None, None]
        exported: list[ExportedWeights] = []
        for name, exporter in exporters().items():
            exported.append(exporter.export_and_check(ctx, files_dir, x_check, tolerance=tolerance))
            step_done(name)

        # test output: Keras on the input as bioimageio.core preprocesses it (two passes: placeholder, then exact)
        y_approx = keras_predict(trained.keras_model, x_check)
        np.save(files["test_output"], y_approx)
        _write_tif(files["sample_output"], y_approx[0, 0])
        write_cover(raw_crop, y_approx[0, 0], files["cover"])
        write_readme(files["readme"], tmpl, trained, exported, halo, min_size, step)
        attachments = _attachments(trained, files_dir)
        descr = build_description(
            template=tmpl, trained=trained, exported=exported, halo=halo, min_size=min_size, files=files,
            attachments=attachments, test_input_info=test_input_info,
        )  # fmt: skip
        x_core = preprocess_like_core(descr, test_in)
        y = keras_predict(trained.keras_model, x_core)
        np.save(files["test_output"], y)
        _write_tif(files["sample_output"], y[0, 0])
        write_cover(raw_crop, y[0, 0], files["cover"])
        descr = build_description(
            template=tmpl, trained=trained, exported=exported, halo=halo, min_size=min_size, files=files,
            attachments=attachments, test_input_info=test_input_info,
        )  # fmt: skip
        step_done("test output")

        # folder (replaced atomically), then zip
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
        try:
            save_bioimageio_package_as_folder(descr, output_path=staging)
            staging.chmod(0o755)  # mkdtemp makes it private
            size = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
            if size > MAX_PACKAGE_BYTES:
                raise CristaeZooError(
                    f"{output}: the package would be {size / 1024**2:.1f} MB, expected below"
                    f" {MAX_PACKAGE_BYTES / 1024**2:.0f} MB (use a smaller network)"
                )
            if output.exists():
                old = output.with_name(f".{output.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(output, old)
                os.replace(staging, output)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, output)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        step_done("write package")

        zip_path = None
        if zip_package:
            from cristae_zoo.io import atomic_path

            zip_path = output.with_name(output.name + ".zip")
            with atomic_path(zip_path) as tmp:
                tmp.unlink()
                save_bioimageio_package(descr, output_path=tmp)
        step_done("zip")
        final = {e.weights_format: e for e in exported}
        exported_final = [
            ExportedWeights(e.weights_format, output / e.path.name, e.max_abs_diff, e.parent, e.versions)
            for e in final.values()
        ]
        return PackageResult(
            folder=output,
            zip_path=zip_path,
            rdf=output / "rdf.yaml",
            exported=exported_final,
            halo=halo,
            min_size=min_size,
            step=step,
            size_bytes=size,
            test_image=image_path,
            crop_origin=origin,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_tif(path: Path, image: np.ndarray) -> None:
    """Float32 TIFF calibrated at the training pixel size: the sample tensors are at the scale the model expects,
    so `cristae-zoo predict` restores them with rescale factor 1 (the pixels are those of the test tensors)."""
    import tifffile

    px_um = TRAINING_PIXEL_SIZE_NM / 1000.0
    tifffile.imwrite(path, np.asarray(image, dtype=np.float32), imagej=True, resolution=(1 / px_um, 1 / px_um),
                     metadata={"unit": "um"})  # fmt: skip


def _attachments(trained: TrainedModel, files_dir: Path) -> list[Path]:
    """Training provenance: config, history, loss curve, metrics (copied under unique names)."""
    out = []
    for rel, name in (
        ("config.yaml", "training_config.yaml"),
        ("history.csv", "training_history.csv"),
        ("loss_curve.png", "loss_curve.png"),
        ("evaluation/metrics.csv", "evaluation_metrics.csv"),
    ):
        src = trained.model_dir / rel
        if src.is_file():
            dst = files_dir / name
            shutil.copyfile(src, dst)
            out.append(dst)
    return out
