"""Reading and writing images: checked on the way in, written atomically on the way out."""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tifffile

from cristae_zoo.errors import CristaeZooError

IMAGE_SUFFIXES = (".tif", ".tiff")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; move it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs should be as readable as any other
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_tiff(path: Path, image: np.ndarray, **kwargs) -> None:
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, image, **kwargs)


def list_images(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise CristaeZooError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise CristaeZooError(f"{folder}: no TIFF images (*.tif, *.tiff) in this folder")
    return files


def read_image_2d(path: Path, min_size: int = 1) -> np.ndarray:
    """Read a 2D single-channel image as float32, refusing anything a restoration step cannot use."""
    path = Path(path)
    try:
        image = tifffile.imread(path)
    except Exception as err:  # tifffile raises many types for unreadable files
        raise CristaeZooError(f"{path}: cannot read as TIFF ({type(err).__name__}: {err})") from None
    image = np.squeeze(image)
    if image.ndim != 2:
        raise CristaeZooError(f"{path}: expected a 2D image, got shape {image.shape}")
    image = image.astype(np.float32)
    if not np.all(np.isfinite(image)):
        raise CristaeZooError(f"{path}: contains NaN or Inf values")
    if image.max() == image.min():
        raise CristaeZooError(f"{path}: the image is constant ({image.flat[0]:g} everywhere)")
    if min(image.shape) < min_size:
        raise CristaeZooError(f"{path}: image {image.shape} is smaller than {min_size}×{min_size} px")
    return image


def refuse_overwriting_inputs(outputs: list[Path], inputs: list[Path]) -> None:
    resolved = {Path(p).resolve() for p in inputs}
    for out in outputs:
        if Path(out).resolve() in resolved:
            raise CristaeZooError(f"{out}: refusing to overwrite an input file")


def write_csv(path: Path, rows: list[dict], fieldnames: Sequence[str] | None = None) -> None:
    """Rows of dicts as CSV, written atomically; columns `fieldnames` (default: the first row's keys)."""
    fieldnames = list(fieldnames or (rows[0].keys() if rows else []))
    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
