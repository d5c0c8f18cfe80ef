"""The CARE U-Net backbone used by DeepCristae (Methods, "Network architecture")."""

from __future__ import annotations

import keras
from keras import layers

from cristae_zoo.config import NetworkConfig


def build_unet(config: NetworkConfig, seed: int | None = None) -> keras.Model:
    """Residual U-Net: `depth` levels of two conv+ReLU, 2×2 max pooling, 2×2 upsampling + skip concatenation,
    a final 1×1 conv, and the input added to the output. Channels-last, any size divisible by 2**depth."""
    init = keras.initializers.GlorotUniform(seed=seed)
    conv_kw = dict(kernel_size=config.kernel_size, padding="same", activation="relu", kernel_initializer=init)
    inp = keras.Input(shape=(None, None, 1), name="input")
    x = inp
    skips = []
    for level in range(config.depth):
        n = config.filters * 2**level
        x = layers.Conv2D(n, name=f"down{level}_conv0", **conv_kw)(x)
        x = layers.Conv2D(n, name=f"down{level}_conv1", **conv_kw)(x)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
    n = config.filters * 2**config.depth
    x = layers.Conv2D(n, name="middle_conv0", **conv_kw)(x)
    # CARE halves the filters at the bottleneck's second conv so that the first up level matches its skip.
    x = layers.Conv2D(n // 2, name="middle_conv1", **conv_kw)(x)
    for level in reversed(range(config.depth)):
        n = config.filters * 2**level
        x = layers.UpSampling2D(2, interpolation="nearest", name=f"up{level}_upsample")(x)
        x = layers.Concatenate(axis=-1, name=f"up{level}_concat")([x, skips[level]])
        x = layers.Conv2D(n, name=f"up{level}_conv0", **conv_kw)(x)
        x = layers.Conv2D(n // 2 if level > 0 else n, name=f"up{level}_conv1", **conv_kw)(x)
    x = layers.Conv2D(1, 1, activation="linear", kernel_initializer=init, name="final_conv")(x)
    if config.residual:
        x = layers.Add(name="residual_add")([x, inp])
    return keras.Model(inp, x, name="deepcristae_unet")


def divisibility(config: NetworkConfig) -> int:
    """Input sizes must be multiples of this."""
    return 2**config.depth
