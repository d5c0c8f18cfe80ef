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

import os
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cristae_zoo.errors import CristaeZooError
from cristae_zoo.engines import WEIGHTS_FORMAT_ALIASES

#: Largest network input edge (px, halo included) before the image is split into tiles: 1024 px of output plus
#: DeepCristae's 2 × 56 px halo, so a 2048 px plane is 2 × 2 tiles (halo recomputation +11 %) rather than 3 × 3
#: (+23 %), while a tile's activations stay well under 1 GB (see docs/benchmarks.md).
DEFAULT_TILE = 1152


from cristae_zoo.packages import (  # noqa: E402,F401  (re-exported: the package lookup lives there)
    MODEL_ZOO,
    RDF_NAMES,
    _check_zip,
    available_models,
    model_zoo_dirs,
    resolve_package,
)


def first_error(summary: Any) -> str:
    errors = getattr(summary, "errors", None) or []
    if not errors:
        return "unknown error"
    e = errors[0]
    loc = ".".join(str(p) for p in e.loc)
    msg = " ".join(str(e.msg).split())
    parts = [str(p) for p in e.loc]
    if "valid URL" in msg and "source" in parts:  # bioimageio.spec's words for "this local file is missing"
        loc = ".".join(parts[: parts.index("source") + 1])  # not the validator's internals after it
        msg = "the file it names is missing from the package (or is not a valid URL)"
    return f"{loc}: {msg}" if loc else msg


#: Top-level rdf fields that name files of the package (others, like `config`, may name files elsewhere).
_FILE_FIELDS = ("attachments", "covers", "documentation", "inputs", "outputs", "weights")


def _package_files(rdf: Any, loc: str = "") -> Iterator[tuple[str, str, str | None]]:
    """(where in the rdf, relative file path, sha256 or None) of every local file an rdf names."""
    if isinstance(rdf, dict):
        source = rdf.get("source")
        if isinstance(source, str) and "://" not in source:
            sha = rdf.get("sha256")
            yield loc or "source", source, sha if isinstance(sha, str) else None
        for key, value in rdf.items():
            if not loc and key not in _FILE_FIELDS:  # e.g. `config` holds provenance, not package files
                continue
            if not loc and key in ("documentation", "covers"):
                for i, name in enumerate(value if isinstance(value, list) else [value]):
                    where = key if not isinstance(value, list) else f"{key}.{i}"
                    if isinstance(name, str) and "://" not in name:
                        yield where, name, None
                    else:
                        yield from _package_files(name, where)
            elif key != "source":
                yield from _package_files(value, f"{loc}.{key}" if loc else str(key))
    elif isinstance(rdf, list):
        for i, value in enumerate(rdf):
            yield from _package_files(value, f"{loc}.{i}")


def check_package_files(source: Path, *, hashes: bool = True) -> None:
    """Every local file the package's rdf names must be there and, with `hashes`, match its sha256: otherwise a
    one-line `CristaeZooError` naming the file (bioimageio.spec would say "Input should be a valid URL" for a
    missing weights file). `source` is an rdf.yaml or a package .zip. Unreadable rdfs are left to bioimageio."""
    import hashlib

    import yaml

    source = Path(source)
    zf = None
    try:
        if source.suffix.lower() == ".zip":
            zf = zipfile.ZipFile(source)
            names = set(zf.namelist())
            rdf_name = next(n for n in RDF_NAMES if n in names)
            rdf = yaml.safe_load(zf.read(rdf_name))
        else:
            rdf = yaml.safe_load(source.read_text(encoding="utf-8"))
    except Exception:  # broken YAML or zip: bioimageio.spec's own error follows
        if zf is not None:
            zf.close()
        return
    try:
        for where, name, sha in _package_files(rdf):
            if zf is not None:
                present = name in names
            else:
                path = source.parent / name
                present = path.is_file()
            if not present:
                raise CristaeZooError(
                    f"{source}: {name} is missing from the package (named by {where} in the rdf); put it back or"
                    " package the model again"
                )
            if not (hashes and sha):
                continue
            digest = hashlib.sha256()
            with (zf.open(name) if zf is not None else open(source.parent / name, "rb")) as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            if digest.hexdigest() != sha.lower():
                raise CristaeZooError(
                    f"{source}: {name} has changed since packaging: its sha256 differs from the rdf's ({where}:"
                    f" {sha[:12]}…, file: {digest.hexdigest()[:12]}…); restore the original file or package again"
                )
    finally:
        if zf is not None:
            zf.close()


def load_package(package: str | Path | Any, *, perform_io_checks: bool = True) -> Any:
    """Load and validate a model description; `CristaeZooError` if it fails validation."""
    from bioimageio.spec import InvalidDescr, load_description
    from bioimageio.spec.model import v0_5

    if isinstance(package, v0_5.ModelDescr):
        return package
    source = resolve_package(package)
    check_package_files(source, hashes=perform_io_checks)  # clearer than bioimageio.spec's words for the same
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
    return _weights_key(weights, [name for name, entry in descr.weights if entry is not None])


def _weights_key(weights: str | None, available: list[str]) -> str | None:
    if weights is None:
        return "onnx" if "onnx" in available else None
    key = WEIGHTS_FORMAT_ALIASES.get(weights.lower())
    if key is None:
        raise CristaeZooError(f"--weights {weights}: unknown weights format (expected onnx, tensorflow or torchscript)")
    if key not in available:
        raise CristaeZooError(f"--weights {weights}: this package has no {key} weights (it has {', '.join(available)})")
    return key


def _dims(axes: Any) -> tuple[str, ...]:
    return tuple("batch" if str(a.type) == "batch" else "channel" if str(a.type) == "channel" else str(a.id) for a in axes)


def cpu_cores() -> int:
    """The cores this process may run on (its affinity mask, which containers and `taskset` narrow)."""
    return len(os.sched_getaffinity(0))


# ---------------------------------------------------------------------------------------------------- predict


class Restorer:
    """A loaded package that predicts batches of same-size units; the model is loaded once and reused.

    A unit is what the network sees for one output: (channels in, [z], y, x) as the package's `TensorDescription`
    says (`self.tensors`): one plane, a volume, or the frames of a PSSR-MF window. `weights_format`: onnx |
    tensorflow | torchscript (default: ONNX if the package has it). `tile`: largest network input edge in px (halo
    included) along every spatial axis; larger units are predicted in tiles. `None`: never tile.
    `engine`: auto | onnxruntime | openvino | bioimageio and `precision`: fp32 | bf16 (`cristae_zoo.engines`).
    """

    def __init__(
        self,
        package: str | Path | Any,
        weights_format: str | None = None,
        tile: int | None = DEFAULT_TILE,
        *,
        engine: str = "auto",
        precision: str = "fp32",
    ):
        from cristae_zoo.core.tensors import describe_package, describe_rdf
        from cristae_zoo.engines import ENGINES, PRECISIONS, read_rdf

        if engine not in ENGINES:
            raise CristaeZooError(f"--engine {engine}: expected one of {', '.join(ENGINES)}")
        if precision not in PRECISIONS:
            raise CristaeZooError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
        if precision == "bf16":
            if engine not in ("auto", "openvino"):
                raise CristaeZooError(f"--precision bf16 runs on the openvino engine, not {engine}")
            engine = "openvino"
        self.precision = precision
        self.descr: Any = None
        self.rdf: Any = None
        source = package if hasattr(package, "model_dump") else resolve_package(package)
        lean = engine != "bioimageio" and isinstance(source, Path) and source.suffix.lower() in (".yaml", ".yml")
        if lean:
            self.rdf = read_rdf(source)
            key = _weights_key(weights_format, self.rdf.weights_formats)
            if not self.rdf.lean or key not in (None, "onnx"):
                if engine in ("onnxruntime", "openvino"):
                    why = "it has no ONNX weights" if "onnx" not in self.rdf.weights_formats else (
                        "it needs processing steps only bioimageio.core implements" if not self.rdf.lean
                        else f"--weights {weights_format} was asked for")  # fmt: skip
                    raise CristaeZooError(f"--engine {engine} cannot run {source}: {why}; use --engine bioimageio")
                lean = False
        if not lean and engine in ("onnxruntime", "openvino"):
            raise CristaeZooError(f"--engine {engine} runs package folders (rdf.yaml) only; use --engine bioimageio")
        if lean:
            self.engine = "onnxruntime" if engine == "auto" else engine
            if self.engine == "openvino":
                from cristae_zoo.engines import require_openvino

                require_openvino(precision)  # refuse now, before any input is read or output staged
            self.tensors = describe_rdf(self.rdf.rdf)
            self.weights_format = "onnx"
            self.name = self.rdf.name
            self._weights_path = self.rdf.weights_file("onnx")  # sha256-checked once, here
        else:
            self.engine = "bioimageio"
            self.descr = load_package(package)
            self.tensors = describe_package(self.descr)
            self.weights_format = normalize_weights_format(weights_format, self.descr)
            self.name = str(self.descr.name)
            self.in_id, self.out_id = str(self.descr.inputs[0].id), str(self.descr.outputs[0].id)
            self.in_dims = _dims(self.descr.inputs[0].axes)
            self.out_dims = _dims(self.descr.outputs[0].axes)
        td = self.tensors
        if tile is not None:
            for axis in td.spatial_axes:
                step = max(1, td.step.get(axis, 1))
                if tile // step * step - 2 * td.halo.get(axis, 0) < step:
                    raise CristaeZooError(
                        f"tile {tile}: too small for this model's halo of {td.halo.get(axis, 0)} px along {axis};"
                        f" expected at least {2 * td.halo.get(axis, 0) + step}"
                    )
        self.tile = tile
        self._pp: Any = None
        # Runners (ONNX Runtime / OpenVINO sessions) by how many planes run at once: `lend_runner`.
        self._made: dict[int, int] = {}
        self._free: dict[int, list[Any]] = {}
        self._runners_changed = threading.Condition()
        self._runner_description: str | None = None

    @property
    def config_block(self) -> dict[str, Any]:
        """The package's rdf `config.cristae_zoo` (empty if none)."""
        if self.rdf is not None:
            config = self.rdf.rdf.get("config") or {}
        else:
            config = self.descr.model_dump(mode="json").get("config") or {}
        block = config.get("cristae_zoo") if isinstance(config, dict) else None
        return block if isinstance(block, dict) else {}

    @property
    def conditions(self) -> Any:
        """The package's conditions of use (`conditions.ConditionsOfUse`), or None if it states none."""
        from cristae_zoo.conditions import read_conditions

        return read_conditions(self.config_block)

    @property
    def description(self) -> str:
        """The engine, e.g. 'onnxruntime 1.23.2 fp32' (after the first prediction) or 'bioimageio.core (onnx)'."""
        if self.engine == "bioimageio":
            return f"bioimageio.core ({self.weights_format or 'default weights'})"
        return self._runner_description or f"{self.engine} {self.precision}"

    @property
    def pipeline(self) -> Any:
        if self._pp is None:
            from bioimageio.core import create_prediction_pipeline

            self._pp = create_prediction_pipeline(self.descr, weights_format=self.weights_format)
        return self._pp

    def _make_runner(self, threads: int | None) -> Any:
        from cristae_zoo.engines import OnnxRuntimeRunner, OpenVinoRunner

        if self.engine == "openvino":
            return OpenVinoRunner(self._weights_path, self.precision)
        return OnnxRuntimeRunner(self._weights_path, threads)

    @contextmanager
    def lend_runner(self, at_once: int = 1) -> Iterator[Any]:
        """A runner for one call while `at_once` calls run at the same time (threads restoring planes at once), made
        on first need and kept. With `at_once` > 1 each call gets its own ONNX Runtime session with cores // at_once
        intra-op threads: on these 2 cores two single-threaded sessions on two planes restore more per second than
        one session splitting each operator over both cores, with bit-identical results (docs/benchmarks.md, "e2e").
        At most `at_once` runners exist per value; a call beyond them waits for one. The bioimageio engine has no
        runner (None is lent): the same limit then only bounds how many of its calls run at once."""
        if at_once < 1:
            raise CristaeZooError(f"at_once {at_once}: expected at least 1")
        with self._runners_changed:
            free = self._free.setdefault(at_once, [])
            while not free and self._made.get(at_once, 0) >= at_once:
                self._runners_changed.wait()
            runner, new = (free.pop(), False) if free else (None, True)
            if new:  # counted now, made outside the lock (making a session takes a while)
                self._made[at_once] = self._made.get(at_once, 0) + 1
        if new and self.engine != "bioimageio":
            try:
                runner = self._make_runner(None if at_once == 1 else max(1, cpu_cores() // at_once))
            except BaseException:
                with self._runners_changed:
                    self._made[at_once] -= 1
                    self._runners_changed.notify()
                raise
            self._runner_description = self._runner_description or runner.description
        try:
            yield runner
        finally:
            with self._runners_changed:
                free.append(runner)
                self._runners_changed.notify()

    def close(self) -> None:
        if self._pp is not None:
            self._pp.unload()
            self._pp = None
        with self._runners_changed:
            self._made.clear()
            self._free.clear()

    def __enter__(self) -> Restorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------------------------- tile layout

    def _layout(self, padded: tuple[int, ...]) -> tuple[list[int], list[int]]:
        """(inner, halo) per spatial axis for a padded unit: one tile along an axis that fits, else tiles of
        `tile` − 2·halo px (a multiple of the step)."""
        td = self.tensors
        inner, halo = [], []
        for axis, n in zip(td.spatial_axes, padded):
            h = td.halo.get(axis, 0)
            step = max(1, td.step.get(axis, 1))
            if self.tile is None or n <= self.tile:
                inner.append(n)
                halo.append(0)
            else:
                # As few tiles as fit `tile`, then balanced: equal tiles (a multiple of the step) rather than full
                # tiles and a remainder, so the windows have one or two shapes and ONNX Runtime's arena reuses the
                # same blocks for every tile (docs/benchmarks.md, "e2e"); the halo recomputed is the same.
                widest = max(step, (self.tile // step * step - 2 * h) // step * step)
                k = -(-n // widest)
                inner.append(-(-(-(-n // k)) // step) * step)
                halo.append(h)
        return inner, halo

    def n_tiles(self, shape: tuple[int, ...]) -> int:
        td = self.tensors
        padded = tuple(td.valid_size(a, n) for a, n in zip(td.spatial_axes, shape))
        inner, _ = self._layout(padded)
        return int(np.prod([len(range(0, n, i)) for n, i in zip(padded, inner)]))

    # ------------------------------------------------------------------------------------------------ predict

    def predict_units(
        self,
        units: np.ndarray,
        progress: Callable[[int, int], None] | None = None,
        *,
        overwrite_input: bool = False,
        runner: Any = None,
    ) -> np.ndarray:
        """Predict (B, C_in, [Z], Y, X) units (each normalised on its own, as the package says); returns float32
        (B, C_out, [Z], Y·s, X·s) with s the package's output scale. `overwrite_input`: the units may be normalised
        in place (saves a full-size copy; the restore path passes its own arrays). `runner`: one lent by
        `lend_runner` (threads restoring planes at once); default: this restorer's one runner."""
        if runner is None and self.engine != "bioimageio":
            with self.lend_runner() as lent:
                return self.predict_units(units, progress, overwrite_input=overwrite_input, runner=lent)
        td = self.tensors
        pp = self.pipeline if self.engine == "bioimageio" else None
        units = np.asarray(units, dtype=np.float32)
        if units.ndim != 2 + td.ndim or units.shape[1] != td.n_in:
            raise CristaeZooError(
                f"expected units of shape (batch, {td.n_in} channel(s), {', '.join(td.spatial_axes)}), got {units.shape}"
            )
        shape = units.shape[2:]
        padded = tuple(td.valid_size(a, n) for a, n in zip(td.spatial_axes, shape))

        if self.engine == "bioimageio":
            sample = self._sample(self.in_id, self.in_dims, units, "image")
            pp.apply_preprocessing(sample)  # per-sample statistics, computed on the unpadded units
            x = self._from_tensor(sample.members[self.in_id], self.in_dims)
            stat = sample.stat  # postprocessing may refer to the input's statistics
            del sample
        else:
            from cristae_zoo.engines import Processing

            processing = Processing(self.rdf)
            x, stat = processing.preprocess(units, inplace=overwrite_input)
        del units
        if padded != shape:
            x = np.pad(x, [(0, 0), (0, 0)] + [(0, p - n) for p, n in zip(padded, shape)], mode="symmetric")

        def run(block: np.ndarray) -> np.ndarray:
            if pp is None:
                return runner(block)
            result = pp.predict_sample_without_blocking(
                self._sample(self.in_id, self.in_dims, block, "block"),
                skip_preprocessing=True,
                skip_postprocessing=True,
                skip_input_padding=True,
                skip_output_cropping=True,
            )
            return self._from_tensor(result.members[self.out_id], self.out_dims)

        inner, halo = self._layout(padded)
        total = int(np.prod([len(range(0, n, i)) for n, i in zip(padded, inner)]))
        done = [0]

        def run_counted(block: np.ndarray) -> np.ndarray:
            out = run(block)
            done[0] += 1
            if progress:
                progress(done[0], total)
            return out

        scale = [td.axis_scale(a) for a in td.spatial_axes]
        mins = [td.min_size.get(a, 1) for a in td.spatial_axes]
        if total == 1:
            y = run_counted(x)
        else:
            from cristae_zoo.tiling import tiled_apply

            # The restore path hands over its own arrays (`overwrite_input`): where the output has the input's shape,
            # the tiles write into it (one full-size array instead of two; docs/benchmarks.md, "What a plane costs").
            owned = overwrite_input or padded != shape  # np.pad made a new array
            in_place = owned and pp is None and all(k == 1 for k in scale) and td.n_out == td.n_in and x.dtype == np.float32
            y = tiled_apply(run_counted, x, inner, halo, mins, spatial=td.ndim, scale=scale, in_place=in_place)
        del x
        y = np.ascontiguousarray(y[(slice(None), slice(None), *(slice(0, n * k) for n, k in zip(shape, scale)))])
        if pp is None:
            return processing.postprocess(y, stat)
        from bioimageio.core import Sample

        out_sample = Sample(members={self.out_id: self._tensor(y, self.out_dims)}, stat=stat, id="image")
        pp.apply_postprocessing(out_sample)
        return self._from_tensor(out_sample.members[self.out_id], self.out_dims)

    def predict(self, planes: np.ndarray, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Restore (B, Y, X) planes with a one-channel-in, one-channel-out 2D package; returns float32 (B, Y', X')."""
        td = self.tensors
        if td.ndim != 2 or td.n_in != 1 or td.n_out != 1:
            raise CristaeZooError(
                f"{self.name}: takes {td.n_in} channel(s) of {td.spatial_axes.upper()} and gives {td.n_out};"
                " use predict_units"
            )
        planes = np.asarray(planes, dtype=np.float32)
        if planes.ndim == 2:
            planes = planes[None]
        return self.predict_units(planes[:, None], progress=progress)[:, 0]

    # -------------------------------------------------------------------------------------- tensor plumbing

    @staticmethod
    def _tensor(array: np.ndarray, dims: tuple[str, ...]) -> Any:
        """(B, C, *spatial) → a bioimageio Tensor with the package's dims (a package without a channel axis gets
        the channel axis squeezed)."""
        from bioimageio.core import Tensor

        if "channel" not in dims:
            array = array[:, 0]
        return Tensor.from_numpy(array, dims=dims)

    @classmethod
    def _sample(cls, member_id: str, dims: tuple[str, ...], array: np.ndarray, sample_id: str) -> Any:
        from bioimageio.core import Sample

        return Sample(members={member_id: cls._tensor(array, dims)}, stat={}, id=sample_id)

    @staticmethod
    def _from_tensor(tensor: Any, dims: tuple[str, ...]) -> np.ndarray:
        array = tensor.data.transpose(*dims).to_numpy().astype(np.float32, copy=False)
        return array if "channel" in dims else array[:, None]


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
