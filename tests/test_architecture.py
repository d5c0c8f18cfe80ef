"""The shape of the code: no import cycles, CLI command groups independent, the library never importing the CLI,
the core knowing no system (import-linter contracts in .importlinter), and a CLI whose start-up imports none of the
heavy runtimes (TensorFlow, Keras, PyTorch, bioimageio) — they are imported by the commands that need them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint), "--config", str(ROOT / ".importlinter")], capture_output=True, text=True,
                          cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_cli_start_up_imports_no_heavy_runtime():
    code = (
        "import sys, cristae_zoo.cli, cristae_zoo.api;"
        "heavy = [m for m in ('tensorflow', 'keras', 'torch', 'bioimageio.core', 'bioimageio.spec', 'tf2onnx',"
        " 'matplotlib', 'dask', 'distributed') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_every_system_is_registered_with_its_own_config():
    from cristae_zoo.core.system import systems

    found = systems()
    assert set(found) == {"deepcristae", "labelfree", "pssr", "luminescence"}
    for name, system in found.items():
        assert system.name == name
        assert system.config_class.model_fields["system"].default == name
