"""CARE network for luminescence: the project's 2D/3D U-Net (`labelfree.network`) with CARE's probabilistic head.

The backbone (two 3×3(×3) convs per level, stride-2 convs down, transposed convs up, batch norm) is reused as it
is, with 2 output channels, so its PyTorch twin (`labelfree.torch_twin`) exports it to TorchScript. On top, as in
CSBDeep's probabilistic CARE: mean = channel 0 and Laplace scale = softplus(channel 1) + a floor (a zero scale
would make the loss infinite). CSBDeep's residual mean (input + channel 0) is an option, off by default: on
photon-starved inputs (mostly shot noise) the identity path is a poor start, and in a few hundred steps the
residual networks stayed next to the input (PSNR/Pearson of the input; runs/luminescence, first attempt).
Output: (B, *spatial, 2) = [mean, scale]; `mean_model` gives (B, *spatial, 1), the packaged output.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from cristae_zoo.labelfree.network import LabelFreeNetworkConfig, build_labelfree_unet

#: floor of the predicted scale (normalised intensity units)
MIN_SCALE = 1e-3


@cache
def head_class() -> Any:
    """The `LaplaceHead` layer class, defined and registered once (keras is imported lazily)."""
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="cristae_zoo")
    class LaplaceHead(keras.layers.Layer):
        """[raw (B, …, 2), input (B, …, 1)] → mean = raw₀ (+ input if residual), scale = softplus(raw₁) + MIN_SCALE."""

        def __init__(self, mean_only: bool = False, residual: bool = False, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.mean_only = mean_only
            self.residual = residual

        def call(self, inputs: list[Any]) -> Any:
            raw, x = inputs
            mean = x + raw[..., 0:1] if self.residual else raw[..., 0:1]
            if self.mean_only:
                return mean
            return ops.concatenate([mean, ops.softplus(raw[..., 1:2]) + MIN_SCALE], axis=-1)

        def compute_output_shape(self, shapes: list[tuple[Any, ...]]) -> tuple[Any, ...]:
            return tuple(shapes[1][:-1]) + (1 if self.mean_only else 2,)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "mean_only": self.mean_only, "residual": self.residual}

    return LaplaceHead


def care_network_config(ndim: int = 3, depth: int = 2, filters: int = 16) -> LabelFreeNetworkConfig:
    """The backbone config: always 2 raw output channels (mean correction, scale)."""
    return LabelFreeNetworkConfig(ndim=ndim, depth=depth, filters=filters, n_out=2)


def build_care(config: LabelFreeNetworkConfig, residual: bool = False) -> Any:
    """(B, *spatial, 1) → (B, *spatial, 2) [mean, scale]; layers flat, so `get_layer` finds the backbone's."""
    import keras

    backbone = build_labelfree_unet(config)
    out = head_class()(residual=residual, name="laplace_head")([backbone.output, backbone.input])
    return keras.Model(backbone.input, out, name=f"care_laplace_{config.ndim}d")


def mean_model(care: Any) -> Any:
    """The same layers with only the mean as output, (B, *spatial, 1): what the package exports."""
    import keras

    raw = care.get_layer("final_conv").output
    residual = care.get_layer("laplace_head").residual
    mean = head_class()(mean_only=True, residual=residual, name="laplace_mean")([raw, care.input])
    return keras.Model(care.input, mean, name=f"{care.name}_mean")
