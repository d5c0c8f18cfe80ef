"""DeepCristae (Papereux et al. 2023): the residual CARE U-Net trained on D_synt with the SCoP loss and
mitochondria-focused patch sampling. Also CARE itself (`loss: mae`, `patches.sampling: uniform`).

Training data: a folder written by `cristae-zoo prepare` (train/input, train/gt; degradation.yaml). Patches are
sampled once (seeded) from the normalised, augmented training images; 20 % are held out for validation. An epoch
is `steps_per_epoch` random batches (default: as many as one pass over the patches); the best epoch on validation
loss is kept.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cristae_zoo.config import DEEPCRISTAE_PIXEL_SIZE_NM, DegradationConfig, TrainConfig
from cristae_zoo.core.system import System, TrainingData, TrainingPlan
from cristae_zoo.core.tensors import Normalisation, RescaleRequirement, TensorDescription
from cristae_zoo.errors import CristaeZooError

#: mitochondria in the training data are this wide (px) at 25 nm pixels (paper: 15.64 ± 4.04 px)
STRUCTURE_WIDTH_PX_AT_25NM = 15.64
REFERENCE_PIXEL_SIZE_NM = DEEPCRISTAE_PIXEL_SIZE_NM


#: DeepCristae's training config (defined in `cristae_zoo.config` as `TrainConfig`, beside its network and patch
#: configs, so that `config` imports no system)
DeepCristaeConfig = TrainConfig


def degradation_of(data_dir: Path) -> DegradationConfig:
    """The degradation.yaml `prepare` wrote into the data folder, or the defaults."""
    path = Path(data_dir) / "degradation.yaml"
    return DegradationConfig.from_yaml(path) if path.is_file() else DegradationConfig()


def build_patch_set(config: DeepCristaeConfig, progress: Callable[[int], None] | None = None) -> tuple[Any, list]:
    """Load the training split, normalise, augment and sample patches as `config.patches` says; also returns up to
    four (image triplet, centres) for the overview figure."""
    from cristae_zoo.data.patches import augment, sample_patch_set
    from cristae_zoo.data.prepare import load_split, training_triplets

    data_dir = Path(config.data_dir)
    degradation = degradation_of(data_dir)
    pairs = load_split(data_dir, "train", min_size=config.patches.patch_size)
    triplets = training_triplets(pairs, degradation, config.patches)
    augmented = augment(triplets, degradation, np.random.default_rng(config.patches.seed))
    patches, centres = sample_patch_set(augmented, config.patches, progress)
    if len(patches.x_train) == 0:
        raise CristaeZooError(f"{data_dir}: no training patches could be sampled")
    return patches, list(zip(augmented[:4], centres[:4]))


def _targets(y: np.ndarray, m: np.ndarray) -> np.ndarray:
    """(ground truth, mitochondria mask) as two channels: SCoP takes its per-pixel γ from the mask."""
    return np.stack([y, m], axis=-1).astype(np.float32)


class DeepCristaeData(TrainingData):
    def __init__(self, config: DeepCristaeConfig) -> None:
        self.config = config
        patches, self.overview = build_patch_set(config)
        self.x = patches.x_train[..., None].astype(np.float32)
        self.y = _targets(patches.y_train, patches.m_train)
        if len(patches.x_val):
            self.val = (patches.x_val[..., None].astype(np.float32), _targets(patches.y_val, patches.m_val))
        else:  # too few patches to hold any out: validate on the training patches (stated in the history)
            self.val = (self.x, self.y)
        self.n_train = len(self.x)

    def train_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        idx = rng.choice(len(self.x), size=min(self.config.batch_size, len(self.x)), replace=False)
        return self.x[idx], self.y[idx]

    def validation_batches(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.val]

    def write_extras(self, out_dir: Path) -> list[Path]:
        from cristae_zoo.plots import plot_patch_overview

        written = [Path(out_dir) / "patches_overview.png"]
        plot_patch_overview(self.overview, self.config.patches.patch_size, written[0])
        degradation = Path(self.config.data_dir) / "degradation.yaml"
        if degradation.is_file():
            shutil.copyfile(degradation, Path(out_dir) / "degradation.yaml")
            written.append(Path(out_dir) / "degradation.yaml")
        return written


class DeepCristae(System[DeepCristaeConfig]):
    name = "deepcristae"
    config_class = DeepCristaeConfig
    summary = "2D restoration of mitochondria cristae in STED images (residual U-Net, SCoP loss)"

    def build_keras(self, config: DeepCristaeConfig) -> Any:
        from cristae_zoo.models.unet import build_unet

        return build_unet(config.network, seed=config.init_seed if config.init_seed is not None else config.seed)

    def build_torch_twin(self, config: DeepCristaeConfig, keras_model: Any) -> Any:
        from cristae_zoo.export.torchscript import build_torch_unet, copy_keras_weights

        return copy_keras_weights(build_torch_unet(config.network), keras_model, config.network)

    def tensor_description(self, config: DeepCristaeConfig) -> TensorDescription:
        from cristae_zoo.export.halo import declared_halo, min_input_size
        from cristae_zoo.models.unet import divisibility

        step, halo = divisibility(config.network), declared_halo(config.network)
        degradation = DegradationConfig()
        pixel = config.pixel_size_nm or REFERENCE_PIXEL_SIZE_NM
        return TensorDescription(
            spatial_axes="yx",
            input_channels=["mitochondria"],
            output_channels=["restored"],
            halo={"y": halo, "x": halo},
            min_size={a: min_input_size(halo, step) for a in "yx"},
            step={"y": step, "x": step},
            normalisation=Normalisation(kind="percentile", low=degradation.p_low, high=degradation.p_high),
            # The network learnt mitochondria of the training data's width in px: inputs are resampled to its pixel size.
            rescale=RescaleRequirement(
                pixel_size_nm=pixel, structure_width_px=STRUCTURE_WIDTH_PX_AT_25NM * REFERENCE_PIXEL_SIZE_NM / pixel
            ),
        )

    def training_data(self, config: DeepCristaeConfig) -> DeepCristaeData:
        return DeepCristaeData(config)

    def loss(self, config: DeepCristaeConfig) -> Callable[..., Any]:
        from cristae_zoo.models.losses import get_loss

        return get_loss(config.loss, config.gamma_mito, config.gamma_background)

    def plan(self, config: DeepCristaeConfig, data: TrainingData) -> TrainingPlan:
        per_epoch = config.steps_per_epoch or int(np.ceil((data.n_train or 1) / config.batch_size))
        return TrainingPlan(steps=config.epochs * per_epoch, validate_every=per_epoch)

    def evaluate(self, models: list[Any], output: Path, data_dir: Path | None = None,
                 progress: Callable[..., None] | None = None) -> str:
        """The paper's metrics (NRMSE, PSNR, SSIM; whole, _mito, _cristae) on the test split, vs the input, median,
        Wiener and RL baselines; metrics.csv, summary.md and restoration PNGs with line profiles in `output`."""
        from cristae_zoo.data.degrade import percentile_normalize
        from cristae_zoo.data.mask import mitochondria_mask
        from cristae_zoo.data.prepare import load_split
        from cristae_zoo.evaluate import COLUMNS, baselines, keras_restorer
        from cristae_zoo.evaluate import evaluate as run_metrics
        from cristae_zoo.evaluate import summary_markdown
        from cristae_zoo.io import atomic_write_text, write_csv
        from cristae_zoo.models.unet import divisibility
        from cristae_zoo.plots import plot_restoration

        data_dir = Path(data_dir or models[0].config.data_dir)
        degradation = degradation_of(data_dir)
        pairs = load_split(data_dir, "test")
        restorers = baselines(degradation)
        for m in models:
            restorers[m.label] = keras_restorer(m.keras_model, degradation, divisibility(m.config.network))
        result = run_metrics(pairs, restorers, degradation, progress=progress)
        md = summary_markdown(result.summary())
        output = Path(output)
        write_csv(output / "metrics.csv", result.rows, ["method", "image", *COLUMNS])
        atomic_write_text(output / "summary.md", md)
        for pair in pairs[:3]:
            panels = {"input": result.restored["Input"][pair.name]}
            panels |= {m.label: result.restored[m.label][pair.name] for m in models}
            panels["ground truth"] = percentile_normalize(pair.gt, degradation.p_low, degradation.p_high)
            mito = pair.mito_mask if pair.mito_mask is not None else mitochondria_mask(pair.input)
            plot_restoration(panels, mito, output / f"{pair.name}_restoration.png", title=pair.name)
        return md
