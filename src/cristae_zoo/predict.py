"""Predict with a bioimage.io package through bioimageio.core (its model adapters and pre/postprocessing).

PACKAGE may be a package folder, its `rdf.yaml`, a package `.zip`, or the name of a model in `model_zoo/`.

How an image goes through:

1. bioimageio.core's pipeline applies the package's preprocessing to the *whole* image (`scale_range` with
   per-image percentiles, so tiles share one normalisation);
2. the image is padded (mirror) at the bottom/right to a valid network size (a multiple of the step, at least the
   minimum), only if needed;
3. the network runs through the pipeline's model adapter, on the whole image or, when it is larger than `tile`,
   in tiles with the package's halo of context. Tiles never reach beyond the image, and stay on the network's pooling
   grid, so the tiled result equals the untiled one (checked in the tests);
4. the pipeline's postprocessing, then the padding is cropped off.

An image that already has a valid size and fits one tile is predicted exactly as `bioimageio test` predicts the
package's test input, so the result equals the package's test output.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cristae_zoo.errors import CristaeZooError
from cristae_zoo.export import WEIGHTS_FORMAT_ALIASES

#: Largest network input edge (px, halo included) before the image is split into tiles: 1024 px of output plus
#: DeepCristae's 2 × 56 px halo, so a 2048 px plane is 2 × 2 tiles (halo recomputation +11 %) rather than 3 × 3
#: (+23 %), while a tile's activations stay well under 1 GB (see docs/benchmarks.md).
DEFAULT_TILE = 1152
MODEL_ZOO = "model_zoo"
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")


# ------------------------------------------------------------------------------------------- finding packages


def model_zoo_dirs() -> list[Path]:
    here = Path(__file__).resolve()
    dirs = [Path.cwd() / MODEL_ZOO, here.parents[2] / MODEL_ZOO]
    return list(dict.fromkeys(d.resolve() for d in dirs))


def available_models() -> list[str]:
    names: set[str] = set()
    for d in model_zoo_dirs():
        if d.is_dir():
            names.update(p.name for p in d.iterdir() if p.is_dir() and any((p / r).is_file() for r in RDF_NAMES))
    return sorted(names)


def resolve_package(package: str | Path) -> Path:
    """The rdf.yaml or .zip to load for PACKAGE; a one-line `CristaeZooError` if there is none."""
    path = Path(package)
    if path.is_dir():
        for name in RDF_NAMES:
            if (path / name).is_file():
                return path / name
        raise CristaeZooError(f"{path}: no rdf.yaml in this folder (expected a bioimage.io package folder)")
    if path.is_file():
        if path.suffix.lower() == ".zip":
            _check_zip(path)
            return path
        if path.suffix.lower() in (".yaml", ".yml"):
            return path
        raise CristaeZooError(f"{path}: not a package (expected a folder, an rdf.yaml or a .zip)")
    if len(path.parts) == 1:
        for zoo in model_zoo_dirs():
            candidate = zoo / str(package)
            if candidate.is_dir():
                return resolve_package(candidate)
    known = available_models()
    hint = f"; models in {MODEL_ZOO}/: {', '.join(known)}" if known else ""
    raise CristaeZooError(
        f"{package}: no such package (expected a package folder, an rdf.yaml, a .zip, or a model name in"
        f" {MODEL_ZOO}/){hint}"
    )


def _check_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CristaeZooError(
            f"{path}: corrupt or not a zip archive ({err}); expected a bioimage.io package .zip"
        ) from None
    if bad is not None:
        raise CristaeZooError(f"{path}: corrupt zip archive (bad CRC for {bad}); expected a bioimage.io package .zip")
    if not any(n in names for n in RDF_NAMES):
        raise CristaeZooError(f"{path}: no rdf.yaml in this zip (expected a bioimage.io package .zip)")


def first_error(summary: Any) -> str:
    errors = getattr(summary, "errors", None) or []
    if not errors:
        return "unknown error"
    e = errors[0]
    loc = ".".join(str(p) for p in e.loc)
    msg = " ".join(str(e.msg).split())
    return f"{loc}: {msg}" if loc else msg


def load_package(package: str | Path | Any, *, perform_io_checks: bool = True) -> Any:
    """Load and validate a model description; `CristaeZooError` if it fails validation."""
    from bioimageio.spec import InvalidDescr, load_description
    from bioimageio.spec.model import v0_5

    if isinstance(package, v0_5.ModelDescr):
        return package
    source = resolve_package(package)
    try:
        descr = load_description(source, perform_io_checks=perform_io_checks)
    except Exception as err:  # unreadable YAML, broken zip members, ...
        raise CristaeZooError(f"{source}: cannot load the package ({type(err).__name__}: {err})") from None
    if isinstance(descr, InvalidDescr):
        raise CristaeZooError(f"{source}: the rdf fails validation ({first_error(descr.validation_summary)})")
    if not isinstance(descr, v0_5.ModelDescr):
        raise CristaeZooError(
            f"{source}: expected a bioimage.io model of format 0.5, got {getattr(descr, 'type', '?')}"
            f" {getattr(descr, 'format_version', '?')}"
        )
    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise CristaeZooError(f"{source}: expected a model with one input and one output tensor")
    return descr


def normalize_weights_format(weights: str | None, descr: Any) -> str | None:
    """Accept onnx | tensorflow | torchscript (or the bioimage.io keys); default: ONNX if present."""
    available = [name for name, entry in descr.weights if entry is not None]
    if weights is None:
        return "onnx" if "onnx" in available else None
    key = WEIGHTS_FORMAT_ALIASES.get(weights.lower())
    if key is None:
        raise CristaeZooError(f"--weights {weights}: unknown weights format (expected onnx, tensorflow or torchscript)")
    if key not in available:
        raise CristaeZooError(f"--weights {weights}: this package has no {key} weights (it has {', '.join(available)})")
    return key


# -------------------------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Geometry:
    min_size: int
    step: int
    halo: int

    def valid_size(self, n: int) -> int:
        return max(self.min_size, -(-n // self.step) * self.step)


def geometry(descr: Any) -> Geometry:
    from bioimageio.spec.model import v0_5

    ipt, out = descr.inputs[0], descr.outputs[0]
    mins, steps = [], []
    for a in ipt.axes:
        if a.id in ("y", "x"):
            if isinstance(a.size, v0_5.ParameterizedSize):
                mins.append(a.size.min)
                steps.append(a.size.step)
            elif isinstance(a.size, int):
                raise CristaeZooError("expected a package with variable y/x input size ({min, step})")
    halos = [getattr(a, "halo", 0) for a in out.axes if a.id in ("y", "x")]
    if len(mins) != 2:
        raise CristaeZooError("expected a package whose input has y and x axes")
    return Geometry(min_size=max(mins), step=max(steps), halo=max(halos or [0]))


def as_2d(image: np.ndarray, name: str = "image") -> np.ndarray:
    """A (Y, X) float32 view of `image`, or a one-line error naming what is wrong."""
    image = np.asarray(image)
    squeezed = np.squeeze(image)
    if squeezed.ndim == 2:
        out = squeezed.astype(np.float32)
    elif squeezed.ndim == 3 and (min(squeezed.shape) <= 4 and squeezed.shape.index(min(squeezed.shape)) in (0, 2)):
        channels = min(squeezed.shape)
        raise CristaeZooError(
            f"{name}: has {channels} channels (shape {image.shape}); expected a single-channel 2D image (Y, X):"
            " split the channels and predict one at a time"
        )
    else:
        raise CristaeZooError(
            f"{name}: has {squeezed.ndim} dimensions (shape {image.shape}); expected a 2D image (Y, X): predict"
            " z-stacks and time series one plane at a time"
        )
    if out.size == 0:
        raise CristaeZooError(f"{name}: empty image (shape {image.shape})")
    if not np.all(np.isfinite(out)):
        raise CristaeZooError(f"{name}: contains NaN or Inf values; expected finite intensities")
    return out


# ---------------------------------------------------------------------------------------------------- predict


class Restorer:
    """A loaded package that restores batches of same-size 2D planes; the model is loaded once and reused.

    `weights_format`: onnx | tensorflow | torchscript (default: ONNX if the package has it). `tile`: largest network
    input edge in px (halo included); larger planes are predicted in tiles. `None`: never tile.
    """

    def __init__(self, package: str | Path | Any, weights_format: str | None = None, tile: int | None = DEFAULT_TILE):
        self.descr = load_package(package)
        self.geometry = geometry(self.descr)
        self.weights_format = normalize_weights_format(weights_format, self.descr)
        self.in_id, self.out_id = str(self.descr.inputs[0].id), str(self.descr.outputs[0].id)
        geo = self.geometry
        if tile is not None:
            tile = tile // geo.step * geo.step
            if tile - 2 * geo.halo < geo.step:
                raise CristaeZooError(
                    f"tile {tile}: too small for this model's halo of {geo.halo} px; expected at least"
                    f" {2 * geo.halo + geo.step}"
                )
        self.tile = tile
        self._pp: Any = None

    @property
    def pipeline(self) -> Any:
        if self._pp is None:
            from bioimageio.core import create_prediction_pipeline

            self._pp = create_prediction_pipeline(self.descr, weights_format=self.weights_format)
        return self._pp

    def close(self) -> None:
        if self._pp is not None:
            self._pp.unload()
            self._pp = None

    def __enter__(self) -> Restorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def n_tiles(self, shape: tuple[int, int]) -> int:
        padded = [self.geometry.valid_size(n) for n in shape]
        if self.tile is None or max(padded) <= self.tile:
            return 1
        inner = self.tile - 2 * self.geometry.halo
        return len(range(0, padded[0], inner)) * len(range(0, padded[1], inner))

    def predict(self, planes: np.ndarray, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Restore (B, Y, X) planes (each normalised on its own, as the package says); returns float32 (B, Y, X)."""
        from bioimageio.core import Sample, Tensor

        planes = np.asarray(planes, dtype=np.float32)
        if planes.ndim == 2:
            planes = planes[None]
        geo, pp = self.geometry, self.pipeline
        batch, height, width = planes.shape
        padded_shape = (geo.valid_size(height), geo.valid_size(width))

        sample = _sample(self.in_id, planes, "image")
        pp.apply_preprocessing(sample)  # per-plane statistics, computed on the unpadded planes
        x = sample.members[self.in_id].data.to_numpy()[:, 0].astype(np.float32, copy=False)
        stat = sample.stat  # postprocessing may refer to the input's statistics
        del sample
        if padded_shape != (height, width):
            x = np.pad(x, [(0, 0), (0, padded_shape[0] - height), (0, padded_shape[1] - width)], mode="symmetric")

        def run(block: np.ndarray) -> np.ndarray:
            block_sample = _sample(self.in_id, block, "block")
            result = pp.predict_sample_without_blocking(
                block_sample,
                skip_preprocessing=True,
                skip_postprocessing=True,
                skip_input_padding=True,
                skip_output_cropping=True,
            )
            return result.members[self.out_id].data.to_numpy()[:, 0].astype(np.float32, copy=False)

        total = self.n_tiles((height, width))
        if total == 1:
            y = run(x)
            if progress:
                progress(1, 1)
        else:
            assert self.tile is not None
            done = [0]

            def run_counted(block: np.ndarray) -> np.ndarray:
                out = run(block)
                done[0] += 1
                if progress:
                    progress(done[0], total)
                return out

            y = tiled_apply_batch(run_counted, x, self.tile - 2 * geo.halo, geo.halo, min_size=geo.min_size)
        del x
        y = np.ascontiguousarray(y[:, :height, :width])
        out_sample = Sample(members={self.out_id: Tensor.from_numpy(y[:, None], dims=BCYX)}, stat=stat, id="image")
        pp.apply_postprocessing(out_sample)
        return out_sample.members[self.out_id].data.to_numpy()[:, 0].astype(np.float32, copy=False)


def tiled_apply_batch(
    fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray, inner: int, halo: int, min_size: int = 1
) -> np.ndarray:
    """`export.halo.tiled_apply` over the last two axes of a (B, Y, X) batch: every tile runs on all planes at once.

    Tiles of `inner` px with `halo` px of context, never beyond the image, corners on multiples of `inner`."""
    from cristae_zoo.export.halo import tiled_apply

    n = image.shape[0]  # the batch axis is one "tile" without halo
    return tiled_apply(fn, image, (n, inner, inner), (0, halo, halo), (1, min_size, min_size))


def predict_image(
    package: str | Path | Any,
    image: np.ndarray,
    weights_format: str | None = None,
    tile: int | None = DEFAULT_TILE,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Restore a 2D image with a bioimage.io package; returns float32 (Y, X) on the package's output scale.

    `weights_format`: onnx | tensorflow | torchscript (default: ONNX if the package has it).
    `tile`: largest network input edge in px (halo included); larger images are predicted in tiles. `None`: never
    tile. `progress(done, total)` is called after each tile.
    """
    restorer = Restorer(package, weights_format, tile)
    image2d = as_2d(image)
    with restorer:
        return restorer.predict(image2d[None], progress=progress)[0]


BCYX = ("batch", "channel", "y", "x")


def _sample(member_id: str, planes: np.ndarray, sample_id: str) -> Any:
    """A bioimageio.core Sample of one (B, 1, Y, X) tensor from (B, Y, X) planes (any size: padding and tiling
    are done here)."""
    from bioimageio.core import Sample, Tensor

    return Sample(members={member_id: Tensor.from_numpy(planes[:, None], dims=BCYX)}, stat={}, id=sample_id)


def read_input_tiff(path: Path) -> np.ndarray:
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise CristaeZooError(f"{path}: file not found (expected a 2D TIFF image)")
    try:
        image = tifffile.imread(path)
    except Exception as err:  # tifffile raises many types for unreadable files
        raise CristaeZooError(f"{path}: cannot read as TIFF ({type(err).__name__}: {err})") from None
    return as_2d(image, name=str(path))


def predict_file(
    package: str | Path | Any,
    input_path: Path | str,
    output_path: Path | str,
    weights_format: str | None = None,
    tile: int | None = DEFAULT_TILE,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Predict a TIFF and write the result (float32 TIFF) atomically; never overwrites the input."""
    from cristae_zoo.io import refuse_overwriting_inputs, write_tiff

    input_path, output_path = Path(input_path), Path(output_path)
    refuse_overwriting_inputs([output_path], [input_path])
    image = read_input_tiff(input_path)
    restored = predict_image(package, image, weights_format=weights_format, tile=tile, progress=progress)
    write_tiff(output_path, restored, photometric="minisblack")
    return output_path
