"""The package README: the template's sections, and the sections the packager writes from what it measured.

Written by the packager (never by a template): "Input and output" (axes, channels, scale, frames, sizes, halo and
normalisation, from the `TensorDescription`), "Rescale your image first" (only when the network has a rescale
requirement; it states the training pixel size), "Which weights to use", "Training" (the attached training config
and history), "Validation" (the model folder's evaluation, or a section handed in), "Conditions of use"
(`conditions_of_use.md` of the model folder) and "Citation".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cristae_zoo.core.history import read_history
from cristae_zoo.core.tensors import TensorDescription
from cristae_zoo.export.base import DEFAULT_TOLERANCE, ExportedWeights
from cristae_zoo.export.rdf import fill

#: sections only the packager writes; a README handed in (re-export) loses its own copies of them
PACKAGER_SECTIONS = ("Input and output", "Input size and tiling", "Rescale your image first (required)",
                     "Which weights to use", "Training", "Conditions of use", "Citation")  # fmt: skip

# (issue 5) `cristae-zoo study limits` writes MODEL_DIR/conditions_of_use.md: the safe ranges of mitochondrion
# width, blur and noise measured for this model. When present it becomes the README's "Conditions of use" section.
CONDITIONS_OF_USE_FILE = "conditions_of_use.md"


def _demote(text: str) -> str:
    """Headings of an included markdown file nested under the section that includes it."""
    return "\n".join("##" + line if line.startswith("#") else line for line in text.strip().splitlines())


def conditions_of_use_markdown(model_dir: Path | None) -> list[str]:
    """README lines of the "Conditions of use" section, or none when the model folder has no such file."""
    path = Path(model_dir) / CONDITIONS_OF_USE_FILE if model_dir is not None else None
    if path is None or not path.is_file():
        return []
    return ["## Conditions of use", "", _demote(path.read_text()), ""]


def io_markdown(td: TensorDescription, halo_errors: dict[str, dict[int, float]]) -> str:
    sizes = ", ".join(
        f"{a}: {td.min_size.get(a, 1)} + n·{td.step.get(a, 1)} px" if td.step.get(a, 0) else f"{a}: {td.min_size.get(a)} px"
        for a in td.spatial_axes
    )
    ins = ", ".join(td.input_channels)
    lines = [
        "## Input and output",
        "",
        f"- Input `(batch, channel, {', '.join(td.spatial_axes)})`, {td.n_in} channel{'s' if td.n_in > 1 else ''}:"
        f" {ins}."
        + (
            f" The channels are {td.n_in} consecutive frames t−{td.n_in // 2} … t+{td.n_in // 2} of one movie; a TYX"
            " movie is processed as sliding windows (`cristae-zoo predict` does it, mirroring the edge frames)."
            if td.frames_as_channels
            else ""
        ),
        f"- Output: {td.n_out} channel{'s' if td.n_out > 1 else ''}: {', '.join(td.output_channels)}"
        + (f"; y and x are **{td.output_scale}× the input's** (the pixel size is divided by {td.output_scale})."
           if td.output_scale > 1 else "; same size as the input.")  # fmt: skip
        ,
        f"- Input sizes: {sizes} (the tools pad other sizes).",
    ]
    norm = td.normalisation
    if norm.kind == "zscore":
        lines.append("- Normalisation (in the package): zero mean, unit variance per image and channel. Give raw intensities.")
    else:
        lines.append(
            f"- Normalisation (in the package): percentiles {norm.low:g} / {norm.high:g} mapped to 0 / 1 per image and"
            " channel. Give raw intensities."
        )
    if td.halo:
        halo = ", ".join(f"{a}: {h} px" for a, h in td.halo.items())
        lines.append(f"- Tiling halo (input px): {halo}" + (f" (= ×{td.output_scale} in output px)" if td.output_scale > 1 else "") + ".")
        for a, errs in halo_errors.items():
            if errs:
                lines.append(
                    f"  Measured tiling error along {a} (max |Δ| of the output, normalised units, per halo in input px): "
                    + ", ".join(f"{h}: {d:.1e}" for h, d in errs.items()) + "."
                )  # fmt: skip
    if td.output_scale > 1 or td.n_in > 1:
        lines.append(
            "- ilastik: not applicable (ilastik's neural-network workflow needs one input channel and an output of the"
            " input's size)."
            if td.output_scale > 1
            else "- ilastik needs the input channels stacked as one multi-channel image."
        )
    return "\n".join(lines) + "\n"


def rescale_markdown(td: TensorDescription, example_width: int = 512, example_pixel_nm: float = 65.0) -> str:
    """How to resample an image to the training pixel size (only for networks with a rescale requirement)."""
    assert td.rescale is not None
    px = td.rescale.pixel_size_nm
    width = td.rescale.structure_width_px
    f = example_pixel_nm / px
    w = round(example_width * f)
    by_width = (
        f"\n- or from the mitochondria: measure the width (px) of several mitochondria, then"
        f" `factor = {width:g} / (mean width in px)`."
        if width
        else ""
    )
    seen = f", in which mitochondria are on average **{width:g} px wide**" if width else ""
    return f"""## Rescale your image first (required)

The network was trained on images with **{px:g} nm pixels**{seen}. It does not adapt to other scales: resample every
image to {px:g} nm pixels *before* running the model, and the result back if needed. `cristae-zoo predict` does it
from the pixel size in the file's metadata (or `--pixel-size`, `--rescale`).

**Rescale factor** (the number to type into ImageJ's *X Scale* and *Y Scale*):

- from the pixel size: `factor = (pixel size in nm) / {px:g}` (e.g. {example_pixel_nm:g} nm pixels →
  {example_pixel_nm:g} / {px:g} = {f:.3g});{by_width}

A factor above 1 enlarges the image.

### In Fiji / ImageJ

1. *File › Open* your raw image; check the pixel size with *Image › Properties…* (µm × 1000 = nm).
2. *Image › Scale…*: set **X Scale** and **Y Scale** to the factor, **Interpolation: Bicubic**, tick *Average when
   downsizing* and *Create new window*. As a macro line (width/height = original × factor; here a
   {example_width} × {example_width} image with {example_pixel_nm:g} nm pixels):

   ```
   run("Scale...", "x={f:.4g} y={f:.4g} width={w} height={w} interpolation=Bicubic average create title=rescaled");
   ```

3. Run the model on the rescaled image; to overlay the result on the original, *Image › Scale…* by `1 / factor`.

### In Python

```python
from skimage.transform import rescale
image_rescaled = rescale(image.astype("float32"), factor, order=3, preserve_range=True)
```
"""


def weights_markdown(exported: Sequence[ExportedWeights], td: TensorDescription) -> str:
    rows = "\n".join(
        f"| `{e.weights_format}` | `{e.path.name}` | {', '.join(f'{k} {v}' for k, v in e.versions.items())} |"
        f" {e.max_abs_diff:.2e} |"
        for e in exported
    )
    ilastik = (
        "- **ilastik: TorchScript** (ilastik's neural network workflow has neither TensorFlow nor ONNX Runtime); the"
        " twin is traced, so its graph uses only ops that torch 2.5/2.7 know."
        if td.output_scale == 1
        else "- ilastik: not applicable (the output is not the input's size)."
    )
    return f"""## Which weights to use

| Weights | File | Versions | Max abs difference to Keras (test input) |
|---|---|---|---|
{rows}

- **Fiji / deepImageJ:** deepImageJ (JDLL) takes the first format it has an engine for, TensorFlow first. The
  SavedModel is frozen (weights as constants, no variable ops), so TensorFlow 2.7 (deepImageJ's default engine) can
  load it; the ONNX file (opset 17, IR version 8) runs in onnxruntime ≥ 1.12.
{ilastik}
- **Python (bioimageio.core, `cristae-zoo predict`)**: any; ONNX is the lightest.
- `keras_weights.weights.h5` (attached) holds the trainable Keras weights: `cristae-zoo train --init-from` this
  package fine-tunes it on your data.

Every format was checked against the trained Keras model on the test input (tolerance {DEFAULT_TOLERANCE:g}).
"""


def _history_lines(model_dir: Path | None) -> list[str]:
    rows = read_history(Path(model_dir) / "history.csv") if model_dir is not None else []
    if not rows:
        return []
    lines = [f"- History: {len(rows)} rows in `training_history.csv` (attached)."]
    key = next((k for k in ("val_loss", "validation_loss", "val_nll") if k in rows[0]), None)
    if key:
        vals = [(float(r[key]), i) for i, r in enumerate(rows) if r.get(key) not in (None, "")]
        if vals:
            best, i = min(vals)
            where = next((f"{k} {rows[i][k]}" for k in ("step", "epoch") if k in rows[i]), f"row {i + 1}")
            lines.append(f"- Best validation loss {best:.4g} at {where}: the packaged weights.")
    return lines


def _training_stage(reference: str | Path, base: Path | None) -> tuple[str, dict[str, Any], list[dict[str, str]]] | None:
    """(name, config, history rows) of what `init_from` names: a model folder or a package; None if not found."""
    import yaml

    from cristae_zoo.packages import resolve_package

    path = Path(reference)
    candidates = [path] if path.is_absolute() or base is None else [path, base / path]
    for folder in candidates:
        if (folder / "config.yaml").is_file() and (folder / "history.csv").is_file():
            config, history = folder / "config.yaml", folder / "history.csv"
            break
    else:
        try:
            folder = resolve_package(reference)
        except Exception:  # noqa: BLE001 - a stage we cannot find is left out of the budget, and said to be
            return None
        folder = folder.parent if folder.is_file() else folder
        config, history = folder / "training_config.yaml", folder / "training_history.csv"
        if not (config.is_file() and history.is_file()):
            return None
    try:
        data = yaml.safe_load(config.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    return str(reference), data if isinstance(data, dict) else {}, read_history(history)


def budget_lines(model_dir: Path | None, training: dict[str, Any]) -> list[str]:
    """Training budget and wall time: this training's steps, patches and minutes, and those of every training it was
    fine-tuned from (`init_from`, followed through model folders and packages), so the README states the whole cost."""
    if model_dir is None:
        return []
    stages: list[tuple[str, dict[str, Any], list[dict[str, str]]]] = [("this training", training, read_history(Path(model_dir) / "history.csv"))]
    seen: set[str] = set()
    outputs = {str(training["output_dir"])} if training.get("output_dir") else set()
    while (ref := stages[-1][1].get("init_from")) and str(ref) not in seen and len(stages) < 8:
        seen.add(str(ref))
        stage = _training_stage(ref, Path.cwd())
        if stage is None:
            stages.append((str(ref), {}, []))
            break
        stage_output = stage[1].get("output_dir")
        if stage_output and str(stage_output) in outputs:  # `init_from: NAME` resolving to this model's own
            break  # package, packaged once already (re-packaging): its history is this training's, not counted twice
        if stage_output:
            outputs.add(str(stage_output))
        stages.append(stage)
    lines, total_s, total_patches, complete = [], 0.0, 0, True
    for name, config, rows in stages:
        how = "" if name == "this training" else f"`{name}`, which it was fine-tuned from: "
        last = rows[-1] if rows else {}
        try:  # old histories have epochs only (steps_per_epoch in their config) and no wall time
            step = int(float(last["step"])) if "step" in last else (int(last["epoch"]) + 1) * int(config["steps_per_epoch"])
        except (KeyError, TypeError, ValueError):
            lines.append(f"- Budget: {how}not recorded (its history has no steps).")
            complete = False
            continue
        batch = config.get("batch_size")
        patches = f" × {batch} = {step * int(batch):,} patches" if isinstance(batch, int) else ""
        total_patches += step * int(batch) if isinstance(batch, int) else 0
        try:
            seconds = float(last["seconds"])
            total_s += seconds
            when = f" in {seconds / 60:.1f} min of wall time"
        except (KeyError, TypeError, ValueError):
            when, complete = " (wall time not recorded)", False
        lines.append(f"- Budget: {how}{step} steps{patches}{when}.")
    if len(stages) > 1:
        known = "" if complete else " where recorded"
        lines.append(f"- Whole budget: {total_patches:,} patches, {total_s / 60:.1f} min of wall time{known}.")
    return lines


def training_markdown(system: str, training: dict[str, Any], model_dir: Path | None, facts: Sequence[str] = ()) -> str:
    simple = {k: v for k, v in training.items() if not isinstance(v, (dict, list)) and v is not None}
    nested = {k: v for k, v in training.items() if isinstance(v, dict)}
    lines = ["## Training", "", f"- System `{system}`; the full training config is attached as `training_config.yaml`."]
    lines += list(facts)
    for key, value in nested.items():
        lines.append(f"- {key}: " + ", ".join(f"{k} {v}" for k, v in value.items() if not isinstance(v, (dict, list))) + ".")
    lines.append("- " + ", ".join(f"{k} {v}" for k, v in simple.items() if k not in ("system",)) + ".")
    lines += _history_lines(model_dir)
    lines += budget_lines(model_dir, training)
    return "\n".join(lines) + "\n"


def validation_markdown(model_dir: Path | None, exported: Sequence[ExportedWeights]) -> str:
    summary = Path(model_dir) / "evaluation" / "summary.md" if model_dir is not None else None
    parts = ["## Validation", ""]
    if summary is not None and summary.is_file():
        parts += ["Metrics of the packaged model on held-out test data (`evaluation/summary.md` of the model folder):",
                  "", _demote(summary.read_text()), ""]  # fmt: skip
    else:
        parts += ["No evaluation of this model was found (`evaluation/summary.md` in the model folder).", ""]
    parts += [technical_check(exported), ""]
    return "\n".join(parts)


def technical_check(exported: Sequence[ExportedWeights]) -> str:
    diffs = ", ".join(f"{e.weights_format} {e.max_abs_diff:.1e}" for e in exported)
    return (
        "Technical reproducibility: `bioimageio test rdf.yaml` reproduces the packaged test output with every weights"
        f" format (max abs difference to Keras at export: {diffs})."
    )


def split_sections(markdown: str) -> tuple[str, list[tuple[str, str]]]:
    """(text before the first `## ` heading, [(title, body)]) of a README."""
    head, sections, title, body = [], [], None, []  # type: ignore[var-annotated]
    for line in markdown.splitlines():
        if line.startswith("## "):
            if title is not None:
                sections.append((title, "\n".join(body).strip()))
            title, body = line[3:].strip(), []
        elif title is None:
            head.append(line)
        else:
            body.append(line)
    if title is not None:
        sections.append((title, "\n".join(body).strip()))
    return "\n".join(head), sections


def write_readme(
    dest: Path,
    *,
    template: dict[str, Any],
    values: dict[str, Any],
    system: str,
    tensors: TensorDescription,
    training: dict[str, Any],
    exported: Sequence[ExportedWeights],
    halo_errors: dict[str, dict[int, float]],
    model_dir: Path | None = None,
    sections: Sequence[tuple[str, str]] | None = None,
    training_facts: Sequence[str] = (),
) -> Path:
    """README.md: title and description, the template's `documentation:` sections (or `sections`, e.g. those of a
    package being re-exported), then the packager's own sections."""
    given = list(sections) if sections is not None else [
        (key.replace("_", " ").capitalize(), fill(text, values).strip())
        for key, text in (template.get("documentation") or {}).items()
    ]  # fmt: skip
    given = [(t, b) for t, b in given if t not in PACKAGER_SECTIONS]
    titles = [t for t, _ in given]
    first = [s for s in given if s[0] in ("Overview", "Intended use")]
    rest = [s for s in given if s not in first]
    out = [f"# {fill(template['name'], values)}", "", " ".join(fill(template["description"], values).split()), ""]
    for title, body in first:
        out += [f"## {title}", "", body, ""]
    if tensors.rescale is not None:  # right after the intended use, which points to it
        out += [rescale_markdown(tensors)]
    out += [io_markdown(tensors, halo_errors)]
    out += [weights_markdown(exported, tensors), training_markdown(system, training, model_dir, training_facts)]
    if "Validation" not in titles:
        out += [validation_markdown(model_dir, exported)]
    out += conditions_of_use_markdown(model_dir)
    for title, body in rest:
        if title == "Validation":  # the handed-in section's own export check is replaced by this export's
            body = re.sub(r"\n*Technical reproducibility:.*?(\n\n|$)", "\n\n", body, flags=re.S).strip()
            body = body + "\n\n" + technical_check(exported)
        out += [f"## {title}", "", body, ""]
    cites = "\n".join(f"- {' '.join(str(c['text']).split())}" for c in template.get("cite", []))
    out += ["## Citation", "", cites, ""]
    Path(dest).write_text("\n".join(out))
    return Path(dest)
