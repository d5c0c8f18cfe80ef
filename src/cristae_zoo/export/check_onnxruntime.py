"""Standalone check that a package's ONNX weights run under an old onnxruntime (deepImageJ ships 1.13).

Needs only numpy and onnxruntime, no cristae_zoo import, so it runs in a throwaway environment:

    python -m venv /tmp/ort115 && /tmp/ort115/bin/pip install onnxruntime==1.15.1 "numpy<2"
    /tmp/ort115/bin/python src/cristae_zoo/export/check_onnxruntime.py model_zoo/deepcristae

It applies the package's preprocessing itself (scale_range per image, percentiles 2 / 99.8, linear interpolation,
eps 1e-6), runs `weights.onnx` on `test_input.npy`, prints the max abs difference to `test_output.npy`, and runs a
batch of 2 at another size to check the dynamic axes. Exit code 1 if the difference exceeds 1e-4.
"""

import sys

import numpy as np
import onnxruntime as ort


def main(pkg: str, tolerance: float = 1e-4) -> int:
    x = np.load(f"{pkg}/test_input.npy").astype(np.float32)
    y = np.load(f"{pkg}/test_output.npy")
    lo, hi = np.percentile(x, [2, 99.8])
    xn = ((x - lo) / (hi - lo + 1e-6)).astype(np.float32)
    session = ort.InferenceSession(f"{pkg}/weights.onnx", providers=["CPUExecutionProvider"])
    (p,) = session.run(["output"], {"input": xn})
    diff = float(np.abs(p - y).max())
    print(f"onnxruntime {ort.__version__}, numpy {np.__version__}")
    print(f"inputs {[(i.name, i.shape) for i in session.get_inputs()]}")
    print(f"max abs diff vs test_output: {diff:.3g}")
    h, w = x.shape[-2:]
    x2 = np.concatenate([xn, xn])[:, :, : h - h // 4 // 8 * 8, : w - w // 8 // 8 * 8]
    (p2,) = session.run(["output"], {"input": x2})
    print(f"batch 2, {x2.shape[2]}x{x2.shape[3]} -> {p2.shape}")
    return 0 if diff <= tolerance and p2.shape == x2.shape else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "model_zoo/deepcristae"))
