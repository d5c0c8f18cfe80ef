"""Every system of the project, registered with `cristae_zoo.core.system` on import.

| name | config | what |
|---|---|---|
| `deepcristae` | `DeepCristaeConfig` | DeepCristae / CARE, 2D STED restoration |
| `labelfree` | `LabelFreeConfig` | transmitted light → mitochondria + DNA (2D or 3D: `network.ndim`) |
| `pssr` | `PSSRConfig` | 4× super-sampling, PSSR-SF / PSSR-MF (`network.n_frames` 1 or 5) |
| `luminescence` | `LuminescenceConfig` | CARE for luminescence, `mode.mode` pairs / binning / noise2noise |
"""

from __future__ import annotations

from cristae_zoo.core.system import register
from cristae_zoo.systems.deepcristae import DeepCristae, DeepCristaeConfig
from cristae_zoo.systems.labelfree import LabelFree, LabelFreeConfig
from cristae_zoo.systems.luminescence import Luminescence, LuminescenceConfig
from cristae_zoo.systems.pssr import PSSR, PSSRConfig

for _system in (DeepCristae(), LabelFree(), PSSR(), Luminescence()):
    register(_system)

__all__ = [
    "DeepCristae", "DeepCristaeConfig", "LabelFree", "LabelFreeConfig", "Luminescence", "LuminescenceConfig",
    "PSSR", "PSSRConfig",
]  # fmt: skip
