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


def depth_to_space(x: Any, block: int) -> Any:
    """`tf.nn.depth_to_space` (NHWC, DCR order) in keras.ops: (B, H, W, r²·C) → (B, r·H, r·W, C)."""
    ops = keras.ops
    h, w = ops.shape(x)[1], ops.shape(x)[2]
    c = x.shape[-1] // (block * block)
    x = ops.reshape(x, (-1, h, w, block, block, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # (B, H, i, W, j, C)
    return ops.reshape(x, (-1, h * block, w * block, c))


def _upsample_axis(x: Any, factor: int, axis: int) -> Any:
    """Bilinear ×factor along `axis` (1 or 2) with half-pixel centres and clamped edges, as TF's resize.

    Output pixel f·i + k samples input coordinate i + d_k, d_k = (k + ½)/f − ½: a blend of pixel i and its
    neighbour on the side of d_k; past the image edge the edge pixel is repeated (TF clamps the coordinate)."""
    ops = keras.ops

    def take(start: int, stop: int | None) -> Any:
        return x[:, start:stop] if axis == 1 else x[:, :, start:stop]

    padded = ops.concatenate([take(0, 1), x, take(-1, None)], axis=axis)

    def shifted(offset: int) -> Any:  # the padded tensor shifted so index i is input pixel i + offset
        n = None if offset == 1 else offset - 1
        return padded[:, 1 + offset : n] if axis == 1 else padded[:, :, 1 + offset : n]

    centre = shifted(0)
    phases = []
    for k in range(factor):
        d = (k + 0.5) / factor - 0.5
        phases.append((-d) * shifted(-1) + (1 + d) * centre if d < 0 else (1 - d) * centre + d * shifted(1))
    stacked = ops.stack(phases, axis=axis + 1)  # (B, H, f, W, C) or (B, H, W, f, C)
    shape = ops.shape(x)
    new_shape = (-1, shape[1] * factor, shape[2], x.shape[-1]) if axis == 1 else (-1, shape[1], shape[2] * factor, x.shape[-1])
    return ops.reshape(stacked, new_shape)


def upsample_bilinear(x: Any, factor: int) -> Any:
    """`tf.image.resize(x, factor·(H, W), "bilinear")` (half-pixel centres, no antialiasing) in keras.ops."""
    return _upsample_axis(_upsample_axis(x, factor, 1), factor, 2)


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
            # keras.ops (any backend) instead of tf.nn.depth_to_space; same DCR order: channel (i·r + j)·C + c of
            # pixel (y, x) goes to channel c of pixel (y·r + i, x·r + j).
            return depth_to_space(x, self.block)

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
            # keras.ops (any backend) instead of tf.image.resize: the same half-pixel bilinear weights.
            return upsample_bilinear(x, self.factor)

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
