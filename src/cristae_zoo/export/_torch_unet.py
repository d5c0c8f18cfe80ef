"""The PyTorch twin of `cristae_zoo.models.unet.build_unet` (imported only when exporting TorchScript).

No `from __future__ import annotations` here: TorchScript needs real annotations.
"""

from typing import List

import torch
from torch import nn
from torch.nn import functional as F


class TorchUNet(nn.Module):
    """Same layers and channel order as the Keras U-Net, channel-first: (B, 1, Y, X) in and out."""

    residual: bool

    def __init__(self, depth: int, filters: int, kernel_size: int, residual: bool) -> None:
        super().__init__()
        k, pad = kernel_size, kernel_size // 2
        self.residual = residual
        self.down = nn.ModuleList()
        c_in = 1
        for level in range(depth):
            n = filters * 2**level
            self.down.append(nn.ModuleList([nn.Conv2d(c_in, n, k, padding=pad), nn.Conv2d(n, n, k, padding=pad)]))
            c_in = n
        n = filters * 2**depth
        self.middle = nn.ModuleList([nn.Conv2d(c_in, n, k, padding=pad), nn.Conv2d(n, n // 2, k, padding=pad)])
        c_in = n // 2
        self.up = nn.ModuleList()
        for level in reversed(range(depth)):
            n = filters * 2**level
            out = n // 2 if level > 0 else n
            self.up.append(nn.ModuleList([nn.Conv2d(c_in + n, n, k, padding=pad), nn.Conv2d(n, out, k, padding=pad)]))
            c_in = out
        self.final = nn.Conv2d(c_in, 1, 1)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = input
        skips: List[torch.Tensor] = []
        for convs in self.down:
            for conv in convs:
                x = F.relu(conv(x))
            skips.append(x)
            x = F.max_pool2d(x, 2)
        for conv in self.middle:
            x = F.relu(conv(x))
        i = len(skips) - 1
        for convs in self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = torch.cat([x, skips[i]], dim=1)
            for conv in convs:
                x = F.relu(conv(x))
            i -= 1
        x = self.final(x)
        if self.residual:
            x = x + input
        return x
