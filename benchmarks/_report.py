"""Shared helpers of the benchmarks: machine facts, timing, and writing one section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Run on demand, not in the test suite. Each script rewrites its own section of this file (between its BEGIN/END
markers); every ratio in a section comes from one run of its script on one machine.

```bash
pip install -e ".[bench]"
python benchmarks/bench_predict.py       # throughput, weights formats, CSBDeep, FLOPs, peak memory
python benchmarks/estimator_check.py     # --rescale auto: width estimator vs known widths
python benchmarks/llsm_demo.py           # a lattice light-sheet-like 3D+t stack end to end
```
"""


def default_package() -> Path:
    """The shipped DeepCristae package, else a local build (`cristae-zoo package runs/deepcristae -o /tmp/dc_pkg`)."""
    env = os.environ.get("CRISTAE_ZOO_BENCH_PACKAGE")
    for candidate in ([Path(env)] if env else []) + [ROOT / "model_zoo" / "deepcristae", Path("/tmp/dc_pkg")]:
        if (candidate / "rdf.yaml").is_file():
            return candidate
    sys.exit("no package: set CRISTAE_ZOO_BENCH_PACKAGE or run `cristae-zoo package runs/deepcristae -o /tmp/dc_pkg`")


def machine() -> str:
    cpu = "?"
    flags = ""
    mhz = None
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"model name\s*:\s*(.*)", text).group(1)  # type: ignore[union-attr]
        flags = re.search(r"flags\s*:\s*(.*)", text).group(1)  # type: ignore[union-attr]
        mhz = float(re.search(r"cpu MHz\s*:\s*(.*)", text).group(1))  # type: ignore[union-attr]
    except (OSError, AttributeError):
        pass
    simd = "AVX-512" if "avx512f" in flags else "AVX2+FMA" if "avx2" in flags and "fma" in flags else "?"
    freq = f", {mhz / 1000:.2f} GHz" if mhz else ""
    load = os.getloadavg()[0]
    return (f"{cpu}, {os.cpu_count()} cores{freq}, {simd}; Python {platform.python_version()}; load average at"
            f" the end {load:.1f}")  # fmt: skip


def cpu_freq_ghz() -> float | None:
    try:
        return float(re.search(r"cpu MHz\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)) / 1000  # type: ignore[union-attr]
    except (OSError, AttributeError):
        return None


def median_time(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


_PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def run_timed(cmd: list[str], cwd: Path | None = None) -> tuple[float, int]:
    """Wall time (s) and peak RSS (MiB) of a child process. A small wrapper process starts it and reads its rusage:
    a child forked straight from this (large) benchmark process would count this process's memory as its own."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PEAK_RSS, *cmd], cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}); run it by hand to see why")
    return wall, int(proc.stdout.strip().splitlines()[-1]) // 1024


def write_section(name: str, markdown: str) -> None:
    """Replace the section `name` of docs/benchmarks.md (created with a header if missing)."""
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    text = REPORT.read_text() if REPORT.exists() else HEADER
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    REPORT.write_text(text)
    print(f"wrote section {name!r} of {REPORT}")


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
