"""PSSR (Fang et al. 2021): 4× super-sampling of undersampled point-scanning images, single frame (`network.n_frames:
1`, PSSR-SF) or five consecutive frames as channels (`n_frames: 5`, PSSR-MF).

Training: MSE, Adam under the one-cycle policy (a schedule hook setting the learning rate and β1 per step), pairs
drawn on the fly from simulated movies (`pssr.data`); the last movies are held out for validation and testing.
Fine-tuning SF → MF: the single-frame stem kernel goes to the middle frame, the other frames start at zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from cristae_zoo.core.system import System, TrainingConfig, TrainingData, copy_weights_by_name
from cristae_zoo.core.tensors import Normalisation, RescaleRequirement, TensorDescription
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.pssr.crappify import CrappifierConfig
from cristae_zoo.pssr.network import PSSRNetworkConfig

#: context per side (LR px; 64 HR px) for seamless tiling, as measured when the packages were made
HALO_IN = 16
#: input channel names of the packaged network
FRAME_NAMES = {1: ["lr"], 5: ["t_minus_2", "t_minus_1", "t", "t_plus_1", "t_plus_2"]}


class PSSRConfig(TrainingConfig):
    system: Literal["pssr"] = "pssr"
    data_dir: Path = Field(description="folder written by `cristae-zoo pssr simulate` (hr/*.tif)")
    network: PSSRNetworkConfig = Field(default_factory=PSSRNetworkConfig)
    crappifier: CrappifierConfig = Field(default_factory=CrappifierConfig)
    lr_patch: int = Field(32, ge=8, description="LR patch size (HR patch = scale × this)")
    batch_size: int = Field(8, ge=1)
    steps: int = Field(1500, ge=1)
    validate_every: int = Field(100, ge=1)
    learning_rate: float = Field(1e-3, gt=0, description="one-cycle peak")
    div_factor: float = Field(25.0, gt=1, description="start at max / div_factor")
    warmup_fraction: float = Field(0.3, gt=0, lt=1)
    momentum: tuple[float, float] = Field((0.95, 0.85), description="Adam β1 at the ends / at the peak of the cycle")
    n_validation_movies: int = Field(2, ge=1)
    n_test_movies: int = Field(4, ge=1)

    @property
    def max_learning_rate(self) -> float:  # the name the one-cycle literature (and older code) uses
        return self.learning_rate

    @model_validator(mode="after")
    def _consistent(self) -> PSSRConfig:
        if self.network.n_frames % 2 == 0:
            raise ValueError(f"network.n_frames {self.network.n_frames}: must be odd (t-k … t+k; PSSR: 1 or 5)")
        if self.lr_patch % self.network.divisor:
            raise ValueError(f"lr_patch {self.lr_patch}: must be divisible by {self.network.divisor} (2**depth)")
        if self.network.scale != self.crappifier.scale:
            raise ValueError(f"network.scale {self.network.scale} differs from crappifier.scale {self.crappifier.scale}")
        return self


def one_cycle(step: int, total: int, max_lr: float, div: float = 25.0, warmup: float = 0.3,
              momentum: tuple[float, float] = (0.95, 0.85)) -> tuple[float, float]:
    """(learning rate, β1) at `step` of `total` (Smith's one-cycle, as in the paper and fast.ai).

    Warm-up: lr rises linearly from max/div to max while β1 falls linearly; then lr follows a cosine from max to 0
    while β1 rises back along the same cosine.
    """
    n_up = max(1, int(round(warmup * total)))
    hi_m, lo_m = momentum
    if step < n_up:
        p = step / n_up
        return max_lr / div + p * (max_lr - max_lr / div), hi_m - p * (hi_m - lo_m)
    p = min(1.0, (step - n_up) / max(1, total - n_up))
    c = 0.5 * (1 + math.cos(math.pi * p))  # 1 → 0
    return max_lr * c, lo_m + (1 - c) * (hi_m - lo_m)


def stem_to_frames(n_frames: int) -> Callable[[str, list[Any], list[Any]], list[Any]]:
    """Weight adapter for fine-tuning a multi-frame network from a single-frame one: the stem kernel (3, 3, 1, F)
    goes to the middle frame of (3, 3, n, F) and the other frames start at zero, so the network starts as exactly
    the single-frame one and can only learn to use the neighbouring frames from there."""

    def adapt(name: str, src: list[Any], target: list[Any]) -> list[Any]:
        if name == "stem" and np.shape(src[0])[2] == 1 and n_frames > 1:
            kernel = np.zeros_like(target[0])
            kernel[:, :, n_frames // 2] = src[0][:, :, 0]
            return [kernel, src[1]]
        return src

    return adapt


def init_from(model: Any, source: Any, n_frames: int) -> None:
    """Copy every weight of `source` into `model` by layer name (SF → MF: see `stem_to_frames`)."""
    copy_weights_by_name(model, source, stem_to_frames(n_frames))


class PSSRData(TrainingData):
    def __init__(self, config: PSSRConfig) -> None:
        from cristae_zoo.pssr.data import draw_batch, load_hr_movie, split_movies

        self.config, self._draw = config, draw_batch
        data = Path(config.data_dir)
        names = sorted(p.name for p in (data / "hr").glob("*.tif")) if (data / "hr").is_dir() else []
        if not names:
            raise CristaeZooError(f"{data}: no hr/*.tif movies (write them with `cristae-zoo pssr simulate`)")
        self.split = split_movies(names, config.n_validation_movies, config.n_test_movies)
        self.train = [load_hr_movie(data / "hr" / n) for n in self.split["train"]]
        val_movies = [load_hr_movie(data / "hr" / n) for n in self.split["validation"]]
        need = config.lr_patch * config.crappifier.scale
        for name, m in zip(self.split["train"] + self.split["validation"], self.train + val_movies):
            if min(m.shape[1:]) < need:
                raise CristaeZooError(f"{data / 'hr' / name}: frames {m.shape[1:]} smaller than the HR patch {need} px")
            if len(m) < config.network.n_frames:
                raise CristaeZooError(f"{data / 'hr' / name}: {len(m)} frame(s), the model needs ≥ {config.network.n_frames}")
        val_rng = np.random.default_rng(config.seed + 1)  # a fixed validation set: same crops and noise every time
        self.val = [draw_batch(val_movies, config, val_rng) for _ in range(4)]

    def train_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self._draw(self.train, self.config, rng)

    def validation_batches(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return self.val


class PSSR(System[PSSRConfig]):
    name = "pssr"
    config_class = PSSRConfig
    summary = "4× super-sampling of point-scanning images of mitochondria, single or 5 frames (Fang et al.)"

    def build_keras(self, config: PSSRConfig) -> Any:
        from cristae_zoo.pssr.network import build_pssr

        return build_pssr(config.network, config.seed)

    def build_torch_twin(self, config: PSSRConfig, keras_model: Any) -> Any:
        from cristae_zoo.pssr.torch_twin import build_twin

        return build_twin(keras_model, config.network)

    def tensor_description(self, config: PSSRConfig) -> TensorDescription:
        net = config.network
        step = net.divisor
        names = FRAME_NAMES.get(net.n_frames) or [f"t_{i - net.n_frames // 2:+d}" for i in range(net.n_frames)]
        return TensorDescription(
            spatial_axes="yx",
            input_channels=names,
            output_channels=["hr"],
            output_scale=net.scale,
            frames_as_channels=net.n_frames > 1,
            halo={"y": HALO_IN, "x": HALO_IN},
            min_size={a: 2 * HALO_IN + step for a in "yx"},
            step={"y": step, "x": step},
            normalisation=Normalisation(kind="percentile", low=0.0, high=100.0),
            rescale=RescaleRequirement(pixel_size_nm=config.pixel_size_nm) if config.pixel_size_nm else None,
        )

    def training_data(self, config: PSSRConfig) -> PSSRData:
        return PSSRData(config)

    def loss(self, config: PSSRConfig) -> Callable[..., Any]:
        import keras

        return keras.losses.MeanSquaredError()

    def optimizer(self, config: PSSRConfig) -> Any:
        import keras

        optimizer = keras.optimizers.Adam(config.learning_rate, beta_1=config.momentum[0])
        # a variable, not a float: the compiled train step reads it on every call, so β1 can follow the cycle
        optimizer.beta_1 = keras.Variable(config.momentum[0], trainable=False, name="beta_1", dtype="float32")
        return optimizer

    def schedule(self, config: PSSRConfig) -> Callable[[int, int], Mapping[str, float]]:
        def hook(step: int, total: int) -> Mapping[str, float]:
            lr, beta1 = one_cycle(step, total, config.learning_rate, config.div_factor, config.warmup_fraction,
                                  config.momentum)  # fmt: skip
            return {"learning_rate": lr, "beta_1": beta1}

        return hook

    def package_test_input(self, config: PSSRConfig, model_dir: Path | None) -> tuple[np.ndarray, str]:
        """The packager's test input: the first held-out LR movie of the training's split (a whole 8-bit movie; the
        packager takes its middle frame, or the window of frames around it). A training patch (`lr_patch` px) is
        smaller than the package's minimum input, so the packager's fallback to a validation sample cannot serve."""
        import tifffile

        from cristae_zoo.core.model_dir import held_out_test_inputs

        path = held_out_test_inputs(model_dir, Path(config.data_dir) / "lr", "LR_MOVIE.tif")[0]
        return np.asarray(tifffile.imread(path)), str(path)

    def init_weights(self, config: PSSRConfig, model: Any, source: Any) -> None:
        init_from(model, source, config.network.n_frames)

    def evaluate(self, models: list[Any], output: Path, data_dir: Path | None = None,
                 progress: Callable[..., None] | None = None) -> str:
        """PSNR, SSIM, SNR of bilinear 4× vs each model on the held-out movies; metrics.csv, summary.md and a PNG of
        a fission event in `output`."""
        from cristae_zoo.io import atomic_write_text, write_csv
        from cristae_zoo.pssr.evaluate import evaluate as run
        from cristae_zoo.pssr.evaluate import (data_markdown, fission_event, fission_figure, restore_all, summary_markdown,
                                              training_markdown)

        loaded, labels = {}, {"bilinear": "bilinear 4×"}
        for m in models:
            if m.label in ("bilinear", "hr", "lr", "mask") or m.label in loaded:
                raise CristaeZooError(f"{m.model_dir or m.source}: give each model a distinct name other than bilinear/hr/lr/mask")
            loaded[m.label] = (m.keras_model, m.config)
            variant = "PSSR-MF" if m.config.network.n_frames > 1 else "PSSR-SF"
            labels[m.label] = variant if m.label in ("sf", "mf") else f"{variant} ({m.label})"
        data = Path(data_dir or models[0].config.data_dir)
        # named data: every movie in it (as the other systems do); else the training's held-out split
        names = sorted(p.name for p in (data / "hr").glob("*.tif")) if data_dir else models[0].held_out_names()
        if not names:
            raise CristaeZooError(f"{data / 'hr'}: no movie (*.tif) to evaluate on")
        restored = restore_all(data, names, loaded)
        if progress:
            progress(len(names))
        rows = run(restored, list(labels))
        md = summary_markdown(rows, labels | {"hr": "HR ground truth"})
        md += ("\n" + data_markdown(data)) if data_markdown(data) else ""
        trained = [training_markdown(labels[m.label], m.model_dir, m.config) for m in models]
        if any(trained):
            md += "\nTraining (from each model folder's `config.yaml` and `history.csv`):\n\n" + "".join(trained)
        write_csv(Path(output) / "metrics.csv", rows)
        atomic_write_text(Path(output) / "summary.md", md)
        if (data / "events.json").is_file():  # simulated movies: show a fission event, if one is inside the frame
            try:
                name, event = fission_event(data, restored)
            except CristaeZooError:
                name = None
            if name is not None:
                fission_figure(restored[name], event, labels | {"hr": "HR ground truth"}, Path(output) / "pssr_fission.png")
        return md
