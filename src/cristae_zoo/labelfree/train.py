"""Training: MSE, Adam (lr 1e-3), random patches; splits 75/25 train/test and 90/10 train/validation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from cristae_zoo.config import YamlModel
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.io import atomic_path, atomic_write_text, write_csv
from cristae_zoo.labelfree import STRUCTURES
from cristae_zoo.labelfree.data import Pair, list_pairs, load_pair
from cristae_zoo.labelfree.network import LabelFreeNetworkConfig, build_labelfree_unet


class LabelFreeTrainConfig(YamlModel):
    data_dir: str
    structures: list[str] = Field(default_factory=lambda: list(STRUCTURES), min_length=1)
    network: LabelFreeNetworkConfig = Field(default_factory=LabelFreeNetworkConfig)
    patch_size: list[int] = Field(default_factory=lambda: [64, 64], description="(Y, X) or (Z, Y, X); paper 3D: 32×64×64")
    batch_size: int = Field(8, ge=1)
    steps: int = Field(300, ge=1)
    validate_every: int = Field(50, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    test_fraction: float = Field(0.25, ge=0, lt=1)
    validation_fraction: float = Field(0.10, ge=0, lt=1)
    seed: int = 0


def split(names: list[str], test_fraction: float, validation_fraction: float, seed: int) -> dict[str, list[str]]:
    """75/25 train/test, then 90/10 train/validation, seeded (at least one image each where possible)."""
    order = list(np.random.default_rng(seed).permutation(len(names)))
    n_test = max(1, round(test_fraction * len(names))) if test_fraction > 0 and len(names) > 2 else 0
    test, rest = order[:n_test], order[n_test:]
    n_val = max(1, round(validation_fraction * len(rest))) if validation_fraction > 0 and len(rest) > 1 else 0
    val, train = rest[:n_val], rest[n_val:]
    return {k: sorted(names[i] for i in v) for k, v in (("train", train), ("validation", val), ("test", test))}


def random_patches(pairs: list[Pair], size: tuple[int, ...], n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n random patches (channels-last): x (n, *size, 1), y (n, *size, C)."""
    xs, ys = [], []
    for _ in range(n):
        p = pairs[int(rng.integers(len(pairs)))]
        starts = [int(rng.integers(0, s - k + 1)) for s, k in zip(p.tl.shape, size)]
        sl = tuple(slice(a, a + k) for a, k in zip(starts, size))
        xs.append(p.tl[sl][..., None])
        ys.append(np.moveaxis(p.targets[(slice(None),) + sl], 0, -1))
    return np.stack(xs), np.stack(ys)


def train(config: LabelFreeTrainConfig, out_dir: Path, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train; write config.yaml, split.json, weights.keras (best on validation MSE), history.csv in `out_dir`."""
    import keras

    net = config.network.model_copy(update={"n_out": len(config.structures)})
    config = config.model_copy(update={"network": net})
    size = tuple(config.patch_size)
    if len(size) != net.ndim:
        raise CristaeZooError(f"patch_size {list(size)} has {len(size)} axes, the network is {net.ndim}D")
    if any(k % net.divisor for k in size):
        raise CristaeZooError(f"patch_size {list(size)}: every size must be divisible by {net.divisor} (2**depth)")
    data_dir = Path(config.data_dir)
    names = list_pairs(data_dir, config.structures)
    parts = split(names, config.test_fraction, config.validation_fraction, config.seed)
    if not parts["train"]:
        raise CristaeZooError(f"{data_dir}: {len(names)} pair(s) leave no training image after the splits")
    load = {k: [load_pair(data_dir, n, config.structures, net.ndim) for n in v] for k, v in parts.items()}
    for p in load["train"] + load["validation"]:
        if any(s < k for s, k in zip(p.tl.shape, size)):
            raise CristaeZooError(f"{data_dir / 'tl' / p.name}: image {p.tl.shape} smaller than patch_size {list(size)}")

    out_dir, rng = start_run(config, out_dir, parts)
    model = build_labelfree_unet(net)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
    val_pairs = load["validation"] or load["train"]
    vx, vy = random_patches(val_pairs, size, 4 * config.batch_size, np.random.default_rng(config.seed + 1))
    history, best, t0 = [], np.inf, time.time()
    losses: list[float] = []
    for step in range(1, config.steps + 1):
        x, y = random_patches(load["train"], size, config.batch_size, rng)
        losses.append(float(model.train_on_batch(x, y)))
        if progress:
            progress(1)
        if step % config.validate_every == 0 or step == config.steps:
            val = float(model.evaluate(vx, vy, batch_size=config.batch_size, verbose=0))
            history.append({"step": step, "train_mse": float(np.mean(losses)), "val_mse": val, "seconds": time.time() - t0})
            losses = []
            best = save_if_best(model, val, best, out_dir)
    write_csv(out_dir / "history.csv", history)
    return {"history": history, "split": parts, "best_val_mse": best}


def save_if_best(model: Any, value: float, best: float, out_dir: Path) -> float:
    """Keep the weights with the lowest validation loss: save them (atomically) when `value` beats `best`."""
    if not value < best:  # (a NaN loss never counts as better)
        return best
    with atomic_path(Path(out_dir) / "weights.keras") as tmp:
        model.save(tmp)
    return value


def start_run(config: Any, out_dir: Path, parts: dict[str, list[str]]) -> tuple[Path, np.random.Generator]:
    """The start of a training: the model folder with its config.yaml and split.json, Keras and NumPy seeded."""
    import keras

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.to_yaml(out_dir / "config.yaml")
    atomic_write_text(out_dir / "split.json", json.dumps(parts, indent=1))
    keras.utils.set_random_seed(config.seed)
    return out_dir, np.random.default_rng(config.seed)


def held_out_names(model_dir: Path, names: list[str] | None = None) -> list[str]:
    """`names`, or the test split the training wrote beside the model."""
    if names is None:
        names = json.loads((Path(model_dir) / "split.json").read_text())["test"]
    if not names:
        raise CristaeZooError(f"{model_dir}: the split has no test image")
    return names


def load_model(model_dir: Path) -> tuple[Any, LabelFreeTrainConfig]:
    import keras

    model_dir = Path(model_dir)
    weights = model_dir / "weights.keras"
    if not weights.is_file():
        raise CristaeZooError(f"{model_dir}: no weights.keras (expected a folder written by `cristae-zoo labelfree train`)")
    config = LabelFreeTrainConfig.from_yaml(model_dir / "config.yaml")
    return keras.models.load_model(weights, compile=False), config
