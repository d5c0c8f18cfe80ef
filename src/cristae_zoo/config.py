"""Configurations of every pipeline step, as pydantic models saved as YAML beside their outputs.

Defaults follow the DeepCristae paper (Papereux et al. 2023, Methods) unless a comment says otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from cristae_zoo.errors import CristaeZooError

T = TypeVar("T", bound="YamlModel")


class YamlModel(BaseModel):
    # No option of any step is meaningful as NaN or ±inf (YAML's .nan/.inf): refuse them at load time.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    def to_yaml(self, path: Path) -> None:
        from cristae_zoo.io import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))

    @classmethod
    def from_yaml(cls: type[T], path: Path) -> T:
        """Read and validate a config; any problem is one line naming the file, the line (YAML syntax) or the
        option (validation), and what is wrong, never a parser dump."""
        from pydantic import ValidationError

        path = Path(path)
        if not path.is_file():
            raise CristaeZooError(f"{path}: config file not found")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise CristaeZooError(f"{path}: cannot read the config file ({err}); expected a YAML text file") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            problem = " ".join(str(getattr(err, "problem", None) or err).split())
            raise CristaeZooError(f"{path}: invalid YAML: {where}{problem}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise CristaeZooError(
                f"{path}: expected a mapping of options (key: value lines) for {cls.__name__}, got a"
                f" {type(data).__name__}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(map(str, first["loc"]))
            more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
            msg = str(first["msg"]).removeprefix("Value error, ")
            if not loc:  # a check across options: its message names them
                raise CristaeZooError(f"{path}: invalid {cls.__name__}: {msg}{more}") from None
            shown = repr(first.get("input"))
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            value = f", got {shown}" if first.get("type") != "missing" and "input" in first else ""
            raise CristaeZooError(f"{path}: invalid {cls.__name__} option {loc}: {msg}{value}{more}") from None
        except ValueError as err:
            raise CristaeZooError(f"{path}: invalid {cls.__name__}: {' '.join(str(err).split())}") from None


class SimulationConfig(YamlModel):
    """HR STED images of live mitochondria stained with an inner-membrane dye (e.g. PKMITO).

    Lengths are in pixels unless the name says nm; (low, high) pairs are ranges drawn uniformly.
    """

    n_images: int = Field(33, ge=1, description="33 HR images in the paper's D_synt")
    height: int = Field(512, ge=64, le=8192, description="px; larger images do not fit in memory while simulated")
    width: int = Field(512, ge=64, le=8192)
    pixel_size_nm: float = Field(25.0, gt=0)
    # Geometry of the mitochondrial network.
    coverage: tuple[float, float] = Field(
        (0.12, 0.28), description="fraction of the image covered by in-focus mitochondria, drawn per image"
    )
    max_mitochondria: int = Field(
        40, ge=1, description="upper bound on mitochondria per 512×512 px, scaled with the image area"
    )
    width_mean_px: float = Field(15.6, gt=0, description="mean mitochondrion width (paper: 15.64 ± 4.04 px)")
    width_sd_px: float = Field(4.0, ge=0, description="sd of the width between mitochondria")
    width_range_px: tuple[float, float] = Field((8.0, 26.0), description="drawn widths are clipped to this range")
    width_variation: float = Field(
        0.06, ge=0, le=0.3, description="relative sd of the smooth width change along a tube"
    )
    length_px: tuple[float, float] = Field((60.0, 320.0), description="centre-line length, drawn log-uniformly")
    branch_probability: float = Field(
        0.35, ge=0, lt=1, description="chance of a (further) branch; branch counts are geometric, at most 3"
    )
    curvature_sd: float = Field(0.015, ge=0, description="sd of the centre line's local curvature (rad/px)")
    curvature_length_px: float = Field(30.0, gt=0, description="distance over which the curvature stays correlated")
    max_overlap: float = Field(
        0.15, ge=0, le=1, description="reject a new mitochondrion if this fraction of its axis overlaps earlier ones"
    )
    # Inner-membrane labelling.
    cristae_spacing_nm: tuple[float, float] = Field(
        (100.0, 400.0), description="crista-to-crista distance along the axis"
    )
    cristae_thickness_px: float = Field(
        1.5, gt=0, description="thickness of a crista lamella before blur (1-2 px in the mask)"
    )
    cristae_tilt_sd_deg: float = Field(
        8.0, ge=0, description="sd of a crista's tilt away from perpendicular to the axis"
    )
    cristae_max_tilt_deg: float = Field(25.0, ge=0, lt=60)
    partial_cristae_fraction: float = Field(
        0.3, ge=0, le=1, description="fraction of cristae that leave one side and stop short of the other"
    )
    cristae_intensity: tuple[float, float] = Field((0.6, 1.0), description="dye density of a crista, per crista")
    rim_intensity: float = Field(0.8, ge=0, description="dye density of the inner boundary membrane")
    matrix_intensity: float = Field(0.1, ge=0, description="weak diffuse signal inside the tube")
    brightness_range: tuple[float, float] = Field((0.5, 1.0), description="relative brightness of each mitochondrion")
    # Microscope and detector.
    psf_fwhm_nm: float = Field(50.0, gt=0, description="Gaussian STED PSF")
    peak_photons: tuple[float, float] = Field(
        (40.0, 120.0), description="expected photons at the brightest membranes (99.9th percentile), per image"
    )
    background_photons: float = Field(2.0, ge=0, description="uniform background, expected photons per pixel")
    n_out_of_focus: tuple[int, int] = Field(
        (0, 3), description="dim blurred mitochondria outside the focal plane (not in the masks)"
    )
    offset: float = Field(100.0, ge=0, description="constant detector offset added to the counts")
    read_noise: float = Field(1.5, ge=0, description="sd of the Gaussian read noise (counts)")
    seed: int = 0
    haze_intensity: tuple[float, float] = Field(
        (0.08, 0.2), description="peak of each out-of-focus tube relative to the in-focus peak, drawn per tube"
    )
    # Randomisation over what real acquisitions vary (issue 14 item 2). Every knob below is off by default, and
    # then draws nothing: the default data set is the same, image for image, as before these knobs existed
    # (their draws come from a separate generator, seeded by (seed, index, 1), not from the image's own).
    # A `*_range` option replaces, per image, the single value of the option it names (drawn uniformly).
    width_mean_range_px: tuple[float, float] | None = Field(
        None, description="per image: the mean mitochondrion width (replaces width_mean_px)"
    )
    curvature_sd_range: tuple[float, float] | None = Field(
        None, description="per image: the sd of the centre line's curvature (replaces curvature_sd), rad/px"
    )
    cristae_tilt_sd_range_deg: tuple[float, float] | None = Field(
        None, description="per mitochondrion: the sd of its cristae's tilt (replaces cristae_tilt_sd_deg)"
    )
    cristae_free_fraction: float = Field(
        0.0, ge=0, le=1, description="chance that a mitochondrion has no cristae (boundary membrane and matrix only)"
    )
    labelling: Literal["inner_membrane", "matrix", "outer_membrane"] = Field(
        "inner_membrane",
        description="what the dye stains: inner membrane (boundary membrane + cristae + dim matrix, e.g. PKMITO), "
        "matrix (a filled tube, e.g. matrix-targeted GFP: no cristae visible) or outer membrane (a ring, e.g. TOM20)",
    )
    labelling_weights: dict[Literal["inner_membrane", "matrix", "outer_membrane"], float] | None = Field(
        None, description="per image: draw the labelling with these relative weights (replaces labelling)"
    )
    psf_fwhm_range_nm: tuple[float, float] | None = Field(
        None, description="per image: the STED PSF FWHM (replaces psf_fwhm_nm)"
    )
    background_photons_range: tuple[float, float] | None = Field(
        None, description="per image: the uniform background (replaces background_photons)"
    )
    empty_field_fraction: float = Field(
        0.0, ge=0, le=1,
        description="chance that an image has no in-focus mitochondria at all (background and haze only; empty masks)",
    )

    @field_validator(
        "coverage",
        "width_range_px",
        "length_px",
        "cristae_spacing_nm",
        "cristae_intensity",
        "brightness_range",
        "peak_photons",
        "n_out_of_focus",
        "haze_intensity",
        "width_mean_range_px",
        "curvature_sd_range",
        "cristae_tilt_sd_range_deg",
        "psf_fwhm_range_nm",
        "background_photons_range",
    )
    @classmethod
    def _ordered_range(cls, value: tuple | None, info: ValidationInfo) -> tuple | None:
        if value is not None and (value[0] > value[1] or value[0] < 0):
            raise ValueError(f"{info.field_name}: expected 0 <= low <= high, got {list(value)}")
        return value

    @field_validator(
        "width_range_px", "length_px", "cristae_spacing_nm", "peak_photons", "width_mean_range_px", "psf_fwhm_range_nm"
    )
    @classmethod
    def _positive_range(cls, value: tuple | None, info: ValidationInfo) -> tuple | None:
        # A zero width, length or spacing draws nothing (or loops forever); zero photons is an empty image; a zero
        # PSF is no microscope.
        if value is not None and value[0] <= 0:
            raise ValueError(f"{info.field_name}: expected 0 < low <= high, got {list(value)}")
        return value

    @field_validator("cristae_tilt_sd_range_deg")
    @classmethod
    def _tilt_below_max(cls, value: tuple | None) -> tuple | None:
        # Tilts are clipped at cristae_max_tilt_deg (< 60°): a larger sd only piles tilts up at the clip.
        if value is not None and value[1] >= 60:
            raise ValueError(f"cristae_tilt_sd_range_deg: expected values below 60°, got {list(value)}")
        return value

    @field_validator("labelling_weights")
    @classmethod
    def _weights(cls, value: dict | None) -> dict | None:
        if value is None:
            return value
        if any(w < 0 for w in value.values()) or sum(value.values()) <= 0:
            raise ValueError(f"labelling_weights: expected weights >= 0 with a positive sum, got {dict(value)}")
        return value

    @model_validator(mode="after")
    def _fits_16_bits(self) -> SimulationConfig:
        # HR images are written as uint16 counts: the brightest pixels (a few times the 99.9th-percentile peak)
        # plus offset and background must stay below 65535, or they would be clipped silently.
        background = max(self.background_photons, (self.background_photons_range or (0.0, 0.0))[1])
        brightest = 3 * self.peak_photons[1] + self.offset + 10 * background
        if brightest > 65535:
            raise ValueError(
                f"peak_photons up to {self.peak_photons[1]:g} with offset {self.offset:g} would saturate the 16-bit HR"
                f" images (up to ~{brightest:.0f} counts > 65535); keep 3 × peak + offset below 65535"
            )
        return self


class DegradationConfig(YamlModel):
    """How D_synt is built from HR images: RL ground truth, blurred + noisy input."""

    rl_iterations: int = Field(10, ge=1, description="RL iterations for the ground truth; see docs/rl_iterations.png")
    rl_psf_sigma_px: float = Field(0.9, gt=0, description="Gaussian PSF of the HR STED image (≈50 nm FWHM at 25 nm/px)")
    sigma_blur: float = Field(3.25, ge=0, description="σ of the Gaussian blur of the input (px)")
    sigma_noise: float = Field(4.0, ge=0, description="σ of the Gaussian read noise of the input (counts)")
    hr_offset: float = Field(
        100.0, ge=0, description="detector offset of the HR images (the simulator's `offset`; 0 for photon counting): "
        "removed before the Poisson shot noise, added back with the read noise"
    )
    n_test: int = Field(9, ge=0)
    shrink_fraction: float = Field(0.25, ge=0, le=1)
    shrink_factor: float = Field(0.8, gt=0, lt=1, description="scale of the shrink transform")
    p_low: float = Field(2.0, ge=0, lt=100)
    p_high: float = Field(99.8, gt=0, le=100)
    seed: int = 0

    @model_validator(mode="after")
    def _percentiles_ordered(self) -> DegradationConfig:
        if self.p_low >= self.p_high:  # the normalisation would divide by zero or flip the image
            raise ValueError(f"p_low {self.p_low:g} must be below p_high {self.p_high:g}")
        return self


class PatchConfig(YamlModel):
    patch_size: int = 128
    sampling: Literal["mito", "uniform"] = "mito"
    min_distance: float = 60.0
    validation_fraction: float = 0.2
    # Mask (Methods, "Image patch sampling"): Anscombe → z-score → threshold → median.
    z_start: float = 30.0
    z_step: float = 5.0
    min_fraction: float = 0.10
    median_size: int = 5
    seed: int = 0


class NetworkConfig(YamlModel):
    depth: int = Field(3, ge=1)
    filters: int = Field(32, ge=1, description="filters of the first level, doubled at each level")
    kernel_size: int = 3
    residual: bool = True


class TrainingConfig(YamlModel):
    """What every system's training config has; the one trainer (`core.trainer`) reads only these fields (plus the
    system's `plan`). Each system's config (`cristae_zoo.systems`) subclasses it with `system: Literal[<name>]`."""

    system: str
    data_dir: Path = Field(description="training data folder")
    output_dir: Path | None = Field(None, description="model folder to write (the CLI's --output overrides it)")
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate (PSSR: the one-cycle peak)")
    seed: int = Field(0, description="seed of the split, the patch draws, the initialisation")
    pixel_size_nm: float | None = Field(
        None, gt=0, description="pixel size of the training data (nm); becomes the package's rescale requirement"
    )
    init_from: str | None = Field(
        None, description="fine-tune: start from the weights of this bioimage.io package (or model folder)"
    )
    max_minutes: float | None = Field(None, gt=0, description="wall-time budget: stop (resumably) after this long")

    #: fields that may differ when a training is resumed: the budget and where the folder is. Any other change
    #: (network, data, loss, …) would continue the old weights under a new config, so `--resume` refuses it.
    RESUMABLE_CHANGES: ClassVar[frozenset[str]] = frozenset({"steps", "epochs", "max_minutes", "output_dir"})


#: DeepCristae's training data: 25 nm pixels (the simulator's, the paper's STED)
DEEPCRISTAE_PIXEL_SIZE_NM = 25.0


class TrainConfig(TrainingConfig):
    """DeepCristae's (and CARE's) training config, the paper's defaults (`cristae_zoo.systems.deepcristae`
    calls it `DeepCristaeConfig`). It lives here, beside its network and patch configs, so that this module
    imports no system."""

    system: Literal["deepcristae"] = "deepcristae"
    data_dir: Path = Field(Path("runs/data"), description="data folder written by `cristae-zoo prepare`")
    output_dir: Path | None = Path("runs/deepcristae")
    network: NetworkConfig = NetworkConfig()
    patches: PatchConfig = PatchConfig()
    loss: Literal["scop", "mae", "mse", "dssim"] = "scop"
    gamma_mito: float = 1.0
    gamma_background: float = 4.0
    epochs: int = Field(50, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1, description="batches per epoch; default: one pass over the patches")
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(4e-4, gt=0, description="Adam (CARE's default)")
    init_seed: int | None = Field(None, description="seed of the weights' initialisation; default: seed")
    pixel_size_nm: float | None = Field(
        DEEPCRISTAE_PIXEL_SIZE_NM, gt=0, description="pixel size of the training data (nm): the simulator's 25 nm"
    )
