"""TorchScript weights (`torchscript`), for ilastik, whose runtime has neither TensorFlow nor ONNX Runtime.

The system's PyTorch twin (its Keras weights copied in) is compiled with `torch.jit.trace`, not `torch.jit.script`:
scripting compiles every branch of library functions such as `F.interpolate`, which puts ops like
`aten::_upsample_lanczos2d_aa` into the saved graph, and older runtimes refuse to load a graph naming an op they do
not know (ilastik pins torch 2.7, the bioimage.io website runner 2.5: "Unknown builtin op"). A trace records only
the ops that ran. The twins have no data-dependent control flow, and the traced sizes stay symbolic (interpolation
by a scale factor, convolutions, concatenation), so batch and spatial sizes stay dynamic; `bioimageio test` checks
other sizes and batch sizes.

`build_torch_unet` / `copy_keras_weights`: the DeepCristae (CARE U-Net) twin. torch is imported lazily: it is
needed to export, never to predict with the other formats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cristae_zoo.config import NetworkConfig
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.export.base import ExportContext, WeightsExporter
from cristae_zoo.io import atomic_path

#: torch versions of the clients the TorchScript weights must load in (ilastik 2.7, the website runner 2.5)
OLD_TORCH_VERSIONS = ("2.7", "2.5")


def _require_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise CristaeZooError(
            "TorchScript export needs PyTorch: pip install 'torch==2.13.0' (CPU wheel), or the 'export' extra"
        ) from None
    return torch


def conv_layer_names(network: NetworkConfig) -> list[str]:
    """Names of the Keras conv layers, in the order the twin creates its convs."""
    names = [f"down{level}_conv{i}" for level in range(network.depth) for i in (0, 1)]
    names += ["middle_conv0", "middle_conv1"]
    names += [f"up{level}_conv{i}" for level in reversed(range(network.depth)) for i in (0, 1)]
    return names + ["final_conv"]


def build_torch_unet(network: NetworkConfig) -> Any:
    """The PyTorch twin of `build_unet(network)`: same layers, same channel order, (B, 1, Y, X) in and out."""
    _require_torch()
    if network.kernel_size % 2 != 1:
        raise CristaeZooError(
            f"kernel_size {network.kernel_size}: TorchScript export supports odd kernel sizes only (Keras 'same'"
            " padding is asymmetric for even kernels)"
        )
    from cristae_zoo.export._torch_unet import TorchUNet

    return TorchUNet(network.depth, network.filters, network.kernel_size, network.residual)


def copy_keras_weights(torch_model: Any, keras_model: Any, network: NetworkConfig) -> Any:
    """Copy every Keras Conv2D kernel (H, W, I, O) → (O, I, H, W) and bias into the twin."""
    torch = _require_torch()
    convs = [c for pair in torch_model.down for c in pair]
    convs += list(torch_model.middle)
    convs += [c for pair in torch_model.up for c in pair]
    convs.append(torch_model.final)
    names = conv_layer_names(network)
    with torch.no_grad():
        for name, conv in zip(names, convs, strict=True):
            try:
                layer = keras_model.get_layer(name)
            except ValueError:
                raise CristaeZooError(
                    f"Keras model has no layer {name!r}: expected the architecture of cristae_zoo.models.unet"
                    f" for {network!r}"
                ) from None
            kernel, bias = (np.asarray(w, dtype=np.float32) for w in layer.get_weights())
            kernel = np.transpose(kernel, (3, 2, 0, 1))
            if tuple(kernel.shape) != tuple(conv.weight.shape):
                raise CristaeZooError(
                    f"Keras layer {name!r} has kernel {kernel.shape} (OIHW), the twin expects"
                    f" {tuple(conv.weight.shape)}: the network config does not match weights.keras"
                )
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
            conv.bias.copy_(torch.from_numpy(bias))
    return torch_model.eval()


def old_torch_problems(weights: Path) -> list[str]:
    """Why torch 2.5/2.7 could not load these weights (ops or file format they lack), from `cristae_zoo.clients`'
    measured op lists; empty when they load."""
    from cristae_zoo.clients import torchscript_problems

    return sorted({p for v in OLD_TORCH_VERSIONS for p in torchscript_problems(Path(weights), v)})


class TorchscriptExporter(WeightsExporter):
    weights_format: ClassVar[str] = "torchscript"
    title: ClassVar[str] = "TorchScript"
    file_name: ClassVar[str] = "weights_torchscript.pt"
    parent: ClassVar[str | None] = "tensorflow_saved_model_bundle"

    def export(self, ctx: ExportContext, dest: Path, x: np.ndarray) -> Path:
        torch = _require_torch()
        if ctx.torch_twin is None:
            raise CristaeZooError("this system has no PyTorch twin: TorchScript weights cannot be exported")
        twin = ctx.torch_twin().eval()
        example = torch.from_numpy(np.ascontiguousarray(x[:1], dtype=np.float32))
        with torch.no_grad():
            traced = torch.jit.trace(twin, example, check_trace=False)
        with atomic_path(Path(dest)) as tmp:
            torch.jit.save(traced, str(tmp))
        problems = old_torch_problems(Path(dest))
        if problems:
            raise CristaeZooError(f"{dest}: {'; '.join(problems)}")
        return Path(dest)

    def predict(self, weights: Path, x: np.ndarray) -> np.ndarray:
        torch = _require_torch()
        model = torch.jit.load(str(weights), map_location="cpu").eval()
        with torch.no_grad():
            y = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return y.numpy().astype(np.float32)

    def versions(self) -> dict[str, str]:
        torch = _require_torch()
        return {"pytorch_version": torch.__version__.split("+")[0]}

    def weights_descr(self, source: Path, versions: dict[str, str], parent: str | None) -> Any:
        from bioimageio.spec.model.v0_5 import TorchscriptWeightsDescr, Version

        return TorchscriptWeightsDescr(
            source=source,
            pytorch_version=Version(versions["pytorch_version"]),
            parent=parent,
            comment="PyTorch twin of the Keras network with the Keras weights copied in, torch.jit.trace (no"
            " scripted library branches: loads in torch 2.5/2.7, e.g. ilastik).",
        )
