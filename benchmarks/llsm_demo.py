"""A lattice light-sheet-like 3D+t stack restored end to end with `cristae-zoo predict --rescale auto`.

The stack is generated (nothing is downloaded): 20 time points × 15 planes × 512 × 512, uint16, mitochondria
~4.5 px wide (simulated at 25 nm/px with the training widths, then shrunk 3.5×), spread over a few depths with a
defocus blur growing away from each one's focal plane, drifting slowly over time, a diffraction-limited blur
(~300 nm FWHM), low signal (peaks of ~25 photons), an offset of 100 counts, Poisson and read noise. The file is
an ImageJ hyperstack with its pixel size (87.5 nm), z step and frame interval in the metadata; `--rescale auto`
ignores the pixel size and measures the mitochondria instead.

Usage: python benchmarks/llsm_demo.py [--package DIR] [--work DIR] [--small]
Writes docs/images/llsm_demo_preview.png and the "llsm-demo" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from _report import ROOT, default_package, machine, run_timed, table, write_section  # noqa: E402

SHRINK = 3.5  # 25 nm/px × 3.5 = 87.5 nm/px: 15.6 px wide mitochondria become ~4.5 px
OFFSET = 100


def make_stack(t: int, z: int, size: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """uint16 (T, Z, Y, X) and the mean drawn width (px at the stack's scale) of its mitochondria."""
    from cristae_zoo.config import SimulationConfig
    from cristae_zoo.data.simulate import simulate_image
    from cristae_zoo.rescale import resample

    rng = np.random.default_rng(seed)
    hr_size = round(size * SHRINK)
    config = SimulationConfig(height=hr_size, width=hr_size, seed=seed, coverage=(0.08, 0.12))
    depths = np.linspace(2, z - 3, 4)  # four layers of mitochondria at different depths
    layers, widths = [], []
    for k in range(len(depths)):
        im = simulate_image(config, k)
        signal = np.clip(im.hr - config.offset, 0, None)  # photon counts of the HR image, offset removed
        layers.append(resample(signal.astype(np.float32), (size, size)))  # a coarser pixel averages them
        widths += im.widths_px
    psf_sigma = 300 / 2.355 / (25 * SHRINK)  # ~300 nm FWHM at 87.5 nm/px
    drift = rng.normal(0, 0.25, size=(len(layers), 2))  # px per time point, per layer
    stack = np.empty((t, z, size, size), np.uint16)
    for ti in range(t):
        moved = [ndi.shift(layer, drift[k] * ti, order=1, mode="reflect") for k, layer in enumerate(layers)]
        for zi in range(z):
            plane = np.zeros((size, size), np.float32)
            for k, layer in enumerate(moved):
                dz = abs(zi - depths[k])
                defocus = math.sqrt(psf_sigma**2 + (1.2 * dz) ** 2)
                plane += ndi.gaussian_filter(layer, defocus) * math.exp(-0.5 * (dz / 1.5) ** 2)
            expected = 25 * plane / np.percentile(np.stack(layers), 99.9) + 3  # low signal, some background
            counts = rng.poisson(np.clip(expected, 0, None)) + OFFSET + rng.normal(0, 2.0, plane.shape)
            stack[ti, zi] = np.clip(np.round(counts), 0, 65535).astype(np.uint16)
    return stack, float(np.mean(widths)) / SHRINK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cz_llsm_demo"))
    parser.add_argument("--small", action="store_true", help="2×3×256×256 (a smoke test of this script)")
    parser.add_argument("--weights", default=None)
    args = parser.parse_args()
    package = (args.package or default_package()).resolve()
    t, z, size = (2, 3, 256) if args.small else (20, 15, 512)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    import tifffile

    start = time.perf_counter()
    stack, true_width = make_stack(t, z, size)
    px_um = 25 * SHRINK / 1000
    src = work / "llsm_like.tif"
    tifffile.imwrite(src, stack, imagej=True, resolution=(1 / px_um, 1 / px_um),
                     metadata={"axes": "TZYX", "unit": "um", "spacing": 0.3, "finterval": 1.31})  # fmt: skip
    print(f"stack {stack.shape} {stack.dtype} in {time.perf_counter() - start:.0f} s; true mean width"
          f" {true_width:.2f} px; median {np.median(stack):.0f}, p99.9 {np.percentile(stack, 99.9):.0f}", flush=True)

    exe = Path(sys.executable).parent / "cristae-zoo"
    cmd = [str(exe) if exe.exists() else "cristae-zoo", "predict", str(package), str(src), "-o",
           str(work / "llsm_restored.tif"), "--rescale", "auto", "--preview", "--overwrite"]  # fmt: skip
    if args.weights:
        cmd += ["--weights", args.weights]
    est = subprocess.run(["cristae-zoo", "estimate-scale", str(src)], capture_output=True, text=True, check=True)
    estimate_line = [ln for ln in est.stdout.splitlines() if ln.startswith(str(src))][0]
    wall, rss = run_timed(cmd, cwd=work)
    from cristae_zoo.acquisition import open_acquisition

    out = open_acquisition(work / "llsm_restored.tif")
    info = json.loads(out.metadata["imagej"]["Info"].split("cristae_zoo = ")[1])
    factor = info["rescale_factor"]
    n_px = math.prod(out.shape)
    preview = work / "llsm_restored.preview.png"
    dest = ROOT / "docs" / "images" / ("llsm_demo_preview_small.png" if args.small else "llsm_demo_preview.png")
    dest.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    with Image.open(preview) as im:  # the full-size preview is ~6 MB; 800 px wide keeps the repository small
        im.convert("RGB").resize((800, round(im.size[1] * 800 / im.size[0])), Image.LANCZOS).save(dest, optimize=True)
    right = 15.64 / true_width
    print(f"factor {factor} (right: {right:.2f}), {wall:.0f} s, peak RSS {rss} MiB, {out.shape}", flush=True)
    md = [
        f"## Lattice light-sheet-like 3D+t stack, `predict --rescale auto` ({time.strftime('%Y-%m-%d')}"
        f"{', --small' if args.small else ''})",
        "",
        f"Machine: {machine()}. Generated by `benchmarks/llsm_demo.py`: {t} time points × {z} planes × {size} ×"
        f" {size}, uint16, offset {OFFSET}, peaks of ~25 photons, mitochondria {true_width:.2f} px wide on average"
        f" (drawn), metadata pixel size {25 * SHRINK:g} nm.",
        "",
        "```",
        " ".join(["cristae-zoo"] + cmd[1:]).replace(str(package), package.name).replace(str(work) + "/", ""),
        "```",
        "",
        table(["", ""], [
            ["`estimate-scale` says", estimate_line.split(": ", 1)[1]],
            ["factor chosen by `--rescale auto`", f"{factor} (the right one: 15.64 / {true_width:.2f} = {right:.2f};"
             f" from the pixel size: {25 * SHRINK / 25:.2f})"],
            ["restored stack", f"{' × '.join(f'{a}{n}' for a, n in zip(out.axes, out.shape))} float32,"
             f" {out.pixel_size_nm[1]:.1f} nm/px" if out.pixel_size_nm else ""],
            ["wall time (whole process)", f"{wall:.0f} s ({wall / 60:.1f} min), {n_px / wall / 1e6:.2f} Mpx/s of"
             f" output"],
            ["peak memory (RSS)", f"{rss} MiB"],
            ["weights", info["weights"]],
        ]),  # fmt: skip
        "",
        "`--rescale auto` measures apparent (half-maximum) widths. Here the mitochondria are blurred more, relative to"
        " their width, than the training inputs (a ~300 nm PSF on ~390 nm wide tubes, plus defocus from the planes"
        " around each one), so they read wider than drawn and `auto` picks a smaller factor than the geometric one"
        " (see the estimator section: the training-blur rows are within 15 %, the extra-blur rows show this bias)."
        " With a trusted pixel size in the metadata, leaving `--rescale` out uses it instead (factor pixel size /"
        " 25 nm, as the paper's 4.16 for LLSM).",
        "",
        "What the preview shows: the pipeline runs end to end, but this stack is **outside the model's conditions of use** (docs/trust.md): ~25-photon peaks and a diffraction-limited PSF mean far more blur and noise, relative to the mitochondria, than the training inputs. The restored max projection has the mitochondria sharper but also ring- and worm-like texture in the background and along the tubes that is not in the simulated truth: the hallucination the trust page measures on haze and empty fields. A DeepCristae model for LLSM data needs training data degraded like LLSM data. The wall time was measured while two training jobs shared the 2 cores (load 8–14); unloaded, ONNX restores ~0.5 Mpx/s (prediction section).",
        "",
        f"![LLSM-like demo: raw bottom-left, restored top-right](images/{dest.name})",
    ]
    write_section("llsm-demo" + ("-small" if args.small else ""), "\n".join(md))


if __name__ == "__main__":
    main()
