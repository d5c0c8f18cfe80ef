"""Label-free prediction (after Hsu et al.): transmitted light → mitochondria and DNA fluorescence, 2D or 3D.

Training data: `DATA/tl/NAME.tif` next to `DATA/<structure>/NAME.tif`; split by image 75/25 train/test, then
90/10 train/validation (seeded, written to split.json). Random patches, MSE, Adam; the network is the stride-2
U-Net with batch norm of `labelfree.network`, one output channel per structure.
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
from cristae_zoo.labelfree import STRUCTURES
from cristae_zoo.labelfree.network import LabelFreeNetworkConfig, seamless_halo

#: patch size by the network's dimensionality (paper 3D: 32×64×64)
DEFAULT_PATCH = {2: [64, 64], 3: [32, 64, 64]}


class LabelFreeConfig(TrainingConfig):
    system: Literal["labelfree"] = "labelfree"
    data_dir: Path = Field(description="folder with tl/NAME.tif and <structure>/NAME.tif")
    structures: list[str] = Field(default_factory=lambda: list(STRUCTURES), min_length=1,
                                  description="structure folders = output channels")  # fmt: skip
    network: LabelFreeNetworkConfig = Field(default_factory=lambda: LabelFreeNetworkConfig(depth=3, filters=12))
    patch_size: list[int] | None = Field(None, description="(Y, X) or (Z, Y, X); default by network.ndim")
    batch_size: int = Field(8, ge=1)
    steps: int = Field(800, ge=1)
    validate_every: int = Field(50, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    test_fraction: float = Field(0.25, ge=0, lt=1)
    validation_fraction: float = Field(0.10, ge=0, lt=1)

    @model_validator(mode="after")
    def _consistent(self) -> LabelFreeConfig:
        net = self.network
        if net.n_out != len(self.structures):  # one output channel per structure, whatever the YAML said
            self.network = net = net.model_copy(update={"n_out": len(self.structures)})
        if self.patch_size is None:
            self.patch_size = list(DEFAULT_PATCH[net.ndim])
        if len(self.patch_size) != net.ndim:
            raise ValueError(f"patch_size {self.patch_size} has {len(self.patch_size)} axes, the network is {net.ndim}D")
        if any(k % net.divisor for k in self.patch_size):
            raise ValueError(f"patch_size {self.patch_size}: every size must be divisible by {net.divisor} (2**depth)")
        return self


class LabelFreeData(TrainingData):
    def __init__(self, config: LabelFreeConfig) -> None:
        from cristae_zoo.labelfree.data import list_pairs, load_pair, random_patches, split

        self.config, self.size = config, tuple(config.patch_size or ())
        data_dir, net = Path(config.data_dir), config.network
        names = list_pairs(data_dir, config.structures)
        self.split = split(names, config.test_fraction, config.validation_fraction, config.seed)
        if not self.split["train"]:
            raise CristaeZooError(f"{data_dir}: {len(names)} pair(s) leave no training image after the splits")
        # every pair is read (and checked) now, the held-out ones too: a broken test pair is found before training
        load = {k: [load_pair(data_dir, n, config.structures, net.ndim) for n in v] for k, v in self.split.items()}
        for p in load["train"] + load["validation"]:
            if any(s < k for s, k in zip(p.tl.shape, self.size)):
                raise CristaeZooError(f"{data_dir / 'tl' / p.name}: image {p.tl.shape} smaller than patch_size {list(self.size)}")
        self.train = load["train"]
        self._random_patches = random_patches
        # a fixed validation set: the same patches every time
        self.val = random_patches(load["validation"] or self.train, self.size, 4 * config.batch_size,
                                  np.random.default_rng(config.seed + 1))  # fmt: skip

    def train_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self._random_patches(self.train, self.size, self.config.batch_size, rng)

    def validation_batches(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.val]


class LabelFree(System[LabelFreeConfig]):
    name = "labelfree"
    config_class = LabelFreeConfig
    summary = "transmitted light → mitochondria and DNA fluorescence (Hsu et al.), 2D or 3D"

    def build_keras(self, config: LabelFreeConfig) -> Any:
        import keras

        from cristae_zoo.labelfree.network import build_labelfree_unet

        keras.utils.set_random_seed(config.seed)  # the layers' default initialisers draw from the global seed
        return build_labelfree_unet(config.network)

    def build_torch_twin(self, config: LabelFreeConfig, keras_model: Any) -> Any:
        from cristae_zoo.labelfree.torch_twin import build_twin

        return build_twin(keras_model, config.network)

    def tensor_description(self, config: LabelFreeConfig) -> TensorDescription:
        net = config.network
        axes = "yx" if net.ndim == 2 else "zyx"
        halo, step = seamless_halo(net), net.divisor
        return TensorDescription(
            spatial_axes=axes,  # type: ignore[arg-type]
            input_channels=["transmitted_light"],
            output_channels=list(config.structures),
            halo={a: halo for a in axes},
            min_size={a: 2 * halo + step for a in axes},
            step={a: step for a in axes},
            normalisation=Normalisation(kind="zscore"),
            rescale=RescaleRequirement(pixel_size_nm=config.pixel_size_nm) if config.pixel_size_nm else None,
        )

    def training_data(self, config: LabelFreeConfig) -> LabelFreeData:
        return LabelFreeData(config)

    def loss(self, config: LabelFreeConfig) -> Callable[..., Any]:
        import keras

        return keras.losses.MeanSquaredError()

    def package_test_input(self, config: LabelFreeConfig, model_dir: Path | None) -> tuple[np.ndarray, str]:
        """The packager's test input: the first held-out TL image of the training's split that is at least the
        package's minimum input (2 × halo + 2**depth per axis). A training patch (64×64) is smaller than that minimum
        (136 px for the shipped network), so the packager's fallback to a validation sample cannot serve; where every
        held-out image is too small too (the 128×128 simulated pairs), one line asks for --test-input."""
        from cristae_zoo.core.model_dir import held_out_test_inputs
        from cristae_zoo.labelfree.data import read_image

        minimum = self.tensor_description(config).min_size
        data_dir = Path(config.data_dir)
        for path in held_out_test_inputs(model_dir, data_dir / "tl", "TL.tif"):
            tl = read_image(path, config.network.ndim)  # raw, as the package takes it (it normalises itself)
            if all(s >= k for s, k in zip(tl.shape, minimum.values())):
                return tl[None], str(path)
        need = "×".join(str(k) for k in minimum.values())
        raise CristaeZooError(f"no test input: every held-out TL image of {data_dir} is smaller than the package's"
                              f" minimum input {need}; pass --test-input TL.tif")

    def evaluate(self, models: list[Any], output: Path, data_dir: Path | None = None,
                 progress: Callable[..., None] | None = None) -> str:
        """Pearson r and SSIM per structure and test image, U-Net vs inverted TL; metrics.csv, summary.md and a
        TL / prediction / fluorescence PNG in `output` (first model; one model per call)."""
        from cristae_zoo.io import atomic_write_text, write_csv
        from cristae_zoo.labelfree.data import list_pairs, load_pair
        from cristae_zoo.labelfree.evaluate import evaluate as run, figure, summary_markdown, training_markdown

        if len(models) != 1:
            raise CristaeZooError("labelfree: evaluate one model folder at a time")
        m = models[0]
        names = list_pairs(data_dir, m.config.structures) if data_dir else m.held_out_names()
        data = Path(data_dir or m.config.data_dir)
        rows = run(m.keras_model, m.config, data, names)
        if progress:
            progress(len(names))
        md = summary_markdown(rows)
        trained = training_markdown(m.model_dir, m.config)
        md += f"\n{trained}" if trained else ""
        write_csv(Path(output) / "metrics.csv", rows)
        atomic_write_text(Path(output) / "summary.md", md)
        first = rows[0]["image"]
        pair = load_pair(data, first, m.config.structures, m.config.network.ndim)
        figure(m.keras_model, m.config, pair, Path(output) / f"labelfree_{Path(first).stem}.png")
        return md
