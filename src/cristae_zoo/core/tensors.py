"""The tensor description: what a system's network takes and gives, in the terms a user's file is in.

This is the contract between the three shared parts. A `System` states it for a configuration; the one packager
writes it into the package's rdf (the bioimage.io axes, and this model verbatim under `config.cristae_zoo.tensors`);
the one predictor reads it back from any package and from nothing else, so a package carries everything needed to
run it on a microscope file: which axes are spatial, which channels go in and come out, the output's scale (PSSR's
4×), whether the input channels are consecutive frames of a movie (PSSR-MF), the halo for seamless tiling, the
normalisation and the rescale requirement (or none).

`describe_package(descr)` also reads packages written before this block existed, from their bioimage.io axes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cristae_zoo.errors import CristaeZooError


class RescaleRequirement(BaseModel):
    """The scale the network was trained at: inputs must be resampled to it (DeepCristae: 25 nm pixels, where
    mitochondria are ~15.64 px wide). `pixel_size_nm` is the training data's pixel size."""

    model_config = ConfigDict(extra="forbid")

    pixel_size_nm: float = Field(gt=0, description="pixel size of the training data (nm)")
    structure_width_px: float | None = Field(
        None, gt=0, description="typical mitochondrion width in the training data (px); enables --rescale auto"
    )


class Normalisation(BaseModel):
    """Per-sample, per-channel normalisation over the spatial axes, as the rdf's preprocessing applies it."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["percentile", "zscore"] = "percentile"
    low: float = Field(1.0, ge=0, le=100, description="percentile mapped to 0 (0: the minimum)")
    high: float = Field(99.8, ge=0, le=100, description="percentile mapped to 1 (100: the maximum)")


class TensorDescription(BaseModel):
    """One input and one output tensor, (batch, channel, [z], y, x) in the package, described for files."""

    model_config = ConfigDict(extra="forbid")

    spatial_axes: Literal["yx", "zyx"] = "yx"
    input_channels: list[str] = Field(default_factory=lambda: ["image"], min_length=1)
    output_channels: list[str] = Field(default_factory=lambda: ["restored"], min_length=1)
    output_scale: int = Field(1, ge=1, description="output px per input px along y and x (z is never scaled)")
    frames_as_channels: bool = Field(
        False,
        description="the input channels are consecutive time points t-k … t+k of one movie (odd count); a TYX movie"
        " is fed as sliding windows with mirrored edge frames and the output has one frame per input frame",
    )
    halo: dict[str, int] = Field(
        default_factory=dict, description="context per spatial axis, in input px, for seamless tiling"
    )
    min_size: dict[str, int] = Field(default_factory=dict, description="smallest input size per spatial axis")
    step: dict[str, int] = Field(default_factory=dict, description="input sizes are min_size + n·step")
    normalisation: Normalisation = Normalisation()
    rescale: RescaleRequirement | None = Field(
        None, description="inputs must be resampled to the training pixel size; None: use the file as it is"
    )

    @model_validator(mode="after")
    def _consistent(self) -> TensorDescription:
        if self.frames_as_channels and len(self.input_channels) % 2 == 0:
            raise ValueError(f"frames_as_channels needs an odd number of input frames, got {len(self.input_channels)}")
        for name in ("halo", "min_size", "step"):
            unknown = set(getattr(self, name)) - set(self.spatial_axes)
            if unknown:
                raise ValueError(f"{name}: axes {sorted(unknown)} are not spatial axes of {self.spatial_axes!r}")
        return self

    @property
    def ndim(self) -> int:
        return len(self.spatial_axes)

    @property
    def n_in(self) -> int:
        return len(self.input_channels)

    @property
    def n_out(self) -> int:
        return len(self.output_channels)

    @property
    def n_frames(self) -> int:
        """Frames per window for a frames-as-channels model, else 1."""
        return self.n_in if self.frames_as_channels else 1

    def axis_scale(self, axis: str) -> int:
        return self.output_scale if axis in ("y", "x") else 1

    def valid_size(self, axis: str, n: int) -> int:
        """The smallest valid input size ≥ n along `axis`."""
        lo, step = self.min_size.get(axis, 1), max(1, self.step.get(axis, 1))
        return max(lo, lo + -(-(n - lo) // step) * step) if n > lo else lo


def describe_package(descr: Any) -> TensorDescription:
    """The `TensorDescription` of a loaded bioimage.io model (a `bioimageio.spec` v0.5 ModelDescr)."""
    return describe_rdf(descr.model_dump(mode="json"))


def describe_rdf(rdf: dict[str, Any]) -> TensorDescription:
    """The `TensorDescription` of a model rdf (the YAML as a dict).

    Read from `config.cristae_zoo.tensors` when the packager wrote it; otherwise inferred from the rdf's axes (older
    packages, third-party models with one input and one output)."""
    config = rdf.get("config") or {}
    block = config.get("cristae_zoo") or {} if isinstance(config, dict) else {}
    if isinstance(block.get("tensors"), dict):
        try:
            return TensorDescription.model_validate(block["tensors"])
        except ValueError as err:
            raise CristaeZooError(f"invalid config.cristae_zoo.tensors in the package: {err}") from None

    ipt, outp = rdf["inputs"][0], rdf["outputs"][0]

    def axes_by_id(tensor: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {("channel" if a.get("type") == "channel" else str(a.get("id", a.get("type")))): a for a in tensor["axes"]}

    in_axes, out_axes = axes_by_id(ipt), axes_by_id(outp)
    spatial = "".join(a for a in "zyx" if a in in_axes)
    if spatial not in ("yx", "zyx"):
        raise CristaeZooError(f"unsupported input axes {list(in_axes)}: expected (batch, channel, [z], y, x)")

    def channels(axes: dict[str, dict[str, Any]], default: str) -> list[str]:
        ch = axes.get("channel")
        return [str(n) for n in ch.get("channel_names", [])] or [default] if ch is not None else [default]

    halo, min_size, step = {}, {}, {}
    scale = 1
    for a in spatial:
        size = in_axes[a].get("size")
        if isinstance(size, dict) and "min" in size:
            min_size[a], step[a] = int(size["min"]), int(size.get("step", 0))
        elif isinstance(size, int):
            min_size[a], step[a] = int(size), 0
        o = out_axes.get(a)
        if o is None:
            raise CristaeZooError(f"the output has no {a} axis; expected the input's spatial axes {spatial}")
        ratio = float(in_axes[a].get("scale") or 1.0) / float(o.get("scale") or 1.0)
        if a in "yx":
            scale = max(scale, round(ratio))
        halo[a] = int(o.get("halo") or 0)
    halo = {a: -(-h // (scale if a in "yx" else 1)) for a, h in halo.items()}  # output px → input px

    legacy = block.get("pssr") if isinstance(block, dict) else None
    frames = isinstance(legacy, dict) and int((legacy.get("network") or {}).get("n_frames", 1)) > 1

    rescale = None
    legacy_rescale = block.get("rescale") if isinstance(block, dict) else None
    if isinstance(legacy_rescale, dict) and legacy_rescale.get("training_pixel_size_nm"):
        rescale = RescaleRequirement(
            pixel_size_nm=float(legacy_rescale["training_pixel_size_nm"]),
            structure_width_px=legacy_rescale.get("mitochondrion_width_px"),
        )
    return TensorDescription(
        spatial_axes=spatial,  # type: ignore[arg-type]
        input_channels=channels(in_axes, "image"),
        output_channels=channels(out_axes, "restored"),
        output_scale=scale,
        frames_as_channels=frames,
        halo=halo,
        min_size=min_size,
        step=step,
        rescale=rescale,
    )
