"""Training in any mode: random patches of normalised input/target, 8-fold augmentation, Laplace NLL, Adam.

Splits (by image, seeded) and patch sampling are those of `labelfree.train`; patches are drawn with CSBDeep's
background filter in spirit (most patches must contain structure: luminescence scenes are sparse) and each gets
one of the 8 rotations/mirrors. The best weights on validation NLL are kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from cristae_zoo.config import YamlModel
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.io import write_csv
from cristae_zoo.labelfree.data import Pair
from cristae_zoo.labelfree.network import LabelFreeNetworkConfig
from cristae_zoo.labelfree.train import random_patches, save_if_best, split, start_run
from cristae_zoo.luminescence.modes import ModeConfig, augment8, list_names, load_sample
from cristae_zoo.luminescence.network import build_care, care_network_config

#: a patch counts as foreground if its target reaches this (normalised units; 1 ≈ the image's 99.8th percentile)
FOREGROUND = 0.4


class LuminescenceTrainConfig(YamlModel):
    data_dir: str
    mode: ModeConfig = Field(default_factory=ModeConfig)
    network: LabelFreeNetworkConfig = Field(default_factory=care_network_config)
    residual: bool = Field(False, description="CSBDeep's residual mean (input + correction)")
    loss: Literal["laplace", "gaussian"] = Field("laplace", description="NLL; noise2noise on photon-starved data: gaussian")
    patch_size: list[int] = Field(default_factory=lambda: [16, 32, 32], description="(Z, Y, X) or (Y, X); paper 16×64×64")
    batch_size: int = Field(4, ge=1)
    steps: int = Field(250, ge=1)
    validate_every: int = Field(25, ge=1)
    learning_rate: float = Field(1e-3, gt=0, description="CSBDeep's default is 4e-4; few steps here")
    foreground_fraction: float = Field(0.75, ge=0, le=1, description="share of patches that must contain structure")
    test_fraction: float = Field(0.2, ge=0, lt=1)
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    time_budget_min: float | None = Field(None, gt=0, description="stop after this many minutes (shared CPUs)")
    seed: int = 0


def sample_batch(pairs: list[Pair], size: tuple[int, ...], n: int, rng: np.random.Generator,
                 foreground_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """n patches, at least `foreground_fraction` of them with structure when the images have it, augmented."""
    x, y = random_patches(pairs, size, 3 * n, rng)
    fg = y.reshape(len(y), -1).max(axis=1) >= FOREGROUND
    n_fg = min(round(foreground_fraction * n), int(fg.sum()))
    keep = np.concatenate([np.flatnonzero(fg)[:n_fg], np.flatnonzero(~fg | (np.cumsum(fg) > n_fg))[: n - n_fg]])
    ks = rng.integers(0, 8, len(keep))
    # patches are channels-last: (*spatial, C); move C first so augment8 acts on the last two (y, x) axes
    aug = lambda a, k: np.moveaxis(augment8(np.moveaxis(a, -1, 0), int(k)), 0, -1)
    return np.stack([aug(x[i], k) for i, k in zip(keep, ks)]), np.stack([aug(y[i], k) for i, k in zip(keep, ks)])


def _load(config: LuminescenceTrainConfig, names: list[str]) -> list[Pair]:
    pairs = [load_sample(Path(config.data_dir), n, config.mode, config.network.ndim) for n in names]
    if config.mode.swap:  # noise2noise: each acquisition is the other's target as well
        pairs += [Pair(p.name, p.targets[0], p.tl[None]) for p in pairs]
    return pairs


def check_config(config: LuminescenceTrainConfig) -> tuple[int, ...]:
    net, size = config.network, tuple(config.patch_size)
    if net.n_out != 2:
        raise CristaeZooError(f"network.n_out {net.n_out}: the Laplace head needs 2 raw channels (mean, scale)")
    if len(size) != net.ndim:
        raise CristaeZooError(f"patch_size {list(size)} has {len(size)} axes, the network is {net.ndim}D")
    if any(k % net.divisor for k in size):
        raise CristaeZooError(f"patch_size {list(size)}: every size must be divisible by {net.divisor} (2**depth)")
    if any(k % config.mode.bin_factor for k in size[-2:]):
        raise CristaeZooError(f"patch_size {list(size)}: y, x must be multiples of the binning factor {config.mode.bin_factor}")
    return size


def train(config: LuminescenceTrainConfig, out_dir: Path, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train; write config.yaml, split.json, weights.keras (best validation NLL), history.csv in `out_dir`."""
    import keras

    from cristae_zoo.luminescence.losses import LOSSES

    size = check_config(config)
    names = list_names(Path(config.data_dir), config.mode)
    parts = split(names, config.test_fraction, config.validation_fraction, config.seed)
    if not parts["train"]:
        raise CristaeZooError(f"{config.data_dir}: {len(names)} image(s) leave no training image after the splits")
    train_pairs, val_pairs = _load(config, parts["train"]), _load(config, parts["validation"] or parts["train"])
    for p in train_pairs + val_pairs:
        if any(s < k for s, k in zip(p.tl.shape, size)):
            raise CristaeZooError(f"{Path(config.data_dir) / config.mode.input_dir / p.name}: image {p.tl.shape} smaller than patch_size {list(size)}")

    out_dir, rng = start_run(config, out_dir, parts)
    model = build_care(config.network, residual=config.residual)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=LOSSES[config.loss])
    vx, vy = sample_batch(val_pairs, size, 4 * config.batch_size, np.random.default_rng(config.seed + 1), config.foreground_fraction)
    history, best, losses, t0 = [], np.inf, [], time.time()
    for step in range(1, config.steps + 1):
        x, y = sample_batch(train_pairs, size, config.batch_size, rng, config.foreground_fraction)
        losses.append(float(model.train_on_batch(x, y)))
        if progress:
            progress(1)
        over = config.time_budget_min is not None and time.time() - t0 > 60 * config.time_budget_min
        if step % config.validate_every == 0 or step == config.steps or over:
            val = float(model.evaluate(vx, vy, batch_size=config.batch_size, verbose=0))
            history.append({"step": step, "train_nll": float(np.mean(losses)), "val_nll": val, "seconds": round(time.time() - t0, 1)})
            losses = []
            best = save_if_best(model, val, best, out_dir)
            write_csv(out_dir / "history.csv", history)
        if over:
            break
    return {"history": history, "split": parts, "best_val_nll": best}


def load_model(model_dir: Path) -> tuple[Any, LuminescenceTrainConfig]:
    """The trained [mean, scale] Keras model and its config."""
    import keras

    from cristae_zoo.luminescence.network import head_class

    head_class()  # registers LaplaceHead for deserialisation

    model_dir = Path(model_dir)
    weights = model_dir / "weights.keras"
    if not weights.is_file():
        raise CristaeZooError(f"{model_dir}: no weights.keras (expected a folder written by `cristae-zoo luminescence train`)")
    config = LuminescenceTrainConfig.from_yaml(model_dir / "config.yaml")
    return keras.models.load_model(weights, compile=False), config
