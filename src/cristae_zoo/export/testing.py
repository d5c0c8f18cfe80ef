"""A tiny model folder, laid out like the training code writes one, for tests and demos of the export."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cristae_zoo.config import NetworkConfig, TrainConfig


def synthetic_mito_image(shape: tuple[int, int] = (300, 320), seed: int = 0) -> np.ndarray:
    """Integer-valued (float32) image with tube-like bright structures over a Poisson background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    signal = np.zeros(shape, np.float32)
    for _ in range(6):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        angle = rng.uniform(0, np.pi)
        along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        tube = np.exp(-0.5 * (across / 6.0) ** 2) * (np.abs(along) < 80)
        signal += tube * (1 + 0.5 * np.sin(along / 2.5))
    return (rng.poisson(5 + 60 * signal) + 100).astype(np.float32)


def make_model_dir(
    root: Path,
    network: NetworkConfig | None = None,
    *,
    seed: int = 0,
    evaluation: bool = True,
    image_shape: tuple[int, int] = (300, 320),
) -> Path:
    """`root/model` (config.yaml, weights.keras, history.csv, evaluation/) and `root/data/test/{input,gt}`."""
    import tifffile

    from cristae_zoo.models.unet import build_unet

    root = Path(root)
    network = network or NetworkConfig(depth=2, filters=4)
    model_dir, data_dir = root / "model", root / "data"
    for d in (model_dir, data_dir / "test" / "input", data_dir / "test" / "gt"):
        d.mkdir(parents=True, exist_ok=True)
    build_unet(network, seed=seed).save(model_dir / "weights.keras")
    TrainConfig(network=network, data_dir=data_dir, output_dir=model_dir, epochs=2).to_yaml(model_dir / "config.yaml")
    (model_dir / "history.csv").write_text("epoch,loss,val_loss\n0,0.5,0.45\n1,0.4,0.41\n")
    if evaluation:
        (model_dir / "evaluation").mkdir(exist_ok=True)
        (model_dir / "evaluation" / "metrics.csv").write_text("image,psnr\nimg_000.tif,30.0\n")
        (model_dir / "evaluation" / "summary.md").write_text(
            "| method | PSNR |\n|---|---|\n| DeepCristae (tiny test model) | 30.00 |\n"
        )
    image = synthetic_mito_image(image_shape, seed)
    tifffile.imwrite(data_dir / "test" / "input" / "img_000.tif", image)
    tifffile.imwrite(data_dir / "test" / "gt" / "img_000.tif", image)
    return model_dir
