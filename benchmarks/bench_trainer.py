"""The one trainer's throughput against a bare `model.fit` of the same network on the same batches (issue 15).

DeepCristae (residual U-Net, depth 3, 32 filters, SCoP loss, Adam, batch 16 of 128² patches) on a small simulated
D_synt. The anchor is Keras' own `model.fit` over the exact batches the trainer draws (pre-drawn with the same
random generator, so the data work is not counted for it); the trainer's time is its own clock at its one
validation (`history.csv` `seconds`: every step including drawing and augmenting the batches, excluding the
validation and the checkpoint). Every run is a fresh process, so both pay the same start-up inside the timed
part (one tf.function tracing, TensorFlow's first kernels): warm-up is included for both, none is inherited from an
earlier run (measured in one process, the trainer ran after `fit` had warmed TensorFlow up and looked 1.7× faster
on 12 steps). Runs are interleaved and the median kept.

Usage: python benchmarks/bench_trainer.py [--steps 48] [--repeat 3]   (writes the "trainer" section of
docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _report import machine, table, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_data(root: Path) -> Path:
    cz = str(Path(sys.executable).parent / "cristae-zoo")
    subprocess.run([cz, "simulate", str(root / "sim"), "--n-images", "6", "--size", "384", "--seed", "3"], check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run([cz, "prepare", str(root / "sim" / "hr"), "-o", str(root / "data"), "--n-test", "1"], check=True,
                   capture_output=True)  # fmt: skip
    return root / "data"


def config_for(data: Path, steps: int):
    from cristae_zoo.core.system import get_system

    return get_system("deepcristae").config_class(data_dir=data, epochs=1, steps_per_epoch=steps, batch_size=16)


def run_trainer(data: Path, steps: int, out: Path) -> float:
    from cristae_zoo.core.trainer import train

    result = train(config_for(data, steps), out, overwrite=True)
    return float(result.history[-1]["seconds"])


def run_bare_fit(data: Path, steps: int) -> float:
    from cristae_zoo.core.system import get_system

    system = get_system("deepcristae")
    config = config_for(data, steps)
    batches = system.training_data(config)
    rng = np.random.default_rng(config.seed)
    drawn = [batches.train_batch(rng) for _ in range(steps)]
    x = np.concatenate([b[0] for b in drawn])
    y = np.concatenate([b[1] for b in drawn])
    model = system.build_keras(config)
    model.compile(optimizer=system.optimizer(config), loss=system.loss(config))
    t = time.perf_counter()
    model.fit(x, y, batch_size=config.batch_size, epochs=1, shuffle=False, verbose=0)
    return time.perf_counter() - t


def child(kind: str, data: Path, steps: int, out: Path) -> None:
    """One timed run in this (fresh) process; prints its seconds."""
    seconds = run_bare_fit(data, steps) if kind == "fit" else run_trainer(data, steps, out)
    print(f"SECONDS {seconds}")


def fresh(kind: str, data: Path, steps: int, out: Path) -> float:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(data), str(steps), str(out)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} run failed:\n{proc.stderr[-2000:]}")
    return float([line for line in proc.stdout.splitlines() if line.startswith("SECONDS")][-1].split()[1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        data = make_data(tmp)
        bare, ours = [], []
        for i in range(args.repeat):
            bare.append(fresh("fit", data, args.steps, tmp / f"model{i}"))
            ours.append(fresh("trainer", data, args.steps, tmp / f"model{i}"))
            print(f"run {i}: fit {bare[-1]:.1f} s, trainer {ours[-1]:.1f} s", flush=True)
    b, o = float(np.median(bare)), float(np.median(ours))
    patches = 16 * args.steps
    rows = [["bare `model.fit` (anchor)", f"{b:.1f}", f"{patches / b:.1f}", "1.00×", ", ".join(f"{t:.1f}" for t in bare)],
            ["cristae-zoo trainer", f"{o:.1f}", f"{patches / o:.1f}", f"**{b / o:.2f}×**",
             ", ".join(f"{t:.1f}" for t in ours)]]  # fmt: skip
    write_section("trainer", "## The one trainer vs a bare `model.fit` (issue 15)\n\n"
                  f"Machine: {machine()}. DeepCristae U-Net (depth 3, 32 filters), SCoP, Adam, batch 16 of 128²"
                  f" patches, {args.steps} steps, median of {args.repeat} interleaved runs, each in a fresh process"
                  " (warm-up included for both); the same batches (pre-drawn for `fit`, drawn and augmented on the fly"
                  " by the trainer).\n\n"
                  + table(["", "seconds", "patches/s", "speed vs bare fit", "all runs (s)"], rows)
                  + "\n\nNo GPU was available to this session, so the GPU comparison was not run.")  # fmt: skip


if __name__ == "__main__":
    main()
