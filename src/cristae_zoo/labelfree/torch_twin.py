"""PyTorch twin of `network.build_labelfree_unet` (2D and 3D), with the Keras weights copied in.

Kernel layouts: Keras Conv (k.., in, out) → torch Conv (out, in, k..); Keras ConvTranspose (k.., out, in) →
torch ConvTranspose (in, out, k..), no spatial flip (both are the adjoint of a cross-correlation; checked
numerically in the tests). BatchNorm: gamma, beta, moving mean/variance and Keras' epsilon (1e-3).
No `from __future__ import annotations`: TorchScript needs real annotations.
"""

from typing import Any, List

import numpy as np
import torch
from torch import nn

from cristae_zoo.errors import CristaeZooError
from cristae_zoo.labelfree.network import LabelFreeNetworkConfig, layer_sequence


class TwinBlock(nn.Module):
    def __init__(self, layer: nn.Module, bn: nn.Module, relu: bool) -> None:
        super().__init__()
        self.layer = layer
        self.bn = bn
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.layer(x))
        if self.relu:
            x = torch.relu(x)
        return x


class LabelFreeTwin(nn.Module):
    """(B, 1, [Z,] Y, X) in, (B, n_out, [Z,] Y, X) out."""

    def __init__(self, config: LabelFreeNetworkConfig) -> None:
        super().__init__()
        Conv = nn.Conv2d if config.ndim == 2 else nn.Conv3d
        TConv = nn.ConvTranspose2d if config.ndim == 2 else nn.ConvTranspose3d
        BN = nn.BatchNorm2d if config.ndim == 2 else nn.BatchNorm3d
        f, d = config.filters, config.depth

        def blk(layer: nn.Module, n: int) -> TwinBlock:
            return TwinBlock(layer, BN(n, eps=1e-3), True)

        self.down = nn.ModuleList()
        c = 1
        for level in range(d):
            n = f * 2**level
            self.down.append(
                nn.ModuleList([blk(Conv(c, n, 3, padding=1), n), blk(Conv(n, n, 3, padding=1), n),
                               blk(Conv(n, 2 * n, 2, stride=2), 2 * n)])
            )
            c = 2 * n
        n = f * 2**d
        self.bottom = nn.ModuleList([blk(Conv(c, n, 3, padding=1), n), blk(Conv(n, n, 3, padding=1), n)])
        c = n
        self.up = nn.ModuleList()
        for level in reversed(range(d)):
            n = f * 2**level
            self.up.append(
                nn.ModuleList([blk(TConv(c, n, 2, stride=2), n), blk(Conv(2 * n, n, 3, padding=1), n),
                               blk(Conv(n, n, 3, padding=1), n)])
            )
            c = n
        self.final = TwinBlock(Conv(c, config.n_out, 3, padding=1), nn.Identity(), False)

    def ordered_blocks(self) -> List[TwinBlock]:
        blocks = [b for level in self.down for b in level] + list(self.bottom)
        return blocks + [b for level in self.up for b in level] + [self.final]

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = input
        skips: List[torch.Tensor] = []
        for level in self.down:
            i = 0
            for b in level:
                if i == 2:
                    skips.append(x)
                x = b(x)
                i += 1
        for b in self.bottom:
            x = b(x)
        k = len(skips) - 1
        for level in self.up:
            i = 0
            for b in level:
                x = b(x)
                if i == 0:
                    x = torch.cat([x, skips[k]], dim=1)
                i += 1
            k -= 1
        return self.final(x)


def build_twin(keras_model: Any, config: LabelFreeNetworkConfig) -> LabelFreeTwin:
    """The twin with every Keras weight copied in, in eval mode."""
    twin = LabelFreeTwin(config)
    nd = config.ndim
    with torch.no_grad():
        for (name, _kind, has_bn), block in zip(layer_sequence(config), twin.ordered_blocks(), strict=True):
            try:
                kernel, bias = (np.asarray(w, np.float32) for w in keras_model.get_layer(name).get_weights())
            except ValueError:
                raise CristaeZooError(f"Keras model has no layer {name!r}: not a labelfree U-Net for {config!r}") from None
            # conv: Keras (k.., in, out) -> torch (out, in, k..); transposed conv ("up"): Keras (k.., out, in) ->
            # torch (in, out, k..). The same axis permutation in both cases, and no spatial flip.
            kernel = np.transpose(kernel, (nd + 1, nd) + tuple(range(nd)))
            if tuple(kernel.shape) != tuple(block.layer.weight.shape):
                raise CristaeZooError(
                    f"Keras layer {name!r} has kernel {kernel.shape} (torch order), the twin expects"
                    f" {tuple(block.layer.weight.shape)}: the network config does not match the weights"
                )
            block.layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
            block.layer.bias.copy_(torch.from_numpy(bias))
            if has_bn:
                bn = keras_model.get_layer(f"{name}_bn")
                gamma, beta, mean, var = (np.asarray(w, np.float32) for w in bn.get_weights())
                block.bn.weight.copy_(torch.from_numpy(gamma))
                block.bn.bias.copy_(torch.from_numpy(beta))
                block.bn.running_mean.copy_(torch.from_numpy(mean))
                block.bn.running_var.copy_(torch.from_numpy(var))
                block.bn.eps = float(bn.epsilon)
    return twin.eval()
