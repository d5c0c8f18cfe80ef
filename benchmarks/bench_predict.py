"""Prediction benchmarks on this machine, all ratios from one run (see docs/benchmarks.md).

1. end-to-end `cristae-zoo predict` throughput on a 2048×2048 plane and a 20×1024×1024 stack vs the bare ONNX
   Runtime session on the same pre-normalised array (the pipeline's overhead);
2. ONNX vs TensorFlow vs TorchScript weights, model loading apart from steady-state throughput;
3. vs CSBDeep's `CARE.predict` on the same architecture with the same tiles;
4. FLOPs per pixel of the network and the fraction of this CPU's peak that inference reaches;
5. peak memory (RSS of the whole `cristae-zoo predict` process) for an 8192×8192 plane and the 20-plane stack.

Usage: python benchmarks/bench_predict.py [--package DIR] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import tifffile  # noqa: E402

from _report import cpu_freq_ghz, default_package, machine, median_time, run_timed, table, write_section  # noqa: E402

PX_NM = 25.0  # inputs are written at the training pixel size: factor 1, so every format sees the same pixels


def make_plane(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Tubes over a Poisson background, uint16 (content does not change the network's cost, only realism)."""
    from cristae_zoo.export.testing import synthetic_mito_image

    tile = synthetic_mito_image((min(shape[0], 1024), min(shape[1], 1024)), seed=seed)
    reps = (-(-shape[0] // tile.shape[0]), -(-shape[1] // tile.shape[1]))
    return np.tile(tile, reps)[: shape[0], : shape[1]].astype(np.uint16)


def write_input(path: Path, data: np.ndarray, axes: str) -> Path:
    px_um = PX_NM / 1000
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / px_um, 1 / px_um), metadata={"axes": axes, "unit": "um"})
    return path


def normalized(plane: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(plane.astype(np.float32), [2.0, 99.8])
    return ((plane - lo) / (hi - lo + 1e-6)).astype(np.float32)


def flops_per_pixel(model: object, depth: int) -> tuple[float, int]:
    """Multiply-adds × 2 per output pixel of every Conv2D of the Keras U-Net (a layer at level l runs on 1/4**l of
    the pixels; the level is in the layer's name), and the parameters of those layers."""
    macs, params = 0.0, 0
    for layer in model.layers:  # type: ignore[attr-defined]
        if type(layer).__name__ != "Conv2D":
            continue
        kernel = layer.kernel.shape  # (kh, kw, cin, cout)
        name = layer.name
        level = depth if name.startswith("middle") else int(name[len("down"):].split("_")[0]) if name.startswith(
            "down") else int(name[len("up"):].split("_")[0]) if name.startswith("up") else 0  # fmt: skip
        macs += kernel[0] * kernel[1] * kernel[2] * kernel[3] / 4**level
        params += int(np.prod(kernel)) + kernel[3]
    return 2 * macs, params


def sgemm_gflops() -> float:
    """Best of 5 (the machine may be shared: the fastest run is the least disturbed)."""
    a = np.random.default_rng(0).random((4096, 4096), dtype=np.float32)
    a @ a
    times = []
    for _ in range(5):
        t = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - t)
    return 2 * 4096**3 / min(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="smaller images (a smoke test of this script)")
    args = parser.parse_args()
    package = (args.package or default_package()).resolve()
    quick = args.quick
    import onnxruntime as ort

    from cristae_zoo.predict import DEFAULT_TILE, Restorer, load_package
    from cristae_zoo.restore import RestoreOptions, restore_path

    descr = load_package(package)
    config = descr.config if isinstance(descr.config, dict) else (descr.config.model_extra or {})
    halo = int(config["cristae_zoo"]["halo"]["declared_px"])
    net = config["cristae_zoo"].get("network", {})
    print(f"package {package}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="cz_bench_"))
    cli = [sys.executable, "-m", "cristae_zoo.cli", "predict", str(package)]
    side = 512 if quick else 2048
    n_stack, stack_side = (3, 256) if quick else (20, 1024)
    big_side = 1024 if quick else 8192
    plane = make_plane((side, side))
    stack = np.stack([make_plane((stack_side, stack_side), seed=s) for s in range(n_stack)])
    plane_tif = write_input(work / "plane.tif", plane, "YX")
    stack_tif = write_input(work / "stack.tif", stack, "ZYX")
    mpx_plane, mpx_stack = plane.size / 1e6, stack.size / 1e6
    rows: list[list[object]] = []
    notes: list[str] = []
    results: dict[str, float] = {}

    # ---- 1. bare ONNX Runtime session on pre-normalised arrays (one call per plane, whole plane, warm) ----
    session = ort.InferenceSession(str(package / "weights.onnx"), providers=["CPUExecutionProvider"])
    x_plane = normalized(plane)[None, None]
    x_stack = [normalized(p)[None, None] for p in stack]

    def bare_plane() -> float:
        session.run(None, {"input": x_plane})  # warm: the first run of a shape plans its memory
        times = []
        for _ in range(2):
            t = time.perf_counter()
            session.run(None, {"input": x_plane})
            times.append(time.perf_counter() - t)
        return min(times)

    def bare_stack() -> float:
        session.run(None, {"input": x_stack[0]})
        t = time.perf_counter()
        for x in x_stack:
            session.run(None, {"input": x})
        return time.perf_counter() - t

    t_bare_plane, t_bare_stack = bare_plane(), bare_stack()
    results["bare_plane"], results["bare_stack"] = mpx_plane / t_bare_plane, mpx_stack / t_bare_stack
    print(f"bare ORT: plane {results['bare_plane']:.3f} Mpx/s, stack {results['bare_stack']:.3f} Mpx/s", flush=True)

    # ---- 2. end to end: the CLI (new process: start-up, model load, read, normalise, tiles, write) ----
    e2e: dict[tuple[str, str], float] = {}
    for weights in ("onnx", "tensorflow", "torchscript"):
        for name, src, mpx in (("plane", plane_tif, mpx_plane), ("stack", stack_tif, mpx_stack)):
            if weights == "torchscript" and name == "stack" and not quick:
                continue  # the slowest format on this CPU; the plane shows it
            out = work / f"out_{weights}_{name}.tif"
            runs = 2 if weights == "onnx" else 1  # the overhead claim: best of two, like the bare session's runs
            wall, rss = min(run_timed([*cli, str(src), "-o", str(out), "--weights", weights, "--overwrite"],
                                      cwd=work) for _ in range(runs))  # fmt: skip
            e2e[(weights, name)] = wall
            print(f"CLI {weights} {name}: {wall:.1f} s ({mpx / wall:.3f} Mpx/s), peak RSS {rss} MiB", flush=True)
    t_bare_plane, t_bare_stack = min(t_bare_plane, bare_plane()), min(t_bare_stack, bare_stack())
    del session
    for name, mpx, bare in (("plane", mpx_plane, t_bare_plane), ("stack", mpx_stack, t_bare_stack)):
        for weights in ("onnx", "tensorflow", "torchscript"):
            if (weights, name) not in e2e:
                continue
            wall = e2e[(weights, name)]
            rows.append([f"`cristae-zoo predict --weights {weights}`", name, f"{wall:.1f}", f"{mpx / wall:.3f}",
                         f"{wall / bare - 1:+.0%}"])  # fmt: skip
        rows.append(["bare ONNX Runtime session (pre-normalised, untiled, warm)", name, f"{bare:.1f}",
                     f"{mpx / bare:.3f}", "—"])  # fmt: skip

    # ---- 3. weights formats in one process: loading vs steady state; batching ----
    fmt_rows: list[list[object]] = []
    steady: dict[str, float] = {}
    for weights in ("onnx", "tensorflow", "torchscript"):
        t = time.perf_counter()
        r = Restorer(package, weights, tile=1024)
        r.predict(plane[:256, :256].astype(np.float32))
        load = time.perf_counter() - t
        secs = median_time(lambda r=r: r.predict(plane.astype(np.float32)), repeat=2)
        steady[weights] = mpx_plane / secs
        r.close()
        fmt_rows.append([weights, f"{load:.1f}", f"{steady[weights]:.3f}"])
        print(f"{weights}: load {load:.1f} s, {steady[weights]:.3f} Mpx/s", flush=True)
    for row in fmt_rows:
        row.append(f"{steady[row[0]] / steady['onnx']:.2f}×")
    # tile size: the old default (1024, 3×3 tiles on a 2048² plane) vs the new one (1152, 2×2 tiles)
    tile_rows = []
    outputs = {}
    for tile in (1024, 1152):
        with Restorer(package, "onnx", tile=tile) as r:
            r.predict(plane[:tile, :tile].astype(np.float32))
            t = time.perf_counter()
            outputs[tile] = r.predict(plane.astype(np.float32))
            tile_rows.append([tile, r.n_tiles(plane.shape), f"{mpx_plane / (time.perf_counter() - t):.3f}"])
    tile_diff = float(np.abs(outputs[1024] - outputs[1152]).max())
    # batching small planes: 40 planes of 256² through restore_path
    small_stack = np.stack([make_plane((256, 256), seed=s) for s in range(40)])
    small_tif = write_input(work / "small_stack.tif", small_stack, "ZYX")
    batch_rows = []
    for batch in (1, 4):
        t = time.perf_counter()
        restore_path(package, small_tif, work / f"batch{batch}.tif", RestoreOptions(weights="onnx", batch=batch,
                                                                                    overwrite=True))  # fmt: skip
        batch_rows.append([batch, f"{small_stack.size / 1e6 / (time.perf_counter() - t):.3f}"])

    # ---- 4. CSBDeep's CARE.predict, same architecture and tiles (2×2) ----
    care_rows: list[list[object]] = []
    try:
        from csbdeep.data import PercentileNormalizer
        from csbdeep.models import CARE, Config

        depth, filters = int(net.get("depth", 3)), int(net.get("filters", 32))
        config = Config("YX", n_channel_in=1, n_channel_out=1, unet_n_depth=depth, unet_kern_size=3,
                        unet_n_first=filters, unet_residual=True, train_loss="mae")  # fmt: skip
        care = CARE(config, "bench", basedir=str(work / "care"))
        img = plane.astype(np.float32)
        n_tiles = (2, 2) if not quick else (1, 1)
        kw = {"normalizer": PercentileNormalizer(2, 99.8), "n_tiles": n_tiles}
        t_care = median_time(lambda: care.predict(img, "YX", **kw), repeat=2)
        tile = side // n_tiles[0] + 2 * halo  # our tiles: inner side/2 + the halo on each side → the same 2×2 grid
        for weights in ("onnx", "tensorflow"):
            with Restorer(package, weights, tile=tile) as r:
                assert r.n_tiles(img.shape) == n_tiles[0] * n_tiles[1]
                t_ours = median_time(lambda r=r: r.predict(img), repeat=2)
            care_rows.append([f"cristae-zoo `Restorer` ({weights})", f"{mpx_plane / t_ours:.3f}",
                              f"{t_care / t_ours:.2f}×"])  # fmt: skip
        care_rows.append([f"CSBDeep {__import__('csbdeep').__version__} `CARE.predict` (Keras/TF)",
                          f"{mpx_plane / t_care:.3f}", "1.00×"])  # fmt: skip
        care_params = care.keras_model.count_params()
    except ImportError:
        care_params = None
        notes.append("CSBDeep not installed (`pip install -e '.[bench]'`): comparison skipped.")

    # ---- 5. FLOPs per pixel and fraction of peak ----
    depth, filters, kernel = int(net.get("depth", 3)), int(net.get("filters", 32)), int(net.get("kernel_size", 3))
    from cristae_zoo.config import NetworkConfig
    from cristae_zoo.models.unet import build_unet

    keras_model = build_unet(NetworkConfig(depth=depth, filters=filters, kernel_size=kernel))
    keras_params = keras_model.count_params()
    flops, params = flops_per_pixel(keras_model, depth)
    gemm = sgemm_gflops()
    ghz = cpu_freq_ghz()
    cores = os.cpu_count() or 1
    theoretical = cores * 32 * ghz if ghz else None  # AVX2: 2 FMA units × 8 float32 lanes × 2 FLOPs per cycle
    best = max(steady.values())
    achieved = flops * best * 1e6 / 1e9

    # ---- 6. peak memory of the whole process ----
    big = make_plane((big_side, big_side))
    big_tif = write_input(work / "big.tif", big, "YX")
    del big
    small_tif = write_input(work / "small.tif", make_plane((256, 256)), "YX")
    _, rss_small = run_timed([*cli, str(small_tif), "-o", str(work / "o_small.tif"), "--weights", "onnx"], cwd=work)
    wall_big, rss_big = run_timed([*cli, str(big_tif), "-o", str(work / "o_big.tif"), "--weights", "onnx"], cwd=work)
    _, rss_stack = run_timed([*cli, str(stack_tif), "-o", str(work / "o_stack.tif"), "--weights", "onnx",
                              "--overwrite"], cwd=work)  # fmt: skip
    print(f"peak RSS: 256² {rss_small} MiB, {big_side}² {rss_big} MiB ({wall_big:.0f} s), stack {rss_stack} MiB")

    # ---- report ----
    md = [f"## Prediction ({time.strftime('%Y-%m-%d')}{', --quick' if quick else ''})", ""]
    md.append(f"Machine: {machine()}. Package: `{package.name}` (depth {depth}, {filters} filters, halo {halo} px),"
              f" inputs at {PX_NM:g} nm/px (rescale factor 1), default tile {DEFAULT_TILE} px. The machine was"
              " shared with other jobs while this ran: each time is the best of the runs noted.")  # fmt: skip
    md += ["", f"### End to end vs the bare ONNX Runtime session ({side}×{side} plane, {n_stack}×{stack_side}×"
           f"{stack_side} stack)", ""]  # fmt: skip
    md.append("Wall time of the whole `cristae-zoo predict` process (Python start-up, package validation, model"
              " loading, reading, per-plane percentiles, rescale, tiles with halo, writing; ONNX: best of 2 runs)"
              " against one warm `InferenceSession.run` per plane on the already-normalised, untiled array (best of"
              " the runs before and after).")  # fmt: skip
    md += ["", table(["path", "input", "seconds", "Mpx/s", "overhead vs bare"], rows), ""]
    md += ["### Weights formats (one process, model loaded once)", ""]
    md += [table(["weights", "load + first call (s)", f"Mpx/s on {side}² (steady)", "vs ONNX"], fmt_rows), ""]
    md += [f"Tile size on the {side}² plane (ONNX, model loaded; the default is now 1152 = 1024 + 2 × halo; the"
           f" results differ by at most {tile_diff:.1e}):", ""]
    md += [table(["tile (px, halo included)", "tiles", "Mpx/s"], tile_rows), ""]
    md += ["Batching small planes (40×256², ONNX, in-process `restore_path` including model load):", ""]
    md += [table(["planes per call", "Mpx/s"], batch_rows), ""]
    if care_rows:
        md += ["### vs CSBDeep `CARE.predict` (same architecture, same 2×2 tiles, same percentile normalisation)", ""]
        md += [table(["predictor", "Mpx/s", "speed vs CARE"], care_rows), ""]
        md.append(f"Parameters: ours {keras_params:,}, CARE's {care_params:,} (same U-Net: depth {depth}, "
                  f"{filters} first filters, 3×3 kernels, residual).")  # fmt: skip
        md.append("")
    md += ["### FLOPs and the CPU's peak", ""]
    md.append(f"- Network: {flops / 1e3:.0f} kFLOP per output pixel (multiply-adds × 2; {params:,} parameters"
              f" counted by the same walk, Keras says {keras_params:,}).")  # fmt: skip
    md.append(f"- Best steady throughput {best:.3f} Mpx/s → {achieved:.1f} GFLOP/s.")
    md.append(f"- Peak: float32 GEMM (NumPy/BLAS 4096³) {gemm:.1f} GFLOP/s → inference reaches"
              f" {achieved / gemm:.0%} of it" + (f"; theoretical {theoretical:.0f} GFLOP/s ({cores} cores × 2 FMA ×"
              f" 8 lanes × 2 × {ghz:.2f} GHz) → {achieved / theoretical:.0%}." if theoretical else "."))  # fmt: skip
    md += ["", "### Peak memory (max RSS of the whole process)", ""]
    md += [table(["input", "peak RSS (MiB)", "seconds"], [
        ["256×256 plane (baseline: Python, libraries, model)", rss_small, "—"],
        [f"{big_side}×{big_side} plane", rss_big, f"{wall_big:.0f}"],
        [f"{n_stack}×{stack_side}×{stack_side} stack", rss_stack, "—"],
    ])]  # fmt: skip
    md += [""] + [f"- {n}" for n in notes]
    write_section("prediction", "\n".join(md))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
