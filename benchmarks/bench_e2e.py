"""Whole-process `cristae-zoo predict` against a hand-written script, the CPU's measured peak, engines and memory.

Every figure is a ratio measured in this one run against a named anchor (the machine is shared and noisy; runs
are interleaved A B A B … and the median is kept):

1. **vs the hand-written script** (`ANCHOR_SCRIPT` below: read the TIFF, percentile-normalise, one ONNX Runtime
   call per plane, write the TIFF): one 2048² plane and a 20 × 1024² stack, whole processes, same output to float
   tolerance (checked);
2. **engines** in one process on the same normalised 2048² array: the default ONNX Runtime engine, bioimageio.core,
   OpenVINO fp32 and (where the CPU has bfloat16 units) bf16 with its restoration metrics against fp32;
3. **the CPU's peak**: a large SGEMM (numpy/OpenBLAS, with `OPENBLAS_CORETYPE`/`OPENBLAS_L2_SIZE` unset in that
   child process only) and the fraction of it the network reaches (FLOPs per pixel counted from the ONNX graph);
4. **peak RSS** of `cristae-zoo predict` on a 2048² and an 8192² plane.

Usage: python benchmarks/bench_e2e.py [--repeat 3] [--quick] [--only plane,stack,memory,engines] [--before COMMIT]
       (writes the "e2e" section of docs/benchmarks.md from the results file, which partial runs update)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import tifffile  # noqa: E402

from _report import machine, run_timed, table, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "model_zoo" / "deepcristae"

ANCHOR_SCRIPT = '''
import sys
import numpy as np
import onnxruntime as ort
import tifffile

src, dst, onnx = sys.argv[1], sys.argv[2], sys.argv[3]
image = tifffile.imread(src).astype(np.float32)
planes = image.reshape(-1, *image.shape[-2:])
session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
out = []
for plane in planes:
    lo, hi = np.percentile(plane, [2.0, 99.8])  # the package's scale_range percentiles
    x = ((plane - lo) / (hi - lo + 1e-6)).astype(np.float32)[None, None]
    pad = [(-n) % 8 for n in plane.shape]
    x = np.pad(x, [(0, 0), (0, 0), (0, pad[0]), (0, pad[1])], mode="symmetric")
    out.append(session.run(None, {name: x})[0][0, 0, : plane.shape[0], : plane.shape[1]])
tifffile.imwrite(dst, np.stack(out).reshape(image.shape).astype(np.float32))
'''

SGEMM = '''
import time, numpy as np
n = 4096
a = np.random.default_rng(0).random((n, n), dtype=np.float32); b = a.copy()
a @ b
best = min((lambda t: (a @ b, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(5))
print(2 * n ** 3 / best / 1e9)
'''


def plane_image(shape: tuple[int, int]) -> np.ndarray:
    """The package's sample input tiled to `shape` (realistic content at the training scale)."""
    sample = np.load(PACKAGE / "test_input.npy")[0, 0]
    reps = (-(-shape[0] // sample.shape[0]), -(-shape[1] // sample.shape[1]))
    rng = np.random.default_rng(0)
    big = np.tile(sample, reps)[: shape[0], : shape[1]]
    return (big + rng.normal(0, 0.01, big.shape)).astype(np.float32)


def cz_command(src: Path, dst: Path, *extra: str) -> list[str]:
    return [str(Path(sys.executable).parent / "cristae-zoo"), "predict", str(PACKAGE), str(src), "-o", str(dst),
            "--rescale", "1", "--overwrite", *extra]  # fmt: skip


def interleaved(commands: dict[str, list[str]], repeat: int) -> dict[str, tuple[float, int]]:
    """Median wall time (s) and max peak RSS (MiB) per command, runs interleaved."""
    times: dict[str, list[float]] = {k: [] for k in commands}
    rss: dict[str, int] = {k: 0 for k in commands}
    for _ in range(repeat):
        for name, cmd in commands.items():
            wall, peak = run_timed(cmd)
            times[name].append(wall)
            rss[name] = max(rss[name], peak)
    return {k: (float(np.median(v)), rss[k]) for k, v in times.items()}


def sgemm_peak() -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    out = subprocess.run([sys.executable, "-c", SGEMM], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def onnx_flops_per_pixel(path: Path, size: int = 256) -> float:
    """FLOPs per input pixel: 2 × multiply-adds of every Conv / ConvTranspose, from the graph's weight shapes and
    the resolution level of each node (measured by running the graph's intermediate shapes once)."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    inp = model.graph.input[0]
    for i, d in enumerate(inp.type.tensor_type.shape.dim):
        d.ClearField("dim_param")
        d.dim_value = [1, 1, size, size][i]
    model = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    shapes.update({v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.output})
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    flops = 0.0
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose") and node.input[1] in inits and node.output[0] in shapes:
            w = inits[node.input[1]]
            out = shapes[node.output[0]]
            kernel = int(np.prod(w[2:]))
            if node.op_type == "Conv":
                macs = out[1] * w[1] * kernel * out[2] * out[3]
            else:  # ConvTranspose: every input pixel scatters a kernel
                inp_shape = shapes.get(node.input[0])
                macs = (w[0] * w[1] * kernel * inp_shape[2] * inp_shape[3]) if inp_shape else 0
            flops += 2 * macs
    return flops / (size * size)


def engines_in_process(image: np.ndarray) -> list[list[object]]:
    from cristae_zoo.engines import cpu_supports_bf16
    from cristae_zoo.predict import Restorer

    rows: list[list[object]] = []
    units = image[None, None]
    reference = None
    setups = [("onnxruntime", "fp32"), ("bioimageio", "fp32"), ("openvino", "fp32")]
    if cpu_supports_bf16():
        setups.append(("openvino", "bf16"))
    for engine, precision in setups:
        try:
            r = Restorer(PACKAGE, engine=engine, precision=precision)
        except Exception as err:  # e.g. OpenVINO not installed
            rows.append([engine, precision, "—", "—", f"not run: {err}"])
            continue
        with r:
            r.predict_units(units[..., :512, :512])  # warm-up (session creation, compilation)
            t = time.perf_counter()
            out = r.predict_units(units)
            seconds = time.perf_counter() - t
        if reference is None:
            reference, anchor = out, seconds
        diff = float(np.max(np.abs(out - reference)) / max(float(np.ptp(reference)), 1e-12))
        rows.append([engine, precision, f"{seconds:.2f}", f"{anchor / seconds:.2f}×", f"{diff:.1e}"])
    if not cpu_supports_bf16():
        rows.append(["openvino", "bf16", "—", "—", "not run: this CPU has no bfloat16 units (refused, exit 2)"])
    return rows


def before_command(commit: str, tmp: Path) -> tuple[list[str], dict[str, str]]:
    """`cristae-zoo predict` as it was at `commit` (a git worktree of that commit, run with this venv)."""
    tree = tmp / f"before-{commit[:8]}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit], check=True,
                       capture_output=True)  # fmt: skip
    return [sys.executable, "-c", "import sys; from cristae_zoo.cli import main; sys.argv[0] = 'cristae-zoo'; main()"], {
        "PYTHONPATH": str(tree / "src")}


def run_env(cmd: list[str], env: dict[str, str] | None) -> tuple[float, int]:
    if not env:
        return run_timed(cmd)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return run_timed(cmd)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def render(res: dict) -> str:
    """The section from the stored results (`--results`): parts may come from separate runs of this script."""
    lines = [f"Machine: {res.get('machine', '?')}. Package: model_zoo/deepcristae, ONNX weights; `cristae-zoo"
             " predict` with default options (engine auto = ONNX Runtime, tile 1152) and `--rescale 1`. Load averages"
             " are the 1-minute load when each part ended (above ~2 the cores were shared with other jobs)."]  # fmt: skip
    for what in ("plane", "stack"):
        r = res.get(what)
        if not r:
            continue
        before = "before" in r["times"]
        head = ["", "script (anchor)", "cristae-zoo (this commit)"] + ([f"cristae-zoo before ({r['before']})"]
                                                                       if before else [])  # fmt: skip
        rows = [["seconds (median)"] + [f"{r['times'][k]:.2f}" for k in ("script", "cristae-zoo", "before")
                                        if k in r["times"]],  # fmt: skip
                ["speed vs the script"] + [f"**{r['times']['script'] / r['times'][k]:.2f}×**" if k != "script"
                                           else "1.00×" for k in ("script", "cristae-zoo", "before")
                                           if k in r["times"]],  # fmt: skip
                ["peak RSS (MiB)"] + [str(r["rss"][k]) for k in ("script", "cristae-zoo", "before") if k in r["rss"]],
                ["all runs (s)"] + [", ".join(f"{t:.1f}" for t in r["runs"][k]) for k in ("script", "cristae-zoo",
                                                                                          "before") if k in r["runs"]]]  # fmt: skip
        lines += ["", f"### {r['label']}: `cristae-zoo predict` vs the hand-written script (whole processes, median"
                  f" of {r['repeat']} interleaved runs, load {r['load']:.1f})", "", table(head, rows), "",
                  f"Output vs the script's: max |Δ| {r['diff']:.1e}" + (f"; vs before: {r['diff_before']:.1e}"
                                                                         if "diff_before" in r else "") + "."]  # fmt: skip
    mem = res.get("memory")
    if mem:
        items = sorted((int(k), v) for k, v in mem.items())
        prior = next((m["before"] for _, m in items if "before" in m), None)
        rows = [[f"{n}² ({n * n / 1e6:.1f} Mpx)", f"{m['rss']} ({m['rss'] * 2**20 / 1e9:.2f} GB)", f"{m['seconds']:.1f}"]
                + ([f"{m['rss_before']} ({m['rss_before'] * 2**20 / 1e9:.2f} GB)" if "rss_before" in m else "—"]
                   if prior else []) for n, m in items]  # fmt: skip
        lines += ["", "### Peak RSS of `cristae-zoo predict` by plane size (one run each)", "",
                  table(["plane", "peak RSS (MiB)", "seconds"] + ([f"before ({prior}): peak RSS (MiB)"] if prior else []),
                        rows)]  # fmt: skip
    eng = res.get("engines")
    if eng:
        lines += ["", f"### Engines in one process ({eng['side']}² plane, normalised, warm; anchor: ONNX Runtime;"
                  f" load {eng['load']:.1f})", "",
                  table(["engine", "precision", "seconds", "speed vs ONNX Runtime", "max |Δ| / range vs ONNX Runtime"],
                        eng["rows"]),
                  "", f"CPU peak (SGEMM 4096², OpenBLAS with OPENBLAS_CORETYPE unset): **{eng['peak']:.0f} GFLOP/s**."
                  f" The network costs {eng['fpp'] / 1e3:.0f} kFLOP per pixel, so ONNX Runtime reaches"
                  f" {eng['reached']:.0f} GFLOP/s = **{eng['reached'] / eng['peak']:.0%} of the measured peak**."]  # fmt: skip
    return "## Whole-process prediction, engines, peak and memory (issue 15)\n\n" + "\n".join(lines)


def main() -> None:
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--repeat-stack", type=int, default=None, help="repetitions on the stack (default: --repeat)")
    parser.add_argument("--quick", action="store_true", help="smaller inputs, one repetition (a smoke test)")
    parser.add_argument("--only", default="plane,stack,memory,engines",
                        help="comma-separated parts: plane, stack, memory, engines")  # fmt: skip
    parser.add_argument("--memory-sizes", default="4096,8192", help="plane edges for the peak-RSS table")
    parser.add_argument("--before", default=None, help="a git commit whose `cristae-zoo predict` also runs, interleaved")
    parser.add_argument("--results", type=Path, default=Path("/tmp/bench_e2e.json"),
                        help="results file, merged across partial runs; the section is rendered from it")  # fmt: skip
    parser.add_argument("--fresh", action="store_true", help="start a new results file")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    repeat = 1 if args.quick else args.repeat
    side, stack = (512, (4, 256, 256)) if args.quick else (2048, (20, 1024, 1024))
    res = {} if args.fresh or not args.results.exists() else json.loads(args.results.read_text())

    def save() -> None:
        res["machine"] = machine()
        args.results.write_text(json.dumps(res, indent=1))
        write_section("e2e", render(res))

    with tempfile.TemporaryDirectory(dir="/tmp") as tmp_:
        tmp = Path(tmp_)
        anchor = tmp / "anchor.py"
        anchor.write_text(ANCHOR_SCRIPT)
        plane = plane_image((side, side))
        before = before_command(args.before, tmp) if args.before else None
        try:
            for what in ("plane", "stack"):
                if what not in parts:
                    continue
                src = tmp / f"{what}.tif"
                if what == "plane":
                    tifffile.imwrite(src, plane)
                else:
                    s = plane_image(stack[1:])
                    tifffile.imwrite(src, np.stack([np.roll(s, 37 * i, axis=1) for i in range(stack[0])]),
                                     imagej=True, metadata={"axes": "ZYX"})  # fmt: skip
                commands: dict[str, tuple[list[str], dict[str, str] | None]] = {
                    "script": ([sys.executable, str(anchor), str(src), str(tmp / "a.tif"), str(PACKAGE / "weights.onnx")],
                               None),
                    "cristae-zoo": (cz_command(src, tmp / "b.tif"), None),
                }  # fmt: skip
                if before:
                    cmd, env = before
                    commands["before"] = (cmd + cz_command(src, tmp / "c.tif")[1:], env)
                n = repeat if what == "plane" else (args.repeat_stack or repeat)
                runs: dict[str, list[float]] = {k: [] for k in commands}
                rss: dict[str, int] = {k: 0 for k in commands}
                for _ in range(n):
                    for name, (cmd, env) in commands.items():
                        wall, peak = run_env(cmd, env)
                        runs[name].append(wall)
                        rss[name] = max(rss[name], peak)
                        print(what, name, f"{wall:.1f} s", peak, "MiB", flush=True)
                a, b = tifffile.imread(tmp / "a.tif"), tifffile.imread(tmp / "b.tif")
                r = {"label": f"{side}² plane" if what == "plane" else f"{stack[0]} × {stack[1]}² stack",
                     "repeat": n, "runs": runs, "rss": rss, "times": {k: float(np.median(v)) for k, v in runs.items()},
                     "diff": float(np.max(np.abs(a - b))), "load": os.getloadavg()[0]}  # fmt: skip
                if before:
                    r["before"] = args.before[:8]
                    r["diff_before"] = float(np.max(np.abs(tifffile.imread(tmp / "c.tif") - b)))
                res[what] = r
                save()

            if "memory" in parts:
                mem = res.setdefault("memory", {})
                for n in [int(v) for v in args.memory_sizes.split(",") if v]:
                    img = plane_image((n, n))
                    tifffile.imwrite(tmp / "mem.tif", img)
                    del img
                    wall, peak = run_timed(cz_command(tmp / "mem.tif", tmp / "m.tif"))
                    print("memory", n, f"{wall:.1f} s", peak, "MiB", flush=True)
                    mem[str(n)] = {"rss": peak, "seconds": wall}
                    if before:  # the same plane through the "before" commit, right after
                        cmd, env = before
                        wall_b, peak_b = run_env(cmd + cz_command(tmp / "mem.tif", tmp / "mb.tif")[1:], env)
                        print("memory before", n, f"{wall_b:.1f} s", peak_b, "MiB", flush=True)
                        mem[str(n)] |= {"rss_before": peak_b, "seconds_before": wall_b, "before": args.before[:8]}
                    save()
        finally:
            if before:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(tmp / f"before-{args.before[:8]}")], capture_output=True)  # fmt: skip

    if "engines" in parts:
        peak_gflops = sgemm_peak()
        fpp = onnx_flops_per_pixel(PACKAGE / "weights.onnx")
        rows = engines_in_process(plane)
        ort_seconds = float(rows[0][2])
        res["engines"] = {"side": side, "rows": rows, "peak": peak_gflops, "fpp": fpp,
                          "reached": fpp * side * side / ort_seconds / 1e9, "load": os.getloadavg()[0]}  # fmt: skip
        save()


if __name__ == "__main__":
    main()
