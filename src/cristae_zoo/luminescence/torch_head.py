"""The packaged output in PyTorch: mean = channel 0 of the labelfree U-Net twin (+ the input if residual, as CARE).

No `from __future__ import annotations`: TorchScript needs real annotations.
"""

from typing import Any

import torch
from torch import nn


class LaplaceMean(nn.Module):
    """(B, 1, *spatial) → (B, 1, *spatial): the Laplace mean of `network.mean_model`."""

    def __init__(self, unet: nn.Module, residual: bool) -> None:
        super().__init__()
        self.unet = unet
        self.residual = residual

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        mean = self.unet(input)[:, 0:1]
        if self.residual:
            mean = mean + input
        return mean


def build_mean_twin(keras_mean_model: Any, network: Any) -> LaplaceMean:
    """The labelfree twin with the Keras weights copied in, wrapped like the Keras head; eval mode."""
    from cristae_zoo.labelfree.torch_twin import build_twin

    residual = bool(keras_mean_model.get_layer("laplace_mean").residual)
    return LaplaceMean(build_twin(keras_mean_model, network), residual).eval()


class LaplaceOutput(nn.Module):
    """(B, 1, *spatial) → (B, 2, *spatial) = [mean, scale]: the whole Keras `network.build_care` model."""

    def __init__(self, unet: nn.Module, residual: bool, min_scale: float) -> None:
        super().__init__()
        self.unet = unet
        self.residual = residual
        self.min_scale = min_scale

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        raw = self.unet(input)
        mean = raw[:, 0:1]
        if self.residual:
            mean = mean + input
        scale = torch.nn.functional.softplus(raw[:, 1:2]) + self.min_scale
        return torch.cat([mean, scale], dim=1)


def build_laplace_twin(keras_care_model: Any, network: Any) -> LaplaceOutput:
    """The twin of `build_care`'s [mean, scale] model, Keras weights copied in; eval mode."""
    from cristae_zoo.labelfree.torch_twin import build_twin
    from cristae_zoo.luminescence.network import MIN_SCALE

    residual = bool(keras_care_model.get_layer("laplace_head").residual)
    return LaplaceOutput(build_twin(keras_care_model, network), residual, MIN_SCALE).eval()
