"""Training: patches → Adam on the chosen loss → the best model on validation loss, in a model folder.

MODEL_DIR/config.yaml          the TrainConfig (with network and patch settings)
MODEL_DIR/degradation.yaml     how the training data was made (copied from the data folder)
MODEL_DIR/weights.keras        best model on validation loss
MODEL_DIR/history.csv          per-epoch losses; MODEL_DIR/loss_curve.png
MODEL_DIR/patches_overview.png where the patches were drawn
MODEL_DIR/checkpoints/         last epoch's model + state, for --resume (not for sharing)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cristae_zoo.config import DegradationConfig, TrainConfig
from cristae_zoo.data.patches import PatchSet, augment, sample_patch_set
from cristae_zoo.data.prepare import load_split, training_triplets
from cristae_zoo.errors import CristaeZooError

WEIGHTS = "weights.keras"


def build_patch_set(config: TrainConfig, progress: Callable[[int], None] | None = None) -> tuple[PatchSet, list]:
    """Load the training split, normalise, augment and sample patches as `config.patches` says."""
    data_dir = Path(config.data_dir)
    degradation_file = data_dir / "degradation.yaml"
    degradation = DegradationConfig.from_yaml(degradation_file) if degradation_file.is_file() else DegradationConfig()
    pairs = load_split(data_dir, "train", min_size=config.patches.patch_size)
    triplets = training_triplets(pairs, degradation, config.patches)
    augmented = augment(triplets, degradation, np.random.default_rng(config.patches.seed))
    patches, centres = sample_patch_set(augmented, config.patches, progress)
    if len(patches.x_train) == 0:
        raise CristaeZooError(f"{data_dir}: no training patches could be sampled")
    return patches, list(zip(augmented[:4], centres[:4]))


def _stack_targets(y: np.ndarray, m: np.ndarray) -> np.ndarray:
    return np.stack([y, m], axis=-1).astype(np.float32)


def train(
    config: TrainConfig,
    resume: bool = False,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    on_patches: Callable[[int], None] | None = None,
) -> Path:
    """Train and write the model folder; returns its path. `on_epoch(epoch, logs)` reports progress."""
    import keras
    import tensorflow as tf

    from cristae_zoo.models.losses import get_loss
    from cristae_zoo.models.unet import build_unet
    from cristae_zoo.plots import plot_loss_curve, plot_patch_overview

    out = Path(config.output_dir)
    ckpt_dir = out / "checkpoints"
    state_file = ckpt_dir / "state.json"
    if out.exists() and any(out.iterdir()) and not resume:
        if (out / WEIGHTS).exists() or state_file.exists():
            raise CristaeZooError(f"{out}: already holds a model; use --resume to continue it or choose another --output")
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir.mkdir(exist_ok=True)
    config.to_yaml(out / "config.yaml")
    degradation_file = Path(config.data_dir) / "degradation.yaml"
    if degradation_file.is_file():
        shutil.copyfile(degradation_file, out / "degradation.yaml")

    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    patches, overview = build_patch_set(config, on_patches)
    plot_patch_overview(overview, config.patches.patch_size, out / "patches_overview.png")

    loss = get_loss(config.loss, config.gamma_mito, config.gamma_background)
    initial_epoch = 0
    if resume and state_file.exists():
        # The checkpoint holds the optimizer's moments too, so training continues where it stopped.
        state = json.loads(state_file.read_text())
        initial_epoch, best = state["epoch"] + 1, state["best_val_loss"]
        model = keras.models.load_model(ckpt_dir / "last.keras", custom_objects={loss.__name__: loss})
    else:
        init_seed = config.init_seed if config.init_seed is not None else config.seed
        model = build_unet(config.network, seed=init_seed)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate), loss=loss)
        best = float("inf")

    x_train = patches.x_train[..., None]
    y_train = _stack_targets(patches.y_train, patches.m_train)
    val = (patches.x_val[..., None], _stack_targets(patches.y_val, patches.m_val))
    history_file = out / "history.csv"

    class Bookkeeping(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            nonlocal best
            logs = dict(logs or {})
            if logs["val_loss"] < best:
                best = logs["val_loss"]
                _atomic_save(self.model, out / WEIGHTS)
            _atomic_save(self.model, ckpt_dir / "last.keras")
            state_file.write_text(json.dumps({"epoch": epoch, "best_val_loss": best}))
            if on_epoch:
                on_epoch(epoch, logs)

    # A repeated, seeded stream: an epoch is `steps_per_epoch` batches, whether or not that is one pass.
    steps = config.steps_per_epoch or int(np.ceil(len(x_train) / config.batch_size))
    stream = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train))
        .shuffle(len(x_train), seed=config.seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(config.batch_size)
    )
    model.fit(
        stream,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps,
        validation_data=val,
        validation_batch_size=config.batch_size,
        shuffle=False,  # the stream above is already shuffled
        verbose=0,
        callbacks=[keras.callbacks.CSVLogger(str(history_file), append=initial_epoch > 0), Bookkeeping()],
    )
    plot_loss_curve(history_file, out / "loss_curve.png", title=f"{config.loss} loss")
    return out


def _atomic_save(model, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def load_model(model_dir: Path):
    """The best Keras model of a model folder, and its TrainConfig."""
    import keras

    model_dir = Path(model_dir)
    weights = model_dir / WEIGHTS
    if not weights.is_file():
        raise CristaeZooError(f"{model_dir}: no {WEIGHTS}; is this a model folder written by `cristae-zoo train`?")
    try:
        model = keras.models.load_model(weights, compile=False)
    except Exception as err:
        raise CristaeZooError(f"{weights}: cannot load Keras model ({type(err).__name__}: {str(err)[:200]})") from None
    return model, TrainConfig.from_yaml(model_dir / "config.yaml")
