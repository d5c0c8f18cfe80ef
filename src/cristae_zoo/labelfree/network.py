"""The U-Net of Hsu et al. (modified from Ounkomol et al. 2018, "fnet"), in Keras 3, 2D or 3D.

Each level: two 3×3(×3) convolutions with stride 1, then a 2×2(×2) convolution with stride 2 down; on the way
up a 2×2(×2) transposed convolution with stride 2, concatenation with the skip, two more convolutions. Every
convolution is followed by batch normalization and ReLU, except the last layer (a 3×3(×3) convolution to one
channel per predicted structure). Channels-last: (B, [Z,] Y, X, 1) in, (B, [Z,] Y, X, n_out) out; every spatial
size must be divisible by 2**depth.

Layer names are stable (`down{l}_conv{i}`, `down{l}_pool`, `bottom_conv{i}`, `up{l}_tconv`, `up{l}_conv{i}`,
`final_conv`, each followed by `…_bn`) so the PyTorch twin can copy the weights.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from cristae_zoo.config import YamlModel


class LabelFreeNetworkConfig(YamlModel):
    ndim: Literal[2, 3] = 2
    depth: int = Field(2, ge=1, le=5, description="number of stride-2 down-samplings (fnet: 4)")
    filters: int = Field(8, ge=1, description="channels at the first level, doubled per level (fnet: 32)")
    n_out: int = Field(2, ge=1, description="output channels = predicted structures")

    @property
    def divisor(self) -> int:
        return 2**self.depth


def layer_sequence(config: LabelFreeNetworkConfig) -> list[tuple[str, str, bool]]:
    """(name, kind, has_bn) of every weighted layer, in the order the twin builds them."""
    seq: list[tuple[str, str, bool]] = []
    for level in range(config.depth):
        seq += [(f"down{level}_conv0", "conv", True), (f"down{level}_conv1", "conv", True)]
        seq += [(f"down{level}_pool", "down", True)]
    seq += [("bottom_conv0", "conv", True), ("bottom_conv1", "conv", True)]
    for level in reversed(range(config.depth)):
        seq += [(f"up{level}_tconv", "up", True), (f"up{level}_conv0", "conv", True), (f"up{level}_conv1", "conv", True)]
    seq += [("final_conv", "conv", False)]
    return seq


def build_labelfree_unet(config: LabelFreeNetworkConfig) -> Any:
    import keras
    from keras import layers

    conv = layers.Conv2D if config.ndim == 2 else layers.Conv3D
    tconv = layers.Conv2DTranspose if config.ndim == 2 else layers.Conv3DTranspose

    def block(x: Any, name: str, n: int, layer: Any = conv, kernel: int = 3, strides: int = 1) -> Any:
        padding = "same" if kernel == 3 else "valid"
        x = layer(n, kernel, strides=strides, padding=padding, name=name)(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    inp = keras.Input(shape=(None,) * config.ndim + (1,), name="input")
    x = inp
    skips = []
    for level in range(config.depth):
        n = config.filters * 2**level
        x = block(x, f"down{level}_conv0", n)
        x = block(x, f"down{level}_conv1", n)
        skips.append(x)
        x = block(x, f"down{level}_pool", n * 2, kernel=2, strides=2)
    n = config.filters * 2**config.depth
    x = block(x, "bottom_conv0", n)
    x = block(x, "bottom_conv1", n)
    for level in reversed(range(config.depth)):
        n = config.filters * 2**level
        x = block(x, f"up{level}_tconv", n, layer=tconv, kernel=2, strides=2)
        x = layers.Concatenate(name=f"up{level}_concat")([x, skips[level]])
        x = block(x, f"up{level}_conv0", n)
        x = block(x, f"up{level}_conv1", n)
    out = conv(config.n_out, 3, padding="same", name="final_conv")(x)
    return keras.Model(inp, out, name=f"labelfree_unet_{config.ndim}d")


def receptive_radius(config: LabelFreeNetworkConfig) -> int:
    """Upper bound of the receptive-field radius (px): 3×3 convs add their scale, 2×2 stride-2 (transposed) convs too."""
    return sum(6 * 2**level for level in range(config.depth)) + 2 * 2**config.depth + 1


def seamless_halo(config: LabelFreeNetworkConfig) -> int:
    """The tiling halo (px) that makes tiled prediction equal whole-image prediction: the receptive radius rounded
    up to the divisor, so that tiles stay on the stride-2 grid."""
    return -(-receptive_radius(config) // config.divisor) * config.divisor
