"""Training PSSR-SF / PSSR-MF: MSE, Adam under the one-cycle policy, best model kept on validation loss.

Training pairs are drawn on the fly from simulated movies: each draw crappifies a random 5- (or 1-) frame window
with fresh noise, normalises every LR frame to [0, 1] (min–max over the whole frame, as the package's
preprocessing does), and crops a random LR patch with its 4× larger HR patch of the middle frame, in a random
dihedral orientation (the paper's augmentation).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from pydantic import Field

from cristae_zoo.config import YamlModel
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.io import atomic_write_text, write_csv
from cristae_zoo.labelfree.train import save_if_best
from cristae_zoo.pssr.crappify import CrappifierConfig, crappify, normalize
from cristae_zoo.pssr.network import PSSRNetworkConfig, build_pssr


class PSSRTrainConfig(YamlModel):
    data_dir: str
    network: PSSRNetworkConfig = Field(default_factory=PSSRNetworkConfig)
    crappifier: CrappifierConfig = Field(default_factory=CrappifierConfig)
    lr_patch: int = Field(32, ge=8, description="LR patch size (HR patch = scale × this)")
    batch_size: int = Field(8, ge=1)
    steps: int = Field(1000, ge=1)
    validate_every: int = Field(50, ge=1)
    max_learning_rate: float = Field(1e-3, gt=0, description="one-cycle peak")
    div_factor: float = Field(25.0, gt=1, description="start at max / div_factor")
    warmup_fraction: float = Field(0.3, gt=0, lt=1)
    momentum: tuple[float, float] = Field((0.95, 0.85), description="Adam β1 at the ends / at the peak of the cycle")
    n_validation_movies: int = Field(2, ge=1)
    n_test_movies: int = Field(4, ge=1)
    init_from: str | None = Field(None, description="model folder to start from (a restart of the one-cycle policy)")
    seed: int = 0


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


def split_movies(names: list[str], n_val: int, n_test: int) -> dict[str, list[str]]:
    """The last `n_test` movies are held out for testing, the `n_val` before them for validation (sorted names)."""
    names = sorted(names)
    if len(names) < n_val + n_test + 1:
        raise CristaeZooError(f"{len(names)} movie(s): need at least {n_val + n_test + 1} (train + {n_val} validation + {n_test} test)")
    return {"train": names[: -n_val - n_test], "validation": names[-n_val - n_test : -n_test], "test": names[-n_test:]}


def window_indices(t: int, n_frames: int, length: int) -> list[int]:
    """Frames t-k … t+k (k = n_frames // 2), mirrored at the movie's ends (t-1 ↔ t+1 about frame 0, likewise at the end)."""
    if length < n_frames:
        raise CristaeZooError(f"movie of {length} frame(s): the multi-frame model needs at least {n_frames}")
    k = n_frames // 2
    out = []
    for i in range(t - k, t + k + 1):
        if i < 0:
            i = -i
        if i > length - 1:
            i = 2 * (length - 1) - i
        out.append(i)
    return out


def init_from(model: Any, source: Any, n_frames: int) -> None:
    """Copy every weight of `source` into `model` by layer name (in place).

    A single-frame stem kernel (3, 3, 1, F) goes to the middle frame of a multi-frame stem (3, 3, n, F), the other
    frames start at zero: the multi-frame network starts as exactly the single-frame one and can only learn to use
    the neighbouring frames from there.
    """
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        try:
            src = source.get_layer(layer.name).get_weights()
        except ValueError:
            raise CristaeZooError(f"init_from: the source model has no layer {layer.name!r}") from None
        if layer.name == "stem" and src[0].shape[2] == 1 and n_frames > 1:
            kernel = np.zeros_like(weights[0])
            kernel[:, :, n_frames // 2] = src[0][:, :, 0]
            src = [kernel, src[1]]
        if [w.shape for w in src] != [w.shape for w in weights]:
            raise CristaeZooError(f"init_from: layer {layer.name!r} has shapes {[w.shape for w in src]}, expected {[w.shape for w in weights]}")
        layer.set_weights(src)


def load_hr_movie(path: Path) -> np.ndarray:
    movie = np.asarray(tifffile.imread(path), np.float32)
    if movie.ndim != 3:
        raise CristaeZooError(f"{path}: expected a (T, Y, X) time-lapse, got shape {movie.shape}")
    return normalize(movie)


def normalize_frames(lr: np.ndarray) -> np.ndarray:
    """Min–max per frame over (y, x): the package's `scale_range` (0th/100th percentile, axes y, x)."""
    return np.stack([normalize(f) for f in lr.reshape(-1, *lr.shape[-2:])]).reshape(lr.shape)


def draw_batch(movies: list[np.ndarray], config: PSSRTrainConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """x (B, p, p, n_frames) LR, y (B, s·p, s·p, 1) HR middle frames."""
    n, s, p = config.network.n_frames, config.crappifier.scale, config.lr_patch
    xs, ys = [], []
    for _ in range(config.batch_size):
        movie = movies[int(rng.integers(len(movies)))]
        t = int(rng.integers(movie.shape[0]))
        frames = movie[window_indices(t, n, movie.shape[0])]
        lr = normalize_frames(crappify(frames, config.crappifier, rng, normalized=True))
        y0, x0 = (int(rng.integers(0, d // s - p + 1)) for d in movie.shape[1:])
        xp = np.moveaxis(lr[:, y0 : y0 + p, x0 : x0 + p], 0, -1)
        yp = movie[t, s * y0 : s * (y0 + p), s * x0 : s * (x0 + p)][..., None]
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        xp, yp = np.rot90(xp, k), np.rot90(yp, k)
        if flip:
            xp, yp = xp[:, ::-1], yp[:, ::-1]
        xs.append(xp)
        ys.append(yp)
    return np.ascontiguousarray(np.stack(xs), np.float32), np.ascontiguousarray(np.stack(ys), np.float32)


def train(config: PSSRTrainConfig, out_dir: Path, progress: Callable[[int, str], None] | None = None) -> dict[str, Any]:
    """Write config.yaml, split.json, weights.keras (best validation MSE), history.csv into `out_dir`."""
    import keras

    data = Path(config.data_dir)
    names = sorted(p.name for p in (data / "hr").glob("*.tif"))
    if not names:
        raise CristaeZooError(f"{data}: no hr/*.tif movies (write them with `cristae-zoo pssr simulate`)")
    parts = split_movies(names, config.n_validation_movies, config.n_test_movies)
    train_movies = [load_hr_movie(data / "hr" / n) for n in parts["train"]]
    val_movies = [load_hr_movie(data / "hr" / n) for n in parts["validation"]]
    need = config.lr_patch * config.crappifier.scale
    if any(min(m.shape[1:]) < need for m in train_movies + val_movies):
        raise CristaeZooError(f"{data}: frames smaller than the HR patch {need} px")
    if config.lr_patch % config.network.divisor:
        raise CristaeZooError(f"lr_patch {config.lr_patch}: must be divisible by {config.network.divisor} (2**depth)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.to_yaml(out_dir / "config.yaml")
    atomic_write_text(out_dir / "split.json", json.dumps(parts, indent=1))

    model = build_pssr(config.network, config.seed)
    if config.init_from:
        source, _ = load_model(Path(config.init_from))
        init_from(model, source, config.network.n_frames)
    optimizer = keras.optimizers.Adam(config.max_learning_rate)
    # a variable, not a float: the compiled train step reads it on every call, so β1 can follow the cycle
    optimizer.beta_1 = keras.Variable(config.momentum[0], trainable=False, name="beta_1", dtype="float32")
    model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.default_rng(config.seed)
    val_rng = np.random.default_rng(config.seed + 1)  # a fixed validation set: same crops and noise every time
    val = [draw_batch(val_movies, config, val_rng) for _ in range(4)]
    history, best, losses, t0 = [], math.inf, [], time.time()
    for step in range(config.steps):
        lr, beta1 = one_cycle(step, config.steps, config.max_learning_rate, config.div_factor, config.warmup_fraction, config.momentum)
        optimizer.learning_rate.assign(lr)
        optimizer.beta_1.assign(beta1)
        x, y = draw_batch(train_movies, config, rng)
        losses.append(float(model.train_on_batch(x, y)))
        info = ""
        if (step + 1) % config.validate_every == 0 or step + 1 == config.steps:
            v = float(np.mean([model.evaluate(vx, vy, verbose=0) for vx, vy in val]))
            history.append({"step": step + 1, "learning_rate": lr, "beta1": beta1, "train_mse": float(np.mean(losses)),
                            "val_mse": v, "seconds": round(time.time() - t0, 1)})  # fmt: skip
            losses = []
            best = save_if_best(model, v, best, out_dir)
            info = f"val {v:.5f} (best {best:.5f})"
        if progress:
            progress(1, info)
    write_csv(out_dir / "history.csv", history)
    return {"history": history, "split": parts, "best_val_mse": best}


def load_model(model_dir: Path) -> tuple[Any, PSSRTrainConfig]:
    import keras

    import cristae_zoo.pssr.network  # noqa: F401  (registers the custom layers)

    weights = Path(model_dir) / "weights.keras"
    if not weights.is_file():
        raise CristaeZooError(f"{model_dir}: no weights.keras (expected a folder written by `cristae-zoo pssr train`)")
    config = PSSRTrainConfig.from_yaml(Path(model_dir) / "config.yaml")
    try:
        saved = keras.models.load_model(weights, compile=False)
    except Exception as err:  # keras raises ValueError, OSError, zipfile errors, ...
        raise CristaeZooError(f"{weights}: cannot load as a Keras model ({type(err).__name__}: {err})") from None
    # Rebuild with the current code and copy the weights by layer name: weight-free layers (e.g. the bilinear
    # upsampling) may have been reimplemented since the model was saved.
    model = build_pssr(config.network, config.seed)
    for layer in model.layers:
        if layer.get_weights():
            try:
                layer.set_weights(saved.get_layer(layer.name).get_weights())
            except ValueError as err:
                raise CristaeZooError(f"{weights}: layer {layer.name!r} does not match {config.network!r} ({err})") from None
    return model, config
