"""Run a package's weights in the old runtimes the clients ship, and compare with its test output.

Standalone (no cristae_zoo import): run it with the interpreter of a side environment.

- TensorFlow 2.7 (deepImageJ/JDLL's default engine), loading the SavedModel session-style as TF-Java does
  (`tf.compat.v1.saved_model.loader.load` with tag `serve`, then the `serving_default` signature's tensors):
      python3.9 -m venv tf27 && tf27/bin/pip install tensorflow-cpu==2.7.0 "numpy<1.22" "protobuf<3.20"
      tf27/bin/python benchmarks/check_old_runtimes.py tf model_zoo/*/
- onnxruntime 1.12 (JDLL's opset-17 engine):
      python3.10 -m venv ort && ort/bin/pip install onnxruntime==1.12.1 "numpy<1.24" pyyaml
      ort/bin/python benchmarks/check_old_runtimes.py onnx model_zoo/*/
- torch 2.7 (ilastik's pin), `torch.jit.load` of the TorchScript weights:
      python3.10 -m venv t27 && t27/bin/pip install torch==2.7.1 "numpy<2" --index-url https://download.pytorch.org/whl/cpu
      t27/bin/python benchmarks/check_old_runtimes.py torchscript model_zoo/*/

The test input is normalised as the rdf's preprocessing says (scale_range / zero_mean_unit_variance per sample and
channel over the axes given); prints one line per package: runtime version, max |Δ| to test_output.npy.
"""

from __future__ import annotations

import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import yaml


def normalised_test_input(folder: Path) -> np.ndarray:
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    inp = rdf["inputs"][0]
    x = np.load(folder / inp["test_tensor"]["source"]).astype(np.float32)
    ids = [a.get("id", a["type"]) for a in inp["axes"]]
    for step in inp.get("preprocessing", []):
        kw = step.get("kwargs", {})
        axes = tuple(ids.index(a) for a in kw.get("axes", []))
        if step["id"] == "scale_range":
            lo = np.percentile(x, kw.get("min_percentile", 0.0), axis=axes, keepdims=True)
            hi = np.percentile(x, kw.get("max_percentile", 100.0), axis=axes, keepdims=True)
            x = (x - lo) / (hi - lo + kw.get("eps", 1e-6))
        elif step["id"] == "zero_mean_unit_variance":
            x = (x - x.mean(axis=axes, keepdims=True)) / (x.std(axis=axes, keepdims=True) + kw.get("eps", 1e-6))
    return x.astype(np.float32)


def run_tf(folder: Path, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(folder / "tf_saved_model.zip") as zf:
            zf.extractall(tmp)
        graph = tf.Graph()
        with tf.compat.v1.Session(graph=graph) as sess:
            meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], tmp)
            sig = meta.signature_def["serving_default"]
            return sess.run(sig.outputs["output"].name, {sig.inputs["input"].name: x})


def run_onnx(folder: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "weights.onnx"), providers=["CPUExecutionProvider"])
    (y,) = session.run(["output"], {"input": x})
    return y


def run_torchscript(folder: Path, x: np.ndarray) -> np.ndarray:
    import torch

    model = torch.jit.load(str(folder / "weights_torchscript.pt"), map_location="cpu").eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def main(argv: list[str]) -> int:
    runtime, folders = argv[0], [Path(a) for a in argv[1:]]
    if runtime == "tf":
        import tensorflow as lib

        run = run_tf
    elif runtime == "onnx":
        import onnxruntime as lib  # type: ignore[no-redef]

        run = run_onnx
    else:
        import torch as lib  # type: ignore[no-redef]

        run = run_torchscript
    worst = 0.0
    for folder in folders:
        expected = np.load(folder / "test_output.npy")
        try:
            y = run(folder, normalised_test_input(folder))
            diff = float(np.max(np.abs(y - expected)))
            print(f"{folder.name}: {runtime} {lib.__version__}: max |Δ| to test_output {diff:.2e}", flush=True)
            worst = max(worst, diff)
        except Exception as err:  # report every package, then fail
            print(f"{folder.name}: {runtime} {lib.__version__}: FAILED {type(err).__name__}: {err}", flush=True)
            worst = float("inf")
    return 0 if worst <= 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
