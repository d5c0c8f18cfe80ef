"""Which device the one trainer runs on: the CPU, or a GPU that Keras' backend can see.

Keras 3 places work on a GPU by itself when its backend sees one (TensorFlow with CUDA, PyTorch with CUDA or Apple
MPS, JAX with CUDA), so `auto` needs nothing but a report of what was found. `gpu` is a promise the user asks us to
keep: when the backend sees no GPU it is refused before anything is read or written — a training that silently runs
on the CPU would take days instead of minutes. `cpu` keeps the work on the CPU even where a GPU is visible (for
comparisons and for bit-reproducible runs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

from cristae_zoo.errors import CristaeZooError

Device = Literal["auto", "cpu", "gpu"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "gpu")


def visible_gpus(backend: str) -> list[str]:
    """The GPUs (accelerators) Keras' `backend` can use in this process, by name; [] where there are none."""
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
        mps = getattr(torch.backends, "mps", None)
        return ["mps"] if mps is not None and mps.is_available() else []
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform != "cpu"]
    return []


def resolve_device(request: str, backend: str | None = None) -> str:
    """`request` (auto | cpu | gpu) → the device the training will run on ("cpu" or the first GPU's name).

    Refuses `gpu` when Keras' backend sees none, in one line that names the backend and how to get one."""
    if request not in DEVICES:
        raise CristaeZooError(f"device {request!r}: expected one of {', '.join(DEVICES)}")
    if backend is None:
        import keras

        backend = keras.backend.backend()
    if request == "cpu":
        return "cpu"
    gpus = visible_gpus(backend)
    if request == "gpu" and not gpus:
        raise CristaeZooError(
            f"device gpu: the Keras backend {backend!r} sees no GPU in this process; install a GPU build of it"
            " (pip install -e '.[gpu]' and a CUDA torch, then KERAS_BACKEND=torch) or train with --device cpu"
        )
    return gpus[0] if gpus else "cpu"


@contextlib.contextmanager
def training_device(device: str) -> Iterator[None]:
    """Keep the variables and ops made inside on `device` (from `resolve_device`); `cpu` pins them to the CPU."""
    if device != "cpu":
        yield  # the backend's default placement is its first GPU
        return
    import keras

    with keras.device("cpu:0"):
        yield
