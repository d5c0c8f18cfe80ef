"""CARE for luminescence microscopy (after Boothe et al.): 2 s → 60 s exposure (`mode.mode: pairs`), software-binned
input upsampled back (`binning`), or noise2noise between two equally short acquisitions (`noise2noise`); 3D
(Z, Y, X) by default, 2D possible. The network is the label-free U-Net with CARE's probabilistic head: its output
is [mean, scale] (Laplace or Gaussian NLL), both packaged as output channels.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from cristae_zoo.core.system import System, TrainingConfig, TrainingData
from cristae_zoo.core.tensors import Normalisation, RescaleRequirement, TensorDescription
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.labelfree.network import LabelFreeNetworkConfig, seamless_halo
from cristae_zoo.luminescence.modes import PERCENTILES, ModeConfig
from cristae_zoo.luminescence.network import care_network_config

#: patch size by the network's dimensionality (paper: 16×64×64)
DEFAULT_PATCH = {2: [64, 64], 3: [16, 32, 32]}


class LuminescenceConfig(TrainingConfig):
    system: Literal["luminescence"] = "luminescence"
    data_dir: Path = Field(description="folder with <mode.input_dir>/NAME.tif and <mode.target_dir>/NAME.tif")
    mode: ModeConfig = Field(default_factory=ModeConfig, description="pairs | binning | noise2noise and its folders")
    network: LabelFreeNetworkConfig = Field(default_factory=care_network_config)
    residual: bool = Field(False, description="CSBDeep's residual mean (input + correction)")
    loss: Literal["laplace", "gaussian"] = Field("laplace", description="NLL; noise2noise on photon-starved data: gaussian")
    patch_size: list[int] | None = Field(None, description="(Z, Y, X) or (Y, X); default by network.ndim")
    batch_size: int = Field(4, ge=1)
    steps: int = Field(250, ge=1)
    validate_every: int = Field(25, ge=1)
    learning_rate: float = Field(1e-3, gt=0, description="CSBDeep's default is 4e-4; few steps here")
    foreground_fraction: float = Field(0.75, ge=0, le=1, description="share of patches that must contain structure")
    test_fraction: float = Field(0.2, ge=0, lt=1)
    validation_fraction: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _consistent(self) -> LuminescenceConfig:
        net = self.network
        if net.n_out != 2:
            raise ValueError(f"network.n_out {net.n_out}: the Laplace head needs 2 raw channels (mean, scale)")
        if self.patch_size is None:
            self.patch_size = list(DEFAULT_PATCH[net.ndim])
        size = self.patch_size
        if len(size) != net.ndim:
            raise ValueError(f"patch_size {size} has {len(size)} axes, the network is {net.ndim}D")
        if any(k % net.divisor for k in size):
            raise ValueError(f"patch_size {size}: every size must be divisible by {net.divisor} (2**depth)")
        if any(k % self.mode.bin_factor for k in size[-2:]):
            raise ValueError(f"patch_size {size}: y, x must be multiples of the binning factor {self.mode.bin_factor}")
        return self


class LuminescenceData(TrainingData):
    def __init__(self, config: LuminescenceConfig) -> None:
        from cristae_zoo.labelfree.data import split
        from cristae_zoo.luminescence.modes import list_names, load_pairs, sample_batch

        self.config, self.size, self._sample = config, tuple(config.patch_size or ()), sample_batch
        data_dir, ndim = Path(config.data_dir), config.network.ndim
        names = list_names(data_dir, config.mode)
        self.split = split(names, config.test_fraction, config.validation_fraction, config.seed)
        if not self.split["train"]:
            raise CristaeZooError(f"{data_dir}: {len(names)} image(s) leave no training image after the splits")
        self.train = load_pairs(data_dir, self.split["train"], config.mode, ndim)
        val = load_pairs(data_dir, self.split["validation"], config.mode, ndim) if self.split["validation"] else self.train
        for p in self.train + val:
            if any(s < k for s, k in zip(p.tl.shape, self.size)):
                raise CristaeZooError(f"{data_dir / config.mode.input_dir / p.name}: image {p.tl.shape} smaller than"
                                      f" patch_size {list(self.size)}")  # fmt: skip
        self.val = sample_batch(val, self.size, 4 * config.batch_size, np.random.default_rng(config.seed + 1),
                                config.foreground_fraction)  # fmt: skip

    def train_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self._sample(self.train, self.size, self.config.batch_size, rng, self.config.foreground_fraction)

    def validation_batches(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.val]


class Luminescence(System[LuminescenceConfig]):
    name = "luminescence"
    config_class = LuminescenceConfig
    summary = "CARE for luminescence (Boothe et al.): pairs / binning / noise2noise, probabilistic, 3D"

    def build_keras(self, config: LuminescenceConfig) -> Any:
        import keras

        from cristae_zoo.luminescence.network import build_care

        keras.utils.set_random_seed(config.seed)
        return build_care(config.network, residual=config.residual)

    def build_torch_twin(self, config: LuminescenceConfig, keras_model: Any) -> Any:
        from cristae_zoo.luminescence.torch_head import build_laplace_twin

        return build_laplace_twin(keras_model, config.network)

    def tensor_description(self, config: LuminescenceConfig) -> TensorDescription:
        net = config.network
        step, halo = net.divisor, seamless_halo(net)
        axes = "zyx" if net.ndim == 3 else "yx"
        halo_of = {"y": halo, "x": halo}
        min_size = {"y": 2 * halo + step, "x": 2 * halo + step}
        if net.ndim == 3:
            # Stacks are thin (the training z-patch: 16 planes): z gets the halo that fits in a stack of that many
            # planes, not the full receptive field; tiling in z is approximate, as the package README states.
            min_z = (config.patch_size or DEFAULT_PATCH[3])[0]
            halo_of["z"] = (min_z - 1) // 2 // step * step
            min_size["z"] = min_z
        return TensorDescription(
            spatial_axes=axes,  # type: ignore[arg-type]
            input_channels=["short_exposure" if config.mode.mode != "noise2noise" else "acquisition"],
            output_channels=["mean", "scale"],
            halo=halo_of,
            min_size=min_size,
            step={a: step for a in axes},
            normalisation=Normalisation(kind="percentile", low=PERCENTILES[0], high=PERCENTILES[1]),
            rescale=RescaleRequirement(pixel_size_nm=config.pixel_size_nm) if config.pixel_size_nm else None,
        )

    def training_data(self, config: LuminescenceConfig) -> LuminescenceData:
        return LuminescenceData(config)

    def loss(self, config: LuminescenceConfig) -> Callable[..., Any]:
        from cristae_zoo.luminescence.losses import LOSSES

        return LOSSES[config.loss]

    def package_test_input(self, config: LuminescenceConfig, model_dir: Path | None) -> tuple[np.ndarray, str]:
        """The packager's test input: the first held-out scene of the training's split, raw ADU as the package takes
        it (binned and repeated back in `binning` mode). A training patch (16×32×32) is smaller than the package's
        minimum input (y, x ≥ 60), so the packager's fallback to a validation sample cannot serve."""
        from cristae_zoo.core.model_dir import held_out_test_inputs
        from cristae_zoo.luminescence.modes import read_input

        path = held_out_test_inputs(model_dir, Path(config.data_dir) / config.mode.input_dir, "STACK.tif")[0]
        return read_input(path, config.mode, config.network.ndim), str(path)

    def evaluate(self, models: list[Any], output: Path, data_dir: Path | None = None,
                 progress: Callable[..., None] | None = None) -> str:
        """PSNR, SSIM, mask MAE and Pearson r in masks: input vs restoration vs long exposure on the held-out scenes;
        metrics.csv, summary.md and a before/after PNG in `output` (one model per call)."""
        from cristae_zoo.io import atomic_write_text, write_csv
        from cristae_zoo.luminescence.evaluate import evaluate as run, figure, summary_markdown, training_markdown
        from cristae_zoo.luminescence.modes import list_names

        if len(models) != 1:
            raise CristaeZooError("luminescence: evaluate one model folder at a time")
        m = models[0]
        names = list_names(Path(data_dir), m.config.mode) if data_dir else m.held_out_names()
        data = Path(data_dir or m.config.data_dir)
        rows = run(m.keras_model, m.config, data, names)
        if progress:
            progress(len(names))
        md = summary_markdown(rows)
        trained = training_markdown(m.model_dir, m.config)
        md += f"\n{trained}" if trained else ""
        write_csv(Path(output) / "metrics.csv", rows)
        atomic_write_text(Path(output) / "summary.md", md)
        figure(m.keras_model, m.config, rows[0]["image"], Path(output) / f"luminescence_{m.config.mode.mode}.png", data)
        return md
