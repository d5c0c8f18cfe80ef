"""PyTorch twin of `network.build_pssr`, with the Keras weights copied in (for TorchScript / ilastik).

Sub-pixel order: `tf.nn.depth_to_space` (NHWC) reads channel (i·r + j)·C + c into output channel c at phase (i, j)
("DCR"); `torch.pixel_shuffle` (NCHW) reads channel c·r² + i·r + j ("CRD"). The twin keeps `pixel_shuffle` and
permutes the output channels of the conv in front of it (kernel and bias) from DCR to CRD when copying; the ReLU
between them is elementwise, so the permutation commutes with it. Bilinear ×4: TF's half-pixel resize =
`interpolate(align_corners=False)`. No `from __future__ import annotations`: TorchScript needs real annotations.
"""

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cristae_zoo.errors import CristaeZooError
from cristae_zoo.pssr.network import PSSRNetworkConfig


def dcr_to_crd(channels: int, block: int) -> np.ndarray:
    """Index array p with crd[k] = dcr[p[k]]: CRD channel c·r² + i·r + j comes from DCR channel (i·r + j)·C + c."""
    c_out = channels // (block * block)
    c, ij = np.divmod(np.arange(channels), block * block)
    return ij * c_out + c


class ResBlock(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(n, n, 3, padding=1)
        self.conv1 = nn.Conv2d(n, n, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv1(torch.relu(self.conv0(x))))


class SubPixelUp(nn.Module):
    def __init__(self, cin: int, cout: int, blur: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, 4 * cout, 3, padding=1)
        self.blur = blur

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pixel_shuffle(torch.relu(self.conv(x)), 2)
        if self.blur:  # zero-order hold: replicate top/left, 2×2 mean, stride 1
            x = F.avg_pool2d(F.pad(x, (1, 0, 1, 0), mode="replicate"), 2, stride=1)
        return x


class UpLevel(nn.Module):
    def __init__(self, cin: int, n: int, blur: bool) -> None:
        super().__init__()
        self.up = SubPixelUp(cin, n, blur)
        self.merge = nn.Conv2d(2 * n, n, 1)
        self.res = ResBlock(n)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.up(x), skip], dim=1)
        return self.res(torch.relu(self.merge(x)))


class PSSRTwin(nn.Module):
    """(B, n_frames, h, w) in, (B, 1, 4h, 4w) out."""

    def __init__(self, config: PSSRNetworkConfig) -> None:
        super().__init__()
        f, d = config.filters, config.depth
        self.stem = nn.Conv2d(config.n_frames, f, 3, padding=1)
        self.enc = nn.ModuleList([ResBlock(f * 2**level) for level in range(d)])
        self.down = nn.ModuleList([nn.Conv2d(f * 2**level, f * 2 ** (level + 1), 2, stride=2) for level in range(d)])
        self.bottom = ResBlock(f * 2**d)
        self.dec = nn.ModuleList([UpLevel(f * 2 ** (level + 1), f * 2**level, config.blur) for level in reversed(range(d))])
        head, c = [], f
        for _ in range(config.head_stages):
            head.append(SubPixelUp(c, config.head_filters, config.blur))
            c = config.head_filters
        self.head = nn.ModuleList(head)
        self.final = nn.Conv2d(c, 1, 3, padding=1)
        self.middle = config.n_frames // 2
        self.scale = float(config.scale)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(input))
        skips: list[torch.Tensor] = []
        for enc, down in zip(self.enc, self.down):
            x = enc(x)
            skips.append(x)
            x = torch.relu(down(x))
        x = self.bottom(x)
        k = len(skips) - 1
        for level in self.dec:
            x = level(x, skips[k])
            k -= 1
        for up in self.head:
            x = up(x)
        base = input[:, self.middle : self.middle + 1]
        base = F.interpolate(base, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.final(x) + base


def _pairs(twin: PSSRTwin, config: PSSRNetworkConfig) -> list[tuple[str, nn.Conv2d, bool]]:
    """(Keras layer name, torch conv, is a sub-pixel conv) in a fixed order."""
    res = lambda name, b: [(f"{name}_conv0", b.conv0, False), (f"{name}_conv1", b.conv1, False)]
    out = [("stem", twin.stem, False)]
    for level in range(config.depth):
        out += res(f"enc{level}_res0", twin.enc[level]) + [(f"down{level}", twin.down[level], False)]
    out += res("bottom_res0", twin.bottom)
    for i, level in enumerate(reversed(range(config.depth))):
        u = twin.dec[i]
        out += [(f"up{level}_shuffle_conv", u.up.conv, True), (f"up{level}_merge", u.merge, False)]
        out += res(f"dec{level}_res0", u.res)
    out += [(f"head{k}_shuffle_conv", up.conv, True) for k, up in enumerate(twin.head)]
    return out + [("final_conv", twin.final, False)]


def build_twin(keras_model: Any, config: PSSRNetworkConfig) -> PSSRTwin:
    """The twin with every Keras kernel (HWIO → OIHW) and bias copied in, in eval mode."""
    twin = PSSRTwin(config)
    with torch.no_grad():
        for name, conv, shuffle in _pairs(twin, config):
            try:
                kernel, bias = (np.asarray(w, np.float32) for w in keras_model.get_layer(name).get_weights())
            except ValueError:
                raise CristaeZooError(f"Keras model has no layer {name!r}: not a PSSR network for {config!r}") from None
            kernel = np.transpose(kernel, (3, 2, 0, 1))
            if shuffle:
                order = dcr_to_crd(kernel.shape[0], 2)
                kernel, bias = kernel[order], bias[order]
            if tuple(kernel.shape) != tuple(conv.weight.shape):
                raise CristaeZooError(f"Keras layer {name!r} has kernel {kernel.shape} (OIHW), the twin expects"
                                      f" {tuple(conv.weight.shape)}: the network config does not match the weights")  # fmt: skip
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
            conv.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias)))
    return twin.eval()
