"""Every system's network and loss build and train under any Keras 3 backend, with the same numbers.

A user with a GPU may have PyTorch (or JAX) and no TensorFlow: the networks (models/unet.py, labelfree/network.py,
pssr/network.py, luminescence/network.py) and losses (SCoP, Laplace NLL, MSE) use keras.ops only. Each backend
runs in its own process (KERAS_BACKEND is read once, at the first `import keras`): this file, run as a script,
builds each system's tiny network, sets the same weights from a seeded numpy stream, evaluates its loss on the
same batch, takes 2 Adam steps and writes the numbers as JSON. The test compares torch (and jax, where installed)
with tensorflow; torch and jax run with `import tensorflow` blocked, as on a machine without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SYSTEMS = ("deepcristae", "labelfree", "pssr", "luminescence")


def _set_weights(model: Any, rng: np.random.Generator) -> None:
    """Deterministic weights, the same under every backend (seeded initialisers draw backend-specific streams).

    Variables are visited in order of their path (layer/variable names, backend-independent). Batch norm starts
    as the identity (γ 1, β 0, mean 0, variance 1); kernels are He-scaled normals; biases small normals."""
    for v in sorted(model.weights, key=lambda w: w.path):
        shape = tuple(v.shape)
        name = v.path.rsplit("/", 1)[-1]
        if name in ("gamma", "moving_variance"):
            value = np.ones(shape)
        elif name in ("beta", "moving_mean"):
            value = np.zeros(shape)
        elif name == "bias":
            value = rng.normal(0.0, 0.01, shape)
        else:
            fan_in = int(np.prod(shape[:-1])) or 1
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        v.assign(value.astype(np.float32))


def _system(name: str, rng: np.random.Generator) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """(model, loss, x, y) of one system: its network builder at a tiny size, its training loss, a fixed batch."""
    import keras

    if name == "deepcristae":
        from cristae_zoo.config import NetworkConfig
        from cristae_zoo.models.losses import scop_loss
        from cristae_zoo.models.unet import build_unet

        model = build_unet(NetworkConfig(depth=2, filters=4), seed=0)
        x = rng.random((2, 32, 32, 1))
        mask = (rng.random((2, 32, 32, 1)) > 0.5).astype(np.float64)
        y = np.concatenate([np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1), mask], axis=-1)  # (GT, mask)
        return model, scop_loss(), x.astype(np.float32), y.astype(np.float32)
    if name == "labelfree":
        from cristae_zoo.labelfree.network import LabelFreeNetworkConfig, build_labelfree_unet

        model = build_labelfree_unet(LabelFreeNetworkConfig(ndim=2, depth=2, filters=4, n_out=2))
        x = rng.random((2, 32, 32, 1))
        y = rng.random((2, 32, 32, 2))
        return model, keras.losses.MeanSquaredError(), x.astype(np.float32), y.astype(np.float32)
    if name == "pssr":
        from cristae_zoo.pssr.network import PSSRNetworkConfig, build_pssr

        model = build_pssr(PSSRNetworkConfig(n_frames=5, filters=4, depth=1, head_filters=4), seed=0)
        x = rng.random((2, 8, 8, 5))
        y = rng.random((2, 32, 32, 1))
        return model, keras.losses.MeanSquaredError(), x.astype(np.float32), y.astype(np.float32)
    if name == "luminescence":
        from cristae_zoo.luminescence.losses import laplace_nll
        from cristae_zoo.luminescence.network import build_care, care_network_config

        model = build_care(care_network_config(ndim=3, depth=1, filters=4))
        x = rng.random((2, 8, 16, 16, 1))
        y = x + 0.1 * rng.standard_normal(x.shape)
        return model, laplace_nll, x.astype(np.float32), y.astype(np.float32)
    raise ValueError(name)


def run_backend() -> dict[str, Any]:
    """Build, evaluate and train every system under the backend this process was started with."""
    import keras
    from keras import ops

    results: dict[str, Any] = {"backend": keras.backend.backend()}
    for name in SYSTEMS:
        rng = np.random.default_rng(7)
        model, loss, x, y = _system(name, rng)
        _set_weights(model, rng)

        def value() -> float:
            return float(ops.convert_to_numpy(ops.mean(loss(ops.convert_to_tensor(y), model(x, training=False)))))

        before = value()
        prediction = ops.convert_to_numpy(model(x, training=False))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, jit_compile=False)
        steps = [float(np.asarray(model.train_on_batch(x, y))) for _ in range(2)]
        results[name] = {
            "loss": before,
            "prediction_sum": float(np.sum(prediction, dtype=np.float64)),
            "train_losses": steps,
            "loss_after": value(),
        }
    results["tensorflow_imported"] = sys.modules.get("tensorflow") is not None
    return results


def _run(backend: str, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / f"{backend}.json"
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if backend != "tensorflow":
        env["CRISTAE_ZOO_BLOCK_TENSORFLOW"] = "1"  # the other backends must train with TensorFlow absent
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(out)], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"{backend}: {proc.stderr[-3000:]}"
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def tensorflow_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run("tensorflow", tmp_path_factory.mktemp("backend"))


def _compare(reference: dict[str, Any], other: dict[str, Any]) -> None:
    for name in SYSTEMS:
        ref, got = reference[name], other[name]
        # Same weights, same batch: the loss agrees to float32 rounding.
        assert got["loss"] == pytest.approx(ref["loss"], rel=1e-5, abs=1e-6), (name, got["loss"], ref["loss"])
        assert got["prediction_sum"] == pytest.approx(ref["prediction_sum"], rel=1e-5, abs=1e-4), name
        # Two Adam steps later the trajectories still agree (the gradients are the same to rounding).
        np.testing.assert_allclose(got["train_losses"], ref["train_losses"], rtol=1e-4, atol=1e-6, err_msg=name)
        # In inference mode, batch norm's moving statistics expose the biases of the convolutions before it, whose
        # gradient is zero up to rounding (batch norm removes them in training): Adam's first steps scale that
        # noise to ±lr, differently per backend. Networks without batch norm agree to ~1e-6 here, labelfree and
        # luminescence to ~3e-5 and ~2e-4.
        assert got["loss_after"] == pytest.approx(ref["loss_after"], rel=1e-3, abs=1e-6), name
        assert np.isfinite(got["loss_after"]) and got["loss_after"] != got["loss"], name  # it trained


def test_every_network_trains_under_torch_with_tensorflows_numbers(tensorflow_results, tmp_path):
    pytest.importorskip("torch")
    torch_results = _run("torch", tmp_path)
    assert torch_results["backend"] == "torch" and tensorflow_results["backend"] == "tensorflow"
    _compare(tensorflow_results, torch_results)
    # It ran with `import tensorflow` failing: a machine with PyTorch and no TensorFlow can build and train.
    assert not torch_results["tensorflow_imported"]


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax not installed (pip install jax)")
def test_every_network_trains_under_jax_with_tensorflows_numbers(tensorflow_results, tmp_path):
    jax_results = _run("jax", tmp_path)
    assert jax_results["backend"] == "jax"
    _compare(tensorflow_results, jax_results)
    assert not jax_results["tensorflow_imported"]


if __name__ == "__main__":  # the child process: `KERAS_BACKEND=torch python tests/test_backends.py OUT.json`
    if os.environ.get("CRISTAE_ZOO_BLOCK_TENSORFLOW") == "1":
        # A None entry makes `import tensorflow` raise ImportError and find_spec report it absent, as on a
        # machine without it (Keras then skips its TF hooks, e.g. in set_random_seed).
        sys.modules["tensorflow"] = None  # type: ignore[assignment]
    Path(sys.argv[1]).write_text(json.dumps(run_backend(), indent=1))
