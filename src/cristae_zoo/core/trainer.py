"""The one training loop, for every system.

    train(config, output, resume=False, overwrite=False, max_steps=None, progress=None) -> TrainingResult

The system supplies the network, the data (batches drawn from a seeded `numpy.random.Generator`), the loss, the
optimizer, the schedule hook and the plan (steps, validation interval); the trainer does the rest, the same way for
all: seeding, fine-tuning from a package (`init_from`), validation every `validate_every` steps with the best
weights kept (saved atomically), CSV history and loss PNG, step and wall-time budgets, checkpoints for `--resume`.
Keras 3 APIs only (no tf.data, no tf.* ops): it runs on the TensorFlow, PyTorch or JAX backend.

The model folder:

    config.yaml          the training config (its `system:` names the system)
    weights.keras        the best weights on validation loss (a whole Keras model)
    history.csv          one row per validation: epoch (validation index), step, loss, val_loss, learning_rate, seconds
    loss_curve.png       training and validation loss
    split.json           the images/movies of each part (systems that split by image)
    checkpoints/         the state at the last validation (weights, optimizer, random state), for --resume

Safety: an existing folder is refused unless `resume` (continue it: the saved config must match, apart from the
budget) or `overwrite` (then only the files listed above are replaced; anything else in the folder stays). A lock
file keeps two trainings out of one folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cristae_zoo.core.model_dir import CHECKPOINTS, CONFIG, HISTORY, SPLIT, WEIGHTS, load_init_source
from cristae_zoo.core.system import System, TrainingConfig, get_system
from cristae_zoo.core.devices import resolve_device, training_device
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.io import atomic_path, atomic_write_text, write_csv

LOSS_CURVE = "loss_curve.png"
STATE = "state.json"
LOCK = ".training.lock"
#: what the trainer writes into a model folder (and what --overwrite may replace); systems add their extras
TRAINER_FILES = (CONFIG, WEIGHTS, HISTORY, LOSS_CURVE, SPLIT, "patches_overview.png", "degradation.yaml")
HISTORY_COLUMNS = ("epoch", "step", "loss", "val_loss", "learning_rate", "seconds")

#: progress(steps done, total steps, message): called after every step; the message is set after validations
Progress = Callable[[int, int, str], None]


@dataclass
class TrainingResult:
    model_dir: Path
    steps: int  # steps done in total (over resumed runs)
    total_steps: int  # steps of the plan
    best_val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: str = "done"  # "done", "time budget", "step budget"
    device: str = "cpu"  # what it trained on: "cpu" or the GPU's name (core/devices.py)

    @property
    def finished(self) -> bool:
        return self.steps >= self.total_steps


def train(
    config: TrainingConfig,
    output: Path | str | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    max_steps: int | None = None,
    progress: Progress | None = None,
    device: str = "auto",
) -> TrainingResult:
    """Train `config` into the model folder `output` (default: `config.output_dir`).

    `resume`: continue from the folder's checkpoints (refused if there are none, or if the config differs from the
    saved one in anything but the budget: steps/epochs, max_minutes). `overwrite`: replace the files a training
    writes in an existing folder. `max_steps`: stop this run after that many steps (resumable, like the wall-time
    budget `config.max_minutes`, which also counts per run). A run that stops early validates and checkpoints at
    the step it stops at; `TrainingResult.stopped` says why. `device`: auto (a GPU when Keras' backend sees one,
    else the CPU) | cpu | gpu (refused, before anything is read or written, when the backend sees no GPU)."""
    import keras

    resolved = resolve_device(device)

    system = get_system(config.system)
    out = Path(output) if output is not None else config.output_dir
    if out is None:
        raise CristaeZooError("no model folder to write: give --output (or output_dir in the config)")
    out = Path(out)
    config = config.model_copy(update={"output_dir": out})
    if resume and overwrite:
        raise CristaeZooError("--resume and --overwrite exclude each other: continue the training or replace it")
    state = _check_folder(out, config, resume=resume, overwrite=overwrite)

    # Everything the user can get wrong in the data is checked before anything is written.
    keras.utils.set_random_seed(config.seed)
    _deterministic_ops()
    data = system.training_data(config)
    plan = system.plan(config, data)
    if max_steps is not None and max_steps < 1:
        raise CristaeZooError(f"max_steps {max_steps}: must be at least 1")
    source = None
    if config.init_from and state is None:
        source = load_init_source(config.init_from)
        if source.system.name != system.name:
            raise CristaeZooError(
                f"init_from {config.init_from}: a {source.system.name} network, but this training is {system.name};"
                f" fine-tuning needs a package of the same system"
            )

    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with training_device(resolved):
            result = _run(system, config, data, plan, source, state, out, overwrite, max_steps, progress)
        result.device = resolved
        return result
    except OSError as err:  # a full disk, a read-only folder, …: one line, not a traceback
        raise CristaeZooError(f"{err.filename or out}: cannot write the model folder ({err.strerror or err})") from None
    finally:
        # A folder this run created and that holds no checkpoint yet is of no use to anyone (a failure, Ctrl-C or a
        # signal before the first validation): remove it, so that a rerun is not refused. A folder with a
        # checkpoint stays: --resume continues it.
        if created and out.exists() and not (out / CHECKPOINTS / STATE).is_file():
            shutil.rmtree(out, ignore_errors=True)


def _run(system: System[Any], config: TrainingConfig, data: Any, plan: Any, source: Any, state: dict[str, Any] | None,
         out: Path, overwrite: bool, max_steps: int | None, progress: Progress | None) -> TrainingResult:  # fmt: skip
    with _lock(out):
        if overwrite and state is None:
            _remove_trainer_files(out)
        model = system.build_keras(config)
        if source is not None:
            system.init_weights(config, model, source.keras_model)
        optimizer = system.optimizer(config)
        model.compile(optimizer=optimizer, loss=system.loss(config))
        rng = np.random.default_rng(config.seed)  # every training draw comes from here (resumable)
        if state is None:
            config.to_yaml(out / CONFIG)
            if data.split is not None:
                atomic_write_text(out / SPLIT, json.dumps(data.split, indent=1))
            data.write_extras(out)
            step, best, history, elapsed = 0, float("inf"), [], 0.0
        else:
            _restore(out / CHECKPOINTS, state, model, optimizer, rng)
            step, best, history, elapsed = state["step"], state["best_val_loss"], state["history"], state["seconds"]
            config.to_yaml(out / CONFIG)  # the budget may have changed
        return _loop(system, config, data, plan, model, optimizer, rng, out, step, best, history, elapsed,
                     max_steps, progress)  # fmt: skip


def _loop(system: System[Any], config: TrainingConfig, data: Any, plan: Any, model: Any, optimizer: Any,
          rng: np.random.Generator, out: Path, step: int, best: float, history: list[dict[str, float]],
          elapsed: float, max_steps: int | None, progress: Progress | None) -> TrainingResult:  # fmt: skip
    hook = system.schedule(config)
    validation = data.validation_batches()
    start_step, t0, losses, stopped = step, time.monotonic(), [], "done"
    budget_s = 60.0 * config.max_minutes if config.max_minutes else None
    if progress:
        progress(step, plan.steps, "resumed" if step else "")
    while step < plan.steps:
        if hook is not None:
            _set_hyperparameters(optimizer, hook(step, plan.steps))
        x, y = data.train_batch(rng)
        losses.append(_scalar(model.train_on_batch(x, y)))
        step += 1
        run_seconds = time.monotonic() - t0
        seconds = elapsed + run_seconds
        # the wall-time budget is per run: a resumed run gets max_minutes again (a job slot, then the next one)
        if budget_s is not None and run_seconds >= budget_s and step < plan.steps:
            stopped = "time budget"
        elif max_steps is not None and step - start_step >= max_steps and step < plan.steps:
            stopped = "step budget"
        message = ""
        if step % plan.validate_every == 0 or step == plan.steps or stopped != "done":
            val = _validate(model, validation, config.batch_size)
            history.append({"epoch": len(history), "step": step, "loss": float(np.mean(losses)), "val_loss": val,
                            "learning_rate": _scalar(optimizer.learning_rate), "seconds": round(seconds, 2)})  # fmt: skip
            losses = []
            if val < best:  # (a NaN loss never counts as better)
                best = val
                with atomic_path(out / WEIGHTS) as tmp:
                    model.save(tmp)
            write_csv(out / HISTORY, history, HISTORY_COLUMNS)
            _checkpoint(out / CHECKPOINTS, config, model, optimizer, rng, step, best, history, seconds)
            message = f"loss {history[-1]['loss']:.4g}  val {val:.4g}  best {best:.4g}"
        if progress:
            progress(step, plan.steps, message)
        if stopped != "done":
            break
    if not (out / WEIGHTS).is_file():  # every validation loss was NaN: keep the last weights, and say so
        raise CristaeZooError(f"{out}: the validation loss was never finite (NaN/Inf); no weights were kept")
    _plot(out, system.name)
    return TrainingResult(out, step, plan.steps, best, history, stopped)


# ------------------------------------------------------------------------------------------- the folder


def _check_folder(out: Path, config: TrainingConfig, *, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """The checkpoint state to resume from (None for a new training), or a one-line refusal."""
    state_file = out / CHECKPOINTS / STATE
    if resume:
        if not state_file.is_file():
            raise CristaeZooError(
                f"{out}: nothing to resume (no {CHECKPOINTS}/{STATE}: the folder holds no interrupted training);"
                " train without --resume into a new folder, or with --overwrite to replace it"
            )
        try:
            state = json.loads(state_file.read_text())
        except (ValueError, OSError) as err:
            raise CristaeZooError(f"{state_file}: unreadable checkpoint state ({err})") from None
        changed = _changed_keys(state.get("config") or {}, config)
        if changed:
            raise CristaeZooError(
                f"{out}: cannot resume with a different config ({', '.join(changed)} differ from the saved"
                f" {CONFIG}); only the budget (steps, epochs, max_minutes) may change"
            )
        return state
    if out.exists() and not out.is_dir():
        raise CristaeZooError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        what = "a trained model" if (out / WEIGHTS).exists() or state_file.exists() else "files"
        raise CristaeZooError(
            f"{out}: already holds {what}; use --resume to continue it, --overwrite to replace what a training writes"
            " there, or choose another --output"
        )
    return None


def _changed_keys(saved: Mapping[str, Any], config: TrainingConfig) -> list[str]:
    now = config.model_dump(mode="json")
    keys = sorted((set(saved) | set(now)) - set(config.RESUMABLE_CHANGES))

    def norm(key: str, value: Any) -> Any:  # the same data folder, however it was written
        return str(Path(value).resolve()) if key == "data_dir" and value is not None else value

    return [k for k in keys if norm(k, saved.get(k)) != norm(k, now.get(k))]


def _remove_trainer_files(out: Path) -> None:
    """--overwrite: remove what an earlier training wrote (never anything else in the folder)."""
    for name in TRAINER_FILES:
        if (out / name).is_file():
            (out / name).unlink()
    if (out / CHECKPOINTS).is_dir():
        shutil.rmtree(out / CHECKPOINTS)


class _lock:
    """An exclusive lock file in the model folder: two trainings cannot write into one folder. A lock left by a
    process that no longer runs is taken over."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK

    def __enter__(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (ValueError, OSError):
                    pid = 0
                if pid and _alive(pid):
                    raise CristaeZooError(
                        f"{self.path.parent}: another training (process {pid}) is writing into this folder"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return
        raise CristaeZooError(f"{self.path}: cannot take the training lock")

    def __exit__(self, *exc: Any) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -------------------------------------------------------------------------------------- checkpoints


def _checkpoint(folder: Path, config: TrainingConfig, model: Any, optimizer: Any, rng: np.random.Generator,
                step: int, best: float, history: list[dict[str, float]], seconds: float) -> None:  # fmt: skip
    """Weights, optimizer variables and random state after `step`; state.json is replaced last, atomically, so it
    always names complete files."""
    folder.mkdir(exist_ok=True)
    weights, opt = f"weights_{step:09d}.weights.h5", f"optimizer_{step:09d}.npz"
    model.save_weights(str(folder / weights))
    variables = _optimizer_variables(optimizer)
    with atomic_path(folder / opt) as tmp, open(tmp, "wb") as f:
        np.savez(f, *[_numpy(v) for v in variables])
    state = {"step": step, "best_val_loss": best, "history": history, "seconds": seconds, "weights": weights,
             "optimizer": opt, "n_optimizer_variables": len(variables), "rng": rng.bit_generator.state,
             "config": config.model_dump(mode="json")}  # fmt: skip
    atomic_write_text(folder / STATE, json.dumps(state))
    for old in folder.iterdir():  # earlier checkpoints
        if old.name not in (STATE, weights, opt):
            old.unlink()


def _restore(folder: Path, state: dict[str, Any], model: Any, optimizer: Any, rng: np.random.Generator) -> None:
    try:
        optimizer.build(model.trainable_variables)  # built first: the weights file holds its variables too
        model.load_weights(str(folder / state["weights"]))
        variables = _optimizer_variables(optimizer)
        with np.load(folder / state["optimizer"]) as saved:
            values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    except (OSError, KeyError, ValueError) as err:
        raise CristaeZooError(f"{folder}: the checkpoint cannot be loaded ({type(err).__name__}: {str(err)[:200]})") from None
    if len(values) != len(variables) or any(np.shape(v) != tuple(var.shape) for v, var in zip(values, variables)):
        raise CristaeZooError(f"{folder}: the checkpoint's optimizer state does not match this network")
    for var, value in zip(variables, values):
        var.assign(value)
    rng.bit_generator.state = state["rng"]


def _optimizer_variables(optimizer: Any) -> list[Any]:
    variables = list(optimizer.variables)
    extra = getattr(optimizer, "beta_1", None)  # a scheduled β1 (PSSR) is a variable outside optimizer.variables
    if extra is not None and hasattr(extra, "assign") and all(extra is not v for v in variables):
        variables.append(extra)
    return variables


# ------------------------------------------------------------------------------------------------ helpers


def _deterministic_ops() -> None:
    """Same seed, same result: op determinism where the backend needs switching it on."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif keras.backend.backend() == "torch":
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)


def _set_hyperparameters(optimizer: Any, values: Mapping[str, float]) -> None:
    for name, value in values.items():
        target = getattr(optimizer, name, None)
        if target is None or not hasattr(target, "assign"):
            raise CristaeZooError(f"schedule: the optimizer has no variable {name!r} to set")
        target.assign(value)


def _validate(model: Any, batches: list[tuple[np.ndarray, np.ndarray]], batch_size: int) -> float:
    total, n = 0.0, 0
    for x, y in batches:
        total += len(x) * _scalar(model.evaluate(x, y, batch_size=batch_size, verbose=0))
        n += len(x)
    return total / max(n, 1)


def _numpy(value: Any) -> np.ndarray:
    from keras import ops

    return np.asarray(ops.convert_to_numpy(value))


def _scalar(value: Any) -> float:
    if isinstance(value, (list, tuple)):
        value = value[0]
    if isinstance(value, dict):
        value = value.get("loss", next(iter(value.values())))
    return float(_numpy(value).ravel()[0])


def _plot(out: Path, title: str) -> None:
    from cristae_zoo.plots import plot_loss_curve

    plot_loss_curve(out / HISTORY, out / LOSS_CURVE, title=f"{title}: loss")
