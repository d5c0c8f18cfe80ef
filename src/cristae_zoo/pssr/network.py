"""The PSSR super-sampling network in Keras 3: a small ResNet U-Net at LR resolution, then 2 × (sub-pixel ×2).

Every upsampling is a sub-pixel convolution (conv to r²·C channels, then `tf.nn.depth_to_space`) with ICNR
initialisation (Aitken et al. 2017: all r² sub-pixel phases of an output channel start with the same kernel, so a
fresh upsampler equals conv + nearest-neighbour upsampling and has no checkerboard) followed by the zero-order-hold
blur of Sugawara et al. (replicate-pad top/left, 2×2 mean, stride 1), as PSSR (fast.ai's `PixelShuffle_ICNR`).
The output adds the bilinear 4× upsampling of the middle input frame: the network learns the correction to the
baseline it is evaluated against. Channels-last: (B, h, w, n_frames) in, (B, 4h, 4w, 1) out; h, w divisible by
2**depth.

Layer names are stable (`stem`, `enc{l}_res{i}`, `down{l}`, `bottom_res{i}`, `up{l}_shuffle_conv`, `up{l}_merge`,
`dec{l}_res{i}`, `head{k}_shuffle_conv`, `final_conv`) so the PyTorch twin can copy the weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from cristae_zoo.config import YamlModel

try:  # the layers must be registered before a .keras file that uses them is loaded
    import keras
except ImportError:  # pragma: no cover
    keras = None  # type: ignore[assignment]


class PSSRNetworkConfig(YamlModel):
    n_frames: int = Field(1, ge=1, description="input frames as channels: 1 (PSSR-SF) or 5 (PSSR-MF, t-2 … t+2)")
    filters: int = Field(24, ge=4, description="channels at LR resolution, doubled per level")
    depth: int = Field(2, ge=1, le=4, description="stride-2 levels of the U-Net")
    scale: int = Field(4, description="output/input size per axis: 2**k, done as k sub-pixel ×2 stages")
    head_filters: int = Field(16, ge=4, description="channels of the HR-side upsampling stages")
    blur: bool = True
    icnr: bool = True

    @property
    def divisor(self) -> int:
        return 2**self.depth

    @property
    def head_stages(self) -> int:
        k = int(round(np.log2(self.scale)))
        if 2**k != self.scale or k < 1:
            raise ValueError(f"scale {self.scale}: must be a power of 2")
        return k


def icnr_kernel(shape: tuple[int, ...], block: int, rng: np.random.Generator) -> np.ndarray:
    """ICNR kernel (kh, kw, in, block²·C) for `depth_to_space` (DCR order: output channel (i·r + j)·C + c).

    He-normal kernels for the C output channels, each repeated for the r² phases, so every phase of a channel
    starts identical. (PyTorch's pixel_shuffle uses CRD order, c·r² + i·r + j: there it would be a `repeat`.)
    """
    kh, kw, cin, cout = shape
    c = cout // (block * block)
    base = rng.normal(0.0, np.sqrt(2.0 / (kh * kw * cin)), (kh, kw, cin, c)).astype(np.float32)
    return np.tile(base, (1, 1, 1, block * block))


if keras is not None:

    @keras.saving.register_keras_serializable(package="cristae_zoo.pssr")
    class ICNR(keras.initializers.Initializer):
        def __init__(self, block: int = 2, seed: int = 0) -> None:
            self.block, self.seed = block, seed

        def __call__(self, shape: Any, dtype: Any = None) -> Any:
            return keras.ops.convert_to_tensor(icnr_kernel(tuple(shape), self.block, np.random.default_rng(self.seed)))

        def get_config(self) -> dict[str, Any]:
            return {"block": self.block, "seed": self.seed}

    @keras.saving.register_keras_serializable(package="cristae_zoo.pssr")
    class DepthToSpace(keras.layers.Layer):
        """`tf.nn.depth_to_space` (NHWC, DCR): ONNX DepthToSpace(DCR) in tf2onnx, a channel permutation + pixel_shuffle in torch."""

        def __init__(self, block: int = 2, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.block = block

        def call(self, x: Any) -> Any:
            import tensorflow as tf

            return tf.nn.depth_to_space(x, self.block)

        def compute_output_shape(self, s: Any) -> Any:
            up = lambda n: None if n is None else n * self.block
            return (s[0], up(s[1]), up(s[2]), s[3] // self.block**2)

        def get_config(self) -> dict[str, Any]:
            return super().get_config() | {"block": self.block}

    @keras.saving.register_keras_serializable(package="cristae_zoo.pssr")
    class HoldBlur(keras.layers.Layer):
        """Zero-order-hold blur: replicate-pad one row/column at the top/left, then the 2×2 mean with stride 1."""

        def call(self, x: Any) -> Any:
            ops = keras.ops
            x = ops.concatenate([x[:, :1], x], axis=1)
            x = ops.concatenate([x[:, :, :1], x], axis=2)
            return 0.25 * (x[:, :-1, :-1] + x[:, 1:, :-1] + x[:, :-1, 1:] + x[:, 1:, 1:])

    @keras.saving.register_keras_serializable(package="cristae_zoo.pssr")
    class Bilinear(keras.layers.Layer):
        """Bilinear ×factor (TF2 `resize`: half-pixel centres, no antialiasing) with dynamic y, x.

        Keras' `UpSampling2D(interpolation="bilinear")` cannot be exported with unknown spatial sizes.
        """

        def __init__(self, factor: int = 4, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x: Any) -> Any:
            import tensorflow as tf

            return tf.image.resize(x, tf.shape(x)[1:3] * self.factor, method="bilinear")

        def compute_output_shape(self, s: Any) -> Any:
            up = lambda n: None if n is None else n * self.factor
            return (s[0], up(s[1]), up(s[2]), s[3])

        def get_config(self) -> dict[str, Any]:
            return super().get_config() | {"factor": self.factor}

    @keras.saving.register_keras_serializable(package="cristae_zoo.pssr")
    class MiddleFrame(keras.layers.Layer):
        """The middle input channel (frame t of t-2 … t+2; the only channel for PSSR-SF)."""

        def call(self, x: Any) -> Any:
            n = x.shape[-1]
            return x[..., n // 2 : n // 2 + 1]


def subpixel_up(x: Any, channels: int, name: str, config: PSSRNetworkConfig, seed: int) -> Any:
    """conv 3×3 → r²·C (ICNR) → ReLU → depth_to_space(2) → blur: ×2 upsampling without checkerboard."""
    from keras import layers

    init = ICNR(2, seed) if config.icnr else "glorot_uniform"
    x = layers.Conv2D(4 * channels, 3, padding="same", kernel_initializer=init, name=f"{name}_shuffle_conv")(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    x = DepthToSpace(2, name=f"{name}_shuffle")(x)
    return HoldBlur(name=f"{name}_blur")(x) if config.blur else x


def _res(x: Any, n: int, name: str) -> Any:
    from keras import layers

    y = layers.Conv2D(n, 3, padding="same", activation="relu", name=f"{name}_conv0")(x)
    y = layers.Conv2D(n, 3, padding="same", name=f"{name}_conv1")(y)
    return layers.ReLU(name=f"{name}_relu")(layers.Add(name=f"{name}_add")([x, y]))


def build_pssr(config: PSSRNetworkConfig, seed: int = 0) -> Any:
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape=(None, None, config.n_frames), name="input")
    f = config.filters
    x = layers.Conv2D(f, 3, padding="same", activation="relu", name="stem")(inp)
    skips = []
    for level in range(config.depth):
        x = _res(x, f * 2**level, f"enc{level}_res0")
        skips.append(x)
        # 2×2 stride-2 'valid' conv: identical padding in Keras, ONNX and torch (3×3 stride-2 'same' is not)
        x = layers.Conv2D(f * 2 ** (level + 1), 2, strides=2, activation="relu", name=f"down{level}")(x)
    x = _res(x, f * 2**config.depth, "bottom_res0")
    for level in reversed(range(config.depth)):
        n = f * 2**level
        x = subpixel_up(x, n, f"up{level}", config, seed + 1 + level)
        x = layers.Concatenate(name=f"up{level}_concat")([x, skips[level]])
        x = layers.Conv2D(n, 1, activation="relu", name=f"up{level}_merge")(x)
        x = _res(x, n, f"dec{level}_res0")
    for k in range(config.head_stages):
        x = subpixel_up(x, config.head_filters, f"head{k}", config, seed + 100 + k)
    x = layers.Conv2D(1, 3, padding="same", name="final_conv")(x)
    base = Bilinear(config.scale, name="bilinear")(MiddleFrame(name="middle")(inp))
    out = layers.Add(name="residual")([x, base])
    return keras.Model(inp, out, name=f"pssr_{'mf' if config.n_frames > 1 else 'sf'}")
