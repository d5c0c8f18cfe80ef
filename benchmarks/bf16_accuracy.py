"""What bfloat16 inference does to the restoration metrics (issue 15): fp32 vs bf16 on held-out images.

`--precision bf16` runs the package's ONNX weights in OpenVINO with bf16 inference precision, which needs a CPU with
bfloat16 units (AVX-512 BF16 or AMX). Where the CPU has none (this project's machine exposes only AVX2+FMA), the
*accuracy* of such kernels can still be measured exactly: a bf16 convolution takes bf16 inputs and weights,
multiplies them exactly (8-bit × 8-bit mantissas fit a float32), accumulates in fp32 and stores a bf16 activation.
So the package's ONNX graph with every Conv's weights rounded to bf16 and a float32 → bfloat16 → float32 cast pair
on every Conv's input and output computes what OpenVINO's bf16 mode computes (up to the order of the fp32 sums),
at fp32 speed; network input and output stay fp32, as OpenVINO keeps them. Cross-check: PyTorch's own bf16
convolution kernels (the TorchScript weights cast to bfloat16; slow on fp32 hardware) on one crop.
This measures accuracy only: it says nothing about the speed of bf16 units.

Metrics are the paper's (NRMSE, PSNR, SSIM; whole, _mito, _cristae) through `cristae_zoo.evaluate`, on each data
folder's held-out test split, after the evaluation's affine fit to the ground truth; the anchor is the same ONNX
weights in fp32. Rewrites the `bf16` section of docs/benchmarks.md.

    python benchmarks/bf16_accuracy.py --data runs/data runs/data_broad
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import default_package, machine, table, write_section  # noqa: E402

METRICS = ["PSNR", "SSIM", "PSNR_mito", "SSIM_mito", "PSNR_cristae", "SSIM_cristae"]


def round_to_bf16(a: np.ndarray) -> np.ndarray:
    """float32 → the nearest bfloat16 (round to nearest, ties to even), returned as float32."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32).view(np.float32)


def bf16_graph(path: Path):
    """The ONNX model at `path` with bf16 convolutions emulated exactly (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    nodes: list = []

    def bf16_cast(source: str, target: str) -> list:
        mid = f"{target}__bf16"
        return [helper.make_node("Cast", [source], [mid], to=TensorProto.BFLOAT16),
                helper.make_node("Cast", [mid], [target], to=TensorProto.FLOAT)]  # fmt: skip

    for node in list(graph.node):
        if node.op_type != "Conv":
            nodes.append(node)
            continue
        weights = initializers.get(node.input[1])
        if weights is None:
            raise SystemExit(f"{path}: Conv {node.name} has computed weights; cannot round them")
        weights.CopyFrom(numpy_helper.from_array(round_to_bf16(numpy_helper.to_array(weights)), weights.name))
        x, y = node.input[0], node.output[0]
        nodes += bf16_cast(x, f"{x}__conv_in_{len(nodes)}")
        node.input[0] = nodes[-1].output[0]
        node.output[0] = f"{y}__fp32"
        nodes += [node, *bf16_cast(f"{y}__fp32", y)]
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def onnx_restorer(session, degradation, divisor: int):
    """The session as `cristae_zoo.evaluate.padded_restorer` (the steps of every DeepCristae evaluation), so that
    only the arithmetic differs between fp32 and bf16."""
    from cristae_zoo.evaluate import padded_restorer

    name = session.get_inputs()[0].name
    return padded_restorer(lambda padded: session.run(None, {name: np.ascontiguousarray(padded[None, None], np.float32)})[0][0, 0],
                           degradation, divisor)  # fmt: skip


def torch_bf16_check(package: Path, crop: np.ndarray, fp32, emulated) -> tuple[float, float, float]:
    """Max |Δ| vs fp32 of PyTorch's bf16 kernels and of the emulation on one crop, and between the two."""
    import torch

    module = torch.jit.load(str(package / "weights_torchscript.pt")).eval().to(torch.bfloat16)
    x = np.ascontiguousarray(crop[None, None], np.float32)
    with torch.inference_mode():
        kernels = module(torch.from_numpy(x).to(torch.bfloat16)).float().numpy()
    ref = fp32(x)
    emu = emulated(x)
    return float(np.abs(kernels - ref).max()), float(np.abs(emu - ref).max()), float(np.abs(kernels - emu).max())


def main() -> None:
    import onnxruntime as ort

    from cristae_zoo.data.degrade import percentile_normalize
    from cristae_zoo.data.prepare import load_split
    from cristae_zoo.evaluate import evaluate
    from cristae_zoo.systems.deepcristae import degradation_of

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, default=None, help="a DeepCristae package (default: model_zoo's)")
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="prepared data folders (test split used)")
    parser.add_argument("--crop", type=int, default=256, help="crop for the PyTorch bf16-kernel cross-check")
    args = parser.parse_args()
    package = args.package or default_package()
    divisor = 8  # the U-Net's depth 3: 2³
    sessions = {"fp32": ort.InferenceSession(str(package / "weights.onnx"), providers=["CPUExecutionProvider"]),
                "bf16": ort.InferenceSession(bf16_graph(package / "weights.onnx").SerializeToString(),
                                             providers=["CPUExecutionProvider"])}  # fmt: skip
    run = {k: (lambda x, s=s: s.run(None, {s.get_inputs()[0].name: x})[0]) for k, s in sessions.items()}

    sections, worst = [], []
    for data in args.data:
        degradation = degradation_of(data)
        pairs = load_split(data, "test")
        restorers = {k: onnx_restorer(s, degradation, divisor) for k, s in sessions.items()}
        result = evaluate(pairs, restorers, degradation)
        by = {m: {r["image"]: r for r in result.rows if r["method"] == m} for m in restorers}
        names = [p.name for p in pairs]
        # Raw outputs (before the evaluation's affine fit): how far bf16 moves a pixel, in output-range units
        dev = []
        for p in pairs:
            ref = restorers["fp32"](p.input)
            span = float(np.percentile(ref, 99.9) - np.percentile(ref, 0.1))
            dev.append(float(np.max(np.abs(restorers["bf16"](p.input) - ref))) / span)
        rows = []
        for metric in METRICS:
            a = np.array([by["fp32"][n][metric] for n in names], float)
            b = np.array([by["bf16"][n][metric] for n in names], float)
            defined = ~np.isnan(a)  # _mito/_cristae are undefined on an image without mitochondria (empty field)
            a, b = a[defined], b[defined]
            d = b - a
            worst.append((metric, float(np.max(np.abs(d)))))
            rows.append([metric, f"{a.mean():.4f}", f"{b.mean():.4f}", f"{d.mean():+.4f}", f"{np.abs(d).max():.4f}",
                         f"{defined.sum()}"])
        sections.append(
            f"**{data}** (test split, {len(pairs)} images; before the affine fit, bf16 moves a pixel by at most"
            f" {max(dev):.2%} of the fp32 output's range):\n\n"
            + table(["metric", "fp32 (anchor, mean)", "bf16 (mean)", "mean Δ", "largest change on one image (abs.)", "images"], rows)
        )
    first = load_split(args.data[0], "test")[0]
    norm = degradation_of(args.data[0])
    xn = percentile_normalize(first.input, norm.p_low, norm.p_high)[: args.crop, : args.crop]
    kernels, emulated, between = torch_bf16_check(package, xn, run["fp32"], run["bf16"])
    dc = max(v for m, v in worst if m == "PSNR_cristae")
    verdict = ("within" if dc <= 0.1 else "outside") + f" the 0.1 dB goal (largest per-image change {dc:.3f} dB)"
    write_section(
        "bf16",
        "## bf16 accuracy: restoration metrics, fp32 vs bfloat16 (issue 15)\n\n"
        f"Machine: {machine()}. Package: `{package.name}`, ONNX weights in ONNX Runtime {ort.__version__}: fp32"
        " (anchor) and bf16 convolutions emulated exactly (weights rounded to bf16; every Conv's input and output"
        " rounded to bf16 by a cast pair; products exact and sums in fp32, as bf16 units compute them; network input"
        " and output fp32). This measures accuracy, not speed: the machine has no bf16 units. Metrics after the"
        " evaluation's affine fit to the ground truth, as in every DeepCristae table.\n\n"
        f"Cross-check on a {args.crop}² crop of `{first.name}`: PyTorch's own bf16 convolution kernels (TorchScript"
        f" weights cast to bfloat16) deviate from fp32 by at most {kernels:.4f}, the emulation by {emulated:.4f},"
        f" and the two from each other by {between:.4f} (normalised units).\n\n"
        + "\n\n".join(sections)
        + f"\n\nPSNR_cristae under bf16: {verdict}.",
    )
    print(f"PSNR_cristae: {verdict}")


if __name__ == "__main__":
    main()
