"""The bioimage.io description (rdf.yaml) of a package, from a system's `TensorDescription` and its template.

Rules, each from a client's own code (`../shared/notes/bioimageio-clients.md`):
- axes `batch, channel, [z,] y, x` with explicit ids; input spatial axes sized `{min, step}` (or fixed), output
  spatial axes a `SizeReference` to the input axis with the halo in output px;
- axis `scale`: none when the output has the input's size; for an s× model s² on the input's y/x and s on the
  output's. The spec sizes an output axis as `ref.size × ref.scale / out.scale` and JDLL (deepImageJ) as
  `ref.size × out.scale` (and its halo as `halo / out.scale`): both agree only when out.scale² = ref.scale;
- preprocessing per sample and channel over the spatial axes (`axes` written explicitly: without them
  bioimageio.core computes data-set-wide statistics);
- `documentation` and `covers` as plain strings and an `id`: deepImageJ casts them to String (a `{source, sha256}`
  mapping throws, and its model list silently drops the model), JDLL dereferences `id`, and the specs that ilastik
  (0.5.9.1) and the website (0.5.10.2) run reject the mappings. spec 0.5.12 writes mappings, so `plain_file_fields`
  rewrites the saved rdf.yaml;
- tags: the template's, minus client names (a client is claimed only where it was run), plus the dimensionality and
  the weights formats actually written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from cristae_zoo.core.tensors import TensorDescription
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.export.base import INPUT_NAME, OUTPUT_NAME, ExportedWeights, weights_description

#: Client names that a template must not claim as tags unless verified (issue 13: tags that claim only the
#: clients a package really runs in); the packager removes them.
CLIENT_TAGS = frozenset({"deepimagej", "ilastik", "bioimageit", "fiji"})
#: weights format → its tag
FORMAT_TAGS = {"tensorflow_saved_model_bundle": "tensorflow", "onnx": "onnx", "torchscript": "torchscript"}
#: the rdf format version written: the newest whose `documentation`/`covers` are plain strings that every client's
#: spec accepts (see `plain_file_fields`)
PLAIN_FILES_FORMAT_VERSION = "0.5.9"
REQUIRED_TEMPLATE_KEYS = ("name", "description", "authors", "license", "tags", "cite")


# -------------------------------------------------------------------------------------------------- templates


def template_dirs() -> list[Path]:
    """Where `rdf_templates/` is looked for: the working directory, then the source checkout."""
    here = Path(__file__).resolve()
    return [Path.cwd() / "rdf_templates", here.parents[3] / "rdf_templates"]


def find_template(system: str, template: Path | str | None = None) -> Path:
    """`template` if given, else `rdf_templates/<system>.yaml`."""
    if template is not None:
        path = Path(template)
        if not path.is_file():
            raise CristaeZooError(f"{path}: template not found (expected a YAML file like rdf_templates/{system}.yaml)")
        return path
    for folder in template_dirs():
        if (folder / f"{system}.yaml").is_file():
            return folder / f"{system}.yaml"
    dirs = ", ".join(str(d) for d in template_dirs())
    raise CristaeZooError(f"rdf_templates/{system}.yaml not found in {dirs}; pass --template")


def load_template(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise CristaeZooError(f"{path}: invalid YAML ({' '.join(str(err).split())})") from None
    except OSError as err:
        raise CristaeZooError(f"{path}: cannot read ({err})") from None
    if not isinstance(data, dict):
        raise CristaeZooError(f"{path}: expected a YAML mapping with {', '.join(REQUIRED_TEMPLATE_KEYS)}")
    missing = [k for k in REQUIRED_TEMPLATE_KEYS if k not in data]
    if missing:
        raise CristaeZooError(f"{path}: missing template fields {', '.join(missing)}")
    return data


class _KeepUnknown(dict):  # type: ignore[type-arg]
    """`str.format_map` values that leave an unknown `{placeholder}` as it is instead of raising."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(text: Any, values: dict[str, Any]) -> str:
    """`text` with `{placeholders}` replaced from `values` (unknown ones kept; no format specs, no indexing)."""
    return re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: str(_KeepUnknown(values)[m.group(1)]), str(text))


def variant_values(template: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    """Placeholders that depend on a config value: the template's `variants: {config.path: {value: {key: text}}}`
    (e.g. luminescence's texts per `mode.mode`)."""
    out: dict[str, Any] = {}
    for path, by_value in (template.get("variants") or {}).items():
        value: Any = training
        for part in str(path).split("."):
            value = value.get(part) if isinstance(value, dict) else None
        chosen = (by_value or {}).get(value) if value is not None else None
        if isinstance(chosen, dict):
            out.update(chosen)
    return out


def package_tags(template_tags: Sequence[str], tensors: TensorDescription, formats: Sequence[str]) -> list[str]:
    tags = [str(t) for t in template_tags if str(t).lower() not in CLIENT_TAGS and str(t).lower() not in ("2d", "3d")]
    tags += [f"{tensors.ndim}d"] + [FORMAT_TAGS[f] for f in formats if f in FORMAT_TAGS]
    return list(dict.fromkeys(tags))  # no duplicates, order kept


def package_id(name: str) -> str:
    """A bioimage.io resource id (lowercase letters, digits, `_-.`) from the package folder's name."""
    ident = re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-.")
    return ident or "cristae-zoo-model"


# ------------------------------------------------------------------------------------------------------- axes


def input_axes(td: TensorDescription) -> list[Any]:
    from bioimageio.spec.model.v0_5 import AxisId, BatchAxis, ChannelAxis, Identifier, ParameterizedSize, SpaceInputAxis

    axes: list[Any] = [BatchAxis(), ChannelAxis(channel_names=[Identifier(c) for c in td.input_channels])]
    for a in td.spatial_axes:
        lo, step = int(td.min_size.get(a, 1)), int(td.step.get(a, 1))
        size: Any = ParameterizedSize(min=lo, step=step) if step > 0 else lo
        scaled = td.output_scale > 1 and a in "yx"
        kwargs = {"scale": float(td.output_scale**2)} if scaled else {}
        axes.append(SpaceInputAxis(id=AxisId(a), size=size, **kwargs))
    return axes


def output_axes(td: TensorDescription) -> list[Any]:
    from bioimageio.spec.model.v0_5 import (
        AxisId,
        BatchAxis,
        ChannelAxis,
        Identifier,
        SizeReference,
        SpaceOutputAxis,
        SpaceOutputAxisWithHalo,
        TensorId,
    )

    axes: list[Any] = [BatchAxis(), ChannelAxis(channel_names=[Identifier(c) for c in td.output_channels])]
    for a in td.spatial_axes:
        size = SizeReference(tensor_id=TensorId(INPUT_NAME), axis_id=AxisId(a))
        kwargs = {"scale": float(td.output_scale)} if td.output_scale > 1 and a in "yx" else {}
        halo = int(td.halo.get(a, 0)) * td.axis_scale(a)  # the rdf's output halo is in output px
        if halo > 0:
            axes.append(SpaceOutputAxisWithHalo(id=AxisId(a), size=size, halo=halo, **kwargs))
        else:
            axes.append(SpaceOutputAxis(id=AxisId(a), size=size, **kwargs))
    return axes


def preprocessing(td: TensorDescription) -> list[Any]:
    from bioimageio.spec.model.v0_5 import (
        AxisId,
        ScaleRangeDescr,
        ScaleRangeKwargs,
        ZeroMeanUnitVarianceDescr,
        ZeroMeanUnitVarianceKwargs,
    )

    axes = [AxisId(a) for a in td.spatial_axes]  # per sample and channel
    norm = td.normalisation
    if norm.kind == "zscore":
        return [ZeroMeanUnitVarianceDescr(kwargs=ZeroMeanUnitVarianceKwargs(axes=axes))]
    return [ScaleRangeDescr(kwargs=ScaleRangeKwargs(axes=axes, min_percentile=norm.low, max_percentile=norm.high))]


# ------------------------------------------------------------------------------------------------ description


def build_description(
    *,
    template: dict[str, Any],
    values: dict[str, Any],
    tensors: TensorDescription,
    exported: Sequence[ExportedWeights],
    exporters: Sequence[Any],
    files: dict[str, Path],
    attachments: Sequence[Path],
    config: dict[str, Any],
    ident: str,
) -> Any:
    """The `ModelDescr` (bioimageio.spec v0.5 classes); files are absolute paths in a work folder."""
    from bioimageio.spec.generic.v0_3 import Author, Maintainer
    from bioimageio.spec.model.v0_5 import (
        CiteEntry,
        Config,
        FileDescr,
        InputTensorDescr,
        IntervalOrRatioDataDescr,
        LicenseId,
        ModelDescr,
        ModelId,
        OutputTensorDescr,
        TensorId,
        Version,
    )

    def one_line(text: Any, limit: int | None = None) -> str:
        s = " ".join(fill(text, values).split())
        return s if limit is None or len(s) <= limit else s[: limit - 1] + "…"

    inp = InputTensorDescr(
        id=TensorId(INPUT_NAME),
        description=one_line((template.get("inputs") or {}).get("description", ""), 128),
        axes=input_axes(tensors),
        test_tensor=FileDescr(source=files["test_input"]),
        sample_tensor=FileDescr(source=files["sample_input"]),
        data=IntervalOrRatioDataDescr(type="float32"),
        preprocessing=preprocessing(tensors),
    )
    out = OutputTensorDescr(
        id=TensorId(OUTPUT_NAME),
        description=one_line((template.get("outputs") or {}).get("description", ""), 128),
        axes=output_axes(tensors),
        test_tensor=FileDescr(source=files["test_output"]),
        sample_tensor=FileDescr(source=files["sample_output"]),
        data=IntervalOrRatioDataDescr(type="float32"),
    )
    return ModelDescr(
        id=ModelId(ident),
        name=one_line(template["name"], 128),
        description=one_line(template["description"]),
        authors=[Author(**a) for a in template["authors"]],
        maintainers=[Maintainer(**m) for m in template.get("maintainers") or []],
        cite=[CiteEntry(**{k: (one_line(v) if k == "text" else v) for k, v in c.items()}) for c in template["cite"]],
        license=LicenseId(template["license"]),
        tags=package_tags(template["tags"], tensors, [e.weights_format for e in exported]),
        version=Version(str(template["version"])) if template.get("version") else None,
        documentation=FileDescr(source=files["readme"]),
        covers=[FileDescr(source=files["cover"])],
        attachments=[FileDescr(source=p) for p in attachments],
        inputs=[inp],
        outputs=[out],
        weights=weights_description(exported, exporters),
        config=Config(**config),
    )


def raise_if_invalid(descr: Any, what: str) -> Any:
    from bioimageio.spec import InvalidDescr

    if isinstance(descr, InvalidDescr):
        errors = descr.validation_summary.errors
        first = f"{'.'.join(map(str, errors[0].loc))}: {errors[0].msg}" if errors else "unknown error"
        raise CristaeZooError(f"{what}: the package description fails validation ({first})")
    return descr


def plain_file_fields(rdf_path: Path) -> None:
    """Rewrite `documentation` and `covers` in a saved rdf.yaml as plain file names (see the module docstring).

    The file hashes of the other entries stay; these two fields carry no hash in the clients' formats."""
    text = Path(rdf_path).read_text()
    data = yaml.safe_load(text)
    doc = data.get("documentation")
    if isinstance(doc, dict):
        data["documentation"] = str(doc["source"])
    data["covers"] = [str(c["source"]) if isinstance(c, dict) else str(c) for c in data.get("covers") or []]
    # Plain strings are the format of spec ≤ 0.5.10 (ilastik runs spec 0.5.9.1, the website 0.5.10.2); spec 0.5.12
    # converts them from a format_version below 0.5.11 and rejects them above. 0.5.9 is the oldest of the clients.
    data["format_version"] = PLAIN_FILES_FORMAT_VERSION
    header = "%YAML 1.2\n---\n" if text.startswith("%YAML") else ""
    Path(rdf_path).write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100))
