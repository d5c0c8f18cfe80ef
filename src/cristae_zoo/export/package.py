"""The one packager: a trained network of any system → a bioimage.io model package (folder, and a .zip beside it).

`package_model(MODEL_DIR, OUTPUT)` loads a trained model folder (`core.model_dir.load_model_dir`);
`package_network(trained, OUTPUT)` packages a network already in memory (the re-export of the shipped packages uses it). What goes in:

- weights in three formats through the shared exporters (frozen TF SavedModel, ONNX from it, traced TorchScript
  twin), each checked against Keras on the test input;
- rdf.yaml built from the system's `TensorDescription` and its template (`rdf_templates/<system>.yaml`, see
  `export.rdf`), with `config.cristae_zoo` = {system, version, tensors (the TensorDescription, verbatim: the
  predictor reads it back), training (the training config), halo (tiling error per halo), export (max |Δ| per
  format), test_input (where it came from)};
- test tensors: an integer-valued crop of a test image (so that deepImageJ's nearest-rank and bioimageio.core's
  interpolated percentiles agree) and the Keras output on it as bioimageio.core preprocesses it; sample tensors:
  the same pixels as TIFFs (ImageJ hyperstacks, a C axis for several channels); a 2:1 cover; README;
- attachments: `keras_weights.weights.h5` (the trainable Keras weights, for fine-tuning), `training_config.yaml`,
  and what the model folder has of history, loss curve and evaluation.

Safety (issue 16): the package is staged in a hidden folder beside OUTPUT and moved into place only when complete
and below the size cap. An existing OUTPUT is never deleted or replaced without `overwrite`, and even then only if
it is a package folder (has rdf.yaml) — never a trained model folder, the input model folder or a folder holding
either. Two runs racing for one OUTPUT cannot both succeed (the final rename onto a non-empty folder fails).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cristae_zoo.core.tensors import TensorDescription
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.export.base import (
    DEFAULT_TOLERANCE,
    INPUT_NAME,
    OUTPUT_NAME,
    ExportContext,
    ExportedWeights,
    keras_predict,
)
from cristae_zoo.export.readme import conditions_of_use_markdown  # noqa: F401  (re-exported: the studies use it)

MAX_PACKAGE_BYTES = 30 * 1024**2
DEFAULT_CROP = 256
KERAS_WEIGHTS_NAME = "keras_weights.weights.h5"
TRAINING_CONFIG_NAME = "training_config.yaml"
#: model-folder files attached to the package (source → name in the package)
PROVENANCE_FILES = (
    ("history.csv", "training_history.csv"),
    ("loss_curve.png", "loss_curve.png"),
    ("evaluation/metrics.csv", "evaluation_metrics.csv"),
)
#: a model folder's conditions of use (`conditions.ConditionsOfUse` fields, e.g. from `cristae-zoo study limits`),
#: copied into rdf `config.cristae_zoo.conditions`, where `predict` checks inputs against them
CONDITIONS_FILE = "conditions.yaml"
#: files that make a folder a trained model folder (never replaced by a package)
MODEL_FOLDER_MARKERS = ("weights.keras", "config.yaml", "checkpoints")

#: Steps reported to `progress` (for a progress bar).
PACKAGE_STEPS = (
    "load model",
    "test input",
    "tensorflow_saved_model_bundle",
    "onnx",
    "torchscript",
    "test output",
    "halo",
    "write package",
    "zip",
)


@dataclass
class TrainedNetwork:
    """What the packager needs of a trained network: its system, training config and Keras model
    (`core.model_dir.LoadedModel` has the same fields)."""

    system: Any  # the system's name, or the System
    config: Any  # the system's TrainingConfig
    keras_model: Any  # channels-last, one input, one output
    model_dir: Path | None = None  # provenance (history, evaluation, conditions of use); None: none attached


@dataclass(frozen=True)
class PackageResult:
    folder: Path
    zip_path: Path | None
    rdf: Path
    exported: list[ExportedWeights]
    tensors: TensorDescription
    halo_errors: dict[str, dict[int, float]]
    size_bytes: int
    test_input: str
    extra: dict[str, Any] = field(default_factory=dict)


# -------------------------------------------------------------------------------------------------- test input


def as_integer_valued(x: np.ndarray) -> tuple[np.ndarray, str]:
    """Integer-valued pixels (deepImageJ's nearest-rank and bioimageio.core's interpolated percentiles then agree).

    Counts are rounded; an image of small floats (e.g. already normalised) is first mapped affinely onto 0…10000,
    which every normalisation of the package (percentiles, z-score, min-max) undoes."""
    x = np.asarray(x, dtype=np.float64)
    if np.all(x == np.rint(x)):
        return x.astype(np.float32), "as given (integer-valued)"
    lo, hi = float(x.min()), float(x.max())
    if hi - lo >= 1000:
        return np.rint(x).astype(np.float32), "rounded to integers"
    return np.rint((x - lo) / max(hi - lo, 1e-12) * 10000).astype(np.float32), "mapped affinely onto 0…10000, rounded"


def channels_first_input(image: np.ndarray, td: TensorDescription, where: str) -> np.ndarray:
    """(C, *spatial) from an image that is (*spatial), (C, *spatial), (1, C, *spatial) or, for a frames-as-channels
    or single-channel network, a (T, *spatial) movie (the window around its middle frame, or that frame)."""
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == td.ndim + 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == td.ndim:
        x = x[None]
    if x.ndim != td.ndim + 1:
        raise CristaeZooError(f"{where}: test input of shape {image.shape}, expected (C, {', '.join(td.spatial_axes)})")
    if (td.frames_as_channels or td.n_in == 1) and x.shape[0] > td.n_in:  # a movie: the frames around its middle
        mid = x.shape[0] // 2
        x = x[mid - td.n_in // 2 : mid + td.n_in // 2 + 1]
    if x.shape[0] != td.n_in:
        raise CristaeZooError(
            f"{where}: test input has {x.shape[0]} channel(s), the network takes {td.n_in} ({', '.join(td.input_channels)})"
        )
    return x


def largest_valid(td: TensorDescription, axis: str, n: int) -> int:
    """The largest valid input size ≤ n along `axis` (0 if none)."""
    lo, step = td.min_size.get(axis, 1), td.step.get(axis, 1)
    if n < lo:
        return 0
    return lo + (n - lo) // step * step if step > 0 else lo


def select_crop(x: np.ndarray, td: TensorDescription, crop: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """The window of valid size (y, x at most `crop` px) with the most structure (highest standard deviation)."""
    sizes = []
    for a, n in zip(td.spatial_axes, x.shape[1:]):
        size = largest_valid(td, a, min(n, crop) if a in "yx" else n)
        if size == 0:
            raise CristaeZooError(
                f"test input {x.shape[1:]} is too small along {a}: the package needs at least {td.min_size.get(a)} px"
            )
        sizes.append(size)
    starts = []
    for n, size in zip(x.shape[1:], sizes):
        stride = max(1, size // 8)
        starts.append(list(range(0, n - size + 1, stride)))
    import itertools

    best, origin = -1.0, tuple(0 for _ in sizes)
    for o in itertools.product(*starts):
        s = float(x[(slice(None), *(slice(a, a + k) for a, k in zip(o, sizes)))].std())
        if s > best:
            best, origin = s, o
    return x[(slice(None), *(slice(a, a + k) for a, k in zip(origin, sizes)))].copy(), origin


def held_out_input(trained: TrainedNetwork) -> Path | None:
    """The first image of the data folder's held-out inputs (`DATA/test/input/`, as `prepare` writes them), with
    DATA resolved as written, then relative to the model folder and its parent."""
    data_dir = Path(getattr(trained.config, "data_dir", "") or "")
    bases = [Path.cwd()] + ([Path(trained.model_dir), Path(trained.model_dir).parent] if trained.model_dir else [])
    for base in [Path("/")] if data_dir.is_absolute() else bases:
        folder = base / data_dir / "test" / "input"
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff") and not p.name.startswith("."))
            if files:
                return files[0]
    return None


def default_test_input(trained: TrainedNetwork, system: Any) -> tuple[np.ndarray, str]:
    """A system's own test image (`package_test_input(config, model_dir)` if it has that hook), else the first
    held-out input of its data folder, else the first validation sample of its training data."""
    hook = getattr(system, "package_test_input", None)
    if callable(hook):
        image, where = hook(trained.config, trained.model_dir)
        return np.asarray(image, np.float32), str(where)
    held_out = held_out_input(trained)
    if held_out is not None:
        return read_test_input(held_out), held_out.name
    try:
        batches = system.training_data(trained.config).validation_batches()
    except CristaeZooError as err:
        raise CristaeZooError(f"no test input: {err}; pass --test-input IMAGE") from None
    x = np.asarray(batches[0][0][0], np.float32)  # channels-last (*spatial, C)
    return np.moveaxis(x, -1, 0), f"validation sample 0 of {trained.config.data_dir}"


def read_test_input(path: Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise CristaeZooError(f"{path}: test input not found")
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path)
        import tifffile

        return tifffile.imread(path)
    except Exception as err:  # unreadable files come in many kinds
        raise CristaeZooError(f"{path}: cannot read the test input ({type(err).__name__}: {err})") from None


def normalise_like_package(x: np.ndarray, td: TensorDescription) -> np.ndarray:
    """(B, C, *spatial) normalised per sample and channel as the rdf's preprocessing does (eps 1e-6)."""
    axes = tuple(range(2, x.ndim))
    if td.normalisation.kind == "zscore":
        mean, std = x.mean(axis=axes, keepdims=True), x.std(axis=axes, keepdims=True)
        return ((x - mean) / (std + 1e-6)).astype(np.float32)
    lo = np.percentile(x, td.normalisation.low, axis=axes, keepdims=True)
    hi = np.percentile(x, td.normalisation.high, axis=axes, keepdims=True)
    return ((x - lo) / (hi - lo + 1e-6)).astype(np.float32)


def preprocess_like_core(descr: Any) -> np.ndarray:
    """The test input after the package's preprocessing, computed by bioimageio.core itself."""
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import get_test_input_sample

    sample = get_test_input_sample(descr)
    with create_prediction_pipeline(descr, weights_format="onnx") as pp:
        pp.apply_preprocessing(sample)
    return sample.members[INPUT_NAME].data.to_numpy().astype(np.float32)


# -------------------------------------------------------------------------------------------- images and cover


def write_hyperstack(path: Path, image: np.ndarray, spatial: str, pixel_size_nm: float | None) -> None:
    """(C, *spatial) as an ImageJ hyperstack: YX, ZYX, CYX or ZCYX (deepImageJ reads a plain multi-page TIFF as a
    batch, a C axis as channels)."""
    import tifffile

    image = np.asarray(image, np.float32)
    if image.shape[0] == 1:
        data, axes = image[0], spatial.upper()
    elif spatial == "zyx":
        data, axes = np.moveaxis(image, 0, 1), "ZCYX"
    else:
        data, axes = image, "CYX"
    kwargs: dict[str, Any] = {"imagej": True, "metadata": {"axes": axes}}
    if pixel_size_nm:
        px_um = pixel_size_nm / 1000.0
        kwargs["resolution"] = (1 / px_um, 1 / px_um)
        kwargs["metadata"]["unit"] = "um"
    tifffile.imwrite(path, data, **kwargs)


def _to_uint8(image: np.ndarray, low: float = 0.5, high: float = 99.8) -> np.ndarray:
    lo, hi = np.percentile(image, [low, high])
    return (np.clip((image - lo) / (hi - lo + 1e-12), 0, 1) * 255).round().astype(np.uint8)


def write_cover(x: np.ndarray, y: np.ndarray, td: TensorDescription, dest: Path) -> Path:
    """2:1, the input (its middle frame, middle plane) on the left, the first output channel on the right."""
    import imageio.v3 as iio

    raw = x[td.n_in // 2 if td.frames_as_channels else 0]
    out = y[0]
    if td.ndim == 3:
        raw, out = raw[raw.shape[0] // 2], out[out.shape[0] // 2]
    s = td.output_scale
    raw = np.kron(raw, np.ones((s, s), np.float32)) if s > 1 else raw
    iio.imwrite(dest, np.concatenate([_to_uint8(raw), _to_uint8(out)], axis=1))
    return dest


# ------------------------------------------------------------------------------------------- output safety


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def check_output(output: Path, *, overwrite: bool, protect: Sequence[Path] = ()) -> None:
    """Refuse an OUTPUT that packaging would lose data in (issue 16); one line naming the folder and the fix."""
    out = output.resolve()
    for p in protect:
        p = Path(p).resolve()
        if out == p or _is_within(p, out):
            raise CristaeZooError(f"{output}: is (or holds) the model folder {p}; choose another --output")
    if not output.exists() and not output.is_symlink():
        return
    if not output.is_dir():
        raise CristaeZooError(f"{output}: exists and is not a folder; choose another --output")
    markers = [m for m in MODEL_FOLDER_MARKERS if (output / m).exists()]
    if markers:
        raise CristaeZooError(f"{output}: is a trained model folder ({', '.join(markers)}); choose another --output")
    entries = list(output.iterdir())
    if not entries:
        return  # an empty folder: nothing to lose
    held = next((p for p in entries if p.is_dir() and any((p / m).exists() for m in MODEL_FOLDER_MARKERS)), None)
    if held is not None:
        raise CristaeZooError(f"{output}: holds the trained model folder {held.name}; choose another --output")
    if not (output / "rdf.yaml").is_file():
        raise CristaeZooError(
            f"{output}: exists and is not a package folder (no rdf.yaml); choose another --output (nothing is replaced)"
        )
    held = next((p for p in output.rglob("weights.keras")), None)
    if held is not None:
        raise CristaeZooError(f"{output}: holds a trained model ({held}); choose another --output")
    if not overwrite:
        raise CristaeZooError(f"{output}: a package exists there; pass --overwrite to replace it")


def check_zip_output(zip_path: Path, *, overwrite: bool) -> None:
    if not zip_path.exists():
        return
    if not overwrite:
        raise CristaeZooError(f"{zip_path}: exists; pass --overwrite to replace it (or --no-zip)")
    try:
        with zipfile.ZipFile(zip_path) as zf:
            is_package = "rdf.yaml" in zf.namelist()
    except (zipfile.BadZipFile, OSError):
        is_package = False
    if not is_package:
        raise CristaeZooError(f"{zip_path}: exists and is not a package zip (no rdf.yaml); choose another --output")


def place_folder(staging: Path, output: Path) -> None:
    """Move the complete `staging` folder to `output`; an existing package folder there (checked by
    `check_output`) is moved aside first and deleted only once the new one is in place."""
    if output.is_dir() and not any(output.iterdir()):
        output.rmdir()
    if output.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old.", dir=output.parent))
        old.rmdir()
        os.rename(output, old)
        try:
            os.rename(staging, output)
        except OSError:
            os.rename(old, output)  # put the old package back
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(staging, output)
    except OSError as err:  # another run created it meanwhile: do not replace what it wrote
        raise CristaeZooError(f"{output}: was created by another run while packaging ({err.strerror})") from None


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def zip_folder(folder: Path, dest: Path) -> Path:
    """The package folder's files, flat, in a zip (written atomically)."""
    from cristae_zoo.export.tensorflow import zip_flat

    return zip_flat(folder, dest)


# ------------------------------------------------------------------------------------------------------ values


def flat_values(training: dict[str, Any]) -> dict[str, Any]:
    """Template placeholders from the training config: top-level scalars, and nested leaves by their own name."""
    values: dict[str, Any] = {}
    for key, value in training.items():
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(v, (dict, list)):
                    values.setdefault(k, v)
                    values[f"{key}_{k}"] = v
        elif isinstance(value, list):  # sizes as 16×32×32, names as mito, dna
            numbers = all(isinstance(v, (int, float)) for v in value)
            values[key] = ("×" if numbers else ", ").join(map(str, value))
        else:
            values[key] = value
    return values


def description_values(td: TensorDescription, training: dict[str, Any], exported: Sequence[ExportedWeights],
                       model_dir: Path | None) -> dict[str, Any]:  # fmt: skip
    halo = next((td.halo[a] for a in "yx" if a in td.halo), 0)
    n = td.n_in
    frames = (f"{n} consecutive frames t-{n // 2} … t+{n // 2} as channels" if td.frames_as_channels else "one frame")
    summary = Path(model_dir) / "evaluation" / "summary.md" if model_dir is not None else None
    results = summary.read_text().strip() if summary is not None and summary.is_file() else "(not evaluated)"
    return flat_values(training) | {
        "halo": halo, "halo_in": halo, "halo_out": halo * td.output_scale,
        "halo_z": td.halo.get("z", 0), "min_z": td.min_size.get("z", 0),
        "min_size": td.min_size.get("y", 0), "step": td.step.get("y", 1), "scale": td.output_scale,
        "frames": frames, "variant": "MF" if td.frames_as_channels else "SF",
        "input_channels": ", ".join(td.input_channels),
        "input_axes": f"(batch, channel = {', '.join(td.input_channels)}, {', '.join(td.spatial_axes)})", "output_channels": ", ".join(td.output_channels),
        "results": results,
        "diffs": "; ".join(f"{e.weights_format}: {e.max_abs_diff:.2g}" for e in exported),
    }  # fmt: skip


def rescale_config(td: TensorDescription) -> dict[str, Any]:
    """The rescale requirement in the older layout (`config.cristae_zoo.rescale`) that rescale.py reads."""
    assert td.rescale is not None
    out: dict[str, Any] = {"training_pixel_size_nm": td.rescale.pixel_size_nm,
                           "factor_from_pixel_size": f"factor = pixel_size_nm / {td.rescale.pixel_size_nm:g}"}  # fmt: skip
    if td.rescale.structure_width_px:
        out["mitochondrion_width_px"] = td.rescale.structure_width_px
        out["mitochondrion_width_nm"] = round(td.rescale.structure_width_px * td.rescale.pixel_size_nm, 1)
        out["factor_from_width"] = f"factor = {td.rescale.structure_width_px:g} / mean_mitochondrion_width_px"
    return out


# ------------------------------------------------------------------------------------------------------ package


def package_model(
    model_dir: Path | str,
    output: Path | str,
    *,
    template: Path | str | None = None,
    test_input: Path | str | np.ndarray | None = None,
    crop: int = DEFAULT_CROP,
    overwrite: bool = False,
    zip_package: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    max_bytes: int = MAX_PACKAGE_BYTES,
    progress: Callable[[str], None] | None = None,
) -> PackageResult:
    """Export the trained model in MODEL_DIR (any system) as the bioimage.io package folder OUTPUT (+ OUTPUT.zip)."""
    output = Path(output)
    # refuse before the slow part, and again before the move (another run may have written meanwhile)
    check_output(output, overwrite=overwrite, protect=[Path(model_dir)])
    from cristae_zoo.core.model_dir import load_model_dir

    trained = load_model_dir(model_dir)
    if progress is not None:
        progress("load model")
    conditions = None
    conditions_file = Path(model_dir) / CONDITIONS_FILE
    if conditions_file.is_file():
        try:
            conditions = yaml.safe_load(conditions_file.read_text())
        except yaml.YAMLError as err:
            raise CristaeZooError(f"{conditions_file}: not valid YAML ({' '.join(str(err).split())[:200]})") from None
        if not isinstance(conditions, dict):
            raise CristaeZooError(f"{conditions_file}: expected a mapping (width_px, max_relative_noise, …)")
        # Validate with the model the predictor reads (conditions.ConditionsOfUse): a bad key fails here, at
        # packaging, not in every user's predict.
        from cristae_zoo.conditions import read_conditions

        try:
            conditions = read_conditions({"conditions": conditions}).model_dump(mode="json", exclude_unset=True)  # type: ignore[union-attr]
        except CristaeZooError as err:
            raise CristaeZooError(f"{conditions_file}: {err}") from None
    return package_network(
        trained, output, template=template, test_input=test_input, crop=crop, overwrite=overwrite,
        zip_package=zip_package, tolerance=tolerance, max_bytes=max_bytes, conditions=conditions, progress=progress,
    )  # fmt: skip


def package_network(
    trained: TrainedNetwork,
    output: Path | str,
    *,
    template: Path | str | dict[str, Any] | None = None,
    test_input: Path | str | np.ndarray | None = None,
    crop: int = DEFAULT_CROP,
    overwrite: bool = False,
    zip_package: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    max_bytes: int = MAX_PACKAGE_BYTES,
    tensors: TensorDescription | None = None,
    readme_sections: Sequence[tuple[str, str]] | None = None,
    training_facts: Sequence[str] = (),
    conditions: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> PackageResult:
    """Package a trained network held in memory; see the module docstring. `tensors` overrides the system's
    description (only to re-export an older package as it was), `readme_sections` the template's README sections;
    `conditions` (the conditions of use that `predict` checks inputs against) go to `config.cristae_zoo.conditions`."""
    from bioimageio.spec import load_description, save_bioimageio_package_as_folder

    from cristae_zoo import __version__
    from cristae_zoo.core.system import get_system
    from cristae_zoo.export import exporters as all_exporters
    from cristae_zoo.export.halo import cut_tiling_errors, halo_candidates
    from cristae_zoo.export.rdf import (
        build_description,
        fill,
        find_template,
        load_template,
        package_id,
        plain_file_fields,
        raise_if_invalid,
        variant_values,
    )
    from cristae_zoo.export.readme import write_readme

    def step_done(name: str) -> None:
        if progress is not None:
            progress(name)

    output = Path(output)
    protect = [trained.model_dir] if trained.model_dir is not None else []
    check_output(output, overwrite=overwrite, protect=protect)
    zip_path = output.with_name(output.name + ".zip") if zip_package else None
    if zip_path is not None:
        check_zip_output(zip_path, overwrite=overwrite)
    # `trained.system` is a name (TrainedNetwork) or the System itself (core.model_dir.LoadedModel)
    system = get_system(trained.system) if isinstance(trained.system, str) else trained.system
    system_name = str(system.name)
    td = tensors or system.tensor_description(trained.config)
    tmpl = template if isinstance(template, dict) else load_template(find_template(system_name, template))
    training = trained.config.model_dump(mode="json")
    model = trained.keras_model

    # ---- test input (raw, integer-valued, a valid size)
    if test_input is None:
        raw, source = default_test_input(trained, system)
    elif isinstance(test_input, np.ndarray):
        raw, source = test_input, "given array"
    else:
        raw, source = read_test_input(Path(test_input)), Path(test_input).name
    raw = channels_first_input(raw, td, source)
    raw, origin = select_crop(raw, td, crop)
    raw, rounding = as_integer_valued(raw)
    test_in = raw[None]
    # refuse a network too large for the cap before the slow exports: four copies of float32 weights (SavedModel,
    # ONNX, TorchScript, Keras) are the bulk of a package
    estimate = 4 * 4 * int(model.count_params())
    if estimate > max_bytes:
        raise CristaeZooError(
            f"{output}: the package would be about {estimate / 1024**2:.1f} MB ({model.count_params():,} parameters ×"
            f" 4 formats), more than the {max_bytes / 1024**2:.0f} MB cap (use a smaller network); nothing was written"
        )
    test_input_info = {"source": source, "crop_origin": list(origin), "shape": list(raw.shape), "values": rounding}
    step_done("test input")

    work = Path(tempfile.mkdtemp(prefix="cristae_zoo_package_"))
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.staging.", dir=output.parent))
    ctx = ExportContext(
        model, ndim=td.ndim, n_in=td.n_in, torch_twin=lambda: system.build_torch_twin(trained.config, model),
        work_dir=work / "export",
    )  # fmt: skip
    try:
        ctx.work_dir.mkdir()
        files_dir = work / "files"
        files_dir.mkdir()
        files = {name: files_dir / f for name, f in (
            ("test_input", "test_input.npy"), ("test_output", "test_output.npy"), ("sample_input", "sample_input.tif"),
            ("sample_output", "sample_output.tif"), ("readme", "README.md"), ("cover", "cover.png"))}  # fmt: skip
        np.save(files["test_input"], test_in)
        px = td.rescale.pixel_size_nm if td.rescale is not None else None
        write_hyperstack(files["sample_input"], raw, td.spatial_axes, px)

        # ---- weights, each checked against Keras
        x_check = normalise_like_package(test_in, td)
        exporters = list(all_exporters().values())
        exported: list[ExportedWeights] = []
        for exporter in exporters:
            exported.append(exporter.export_and_check(ctx, files_dir, x_check, tolerance=tolerance))
            step_done(exporter.weights_format)

        # ---- attachments
        attachments = [files_dir / KERAS_WEIGHTS_NAME, files_dir / TRAINING_CONFIG_NAME]
        model.save_weights(str(attachments[0]))
        attachments[1].write_text(yaml.safe_dump(training, sort_keys=False, allow_unicode=True))
        if trained.model_dir is not None:
            for rel, name in PROVENANCE_FILES:
                src = Path(trained.model_dir) / rel
                if src.is_file():
                    shutil.copyfile(src, files_dir / name)
                    attachments.append(files_dir / name)

        halo_errors: dict[str, dict[int, float]] = {}

        def describe(y: np.ndarray) -> Any:
            np.save(files["test_output"], y)
            write_hyperstack(files["sample_output"], y[0], td.spatial_axes, px / td.output_scale if px else None)
            write_cover(raw, y[0], td, files["cover"])
            values = description_values(td, training, exported, trained.model_dir)
            values |= {k: fill(v, values) for k, v in variant_values(tmpl, training).items()}
            write_readme(
                files["readme"], template=tmpl, values=values, system=system_name, tensors=td, training=training,
                exported=exported, halo_errors=halo_errors, model_dir=trained.model_dir, sections=readme_sections,
                training_facts=training_facts,
            )  # fmt: skip
            bio = dict(tmpl.get("bioimageio") or {})
            bio["model_parameter_count"] = int(model.count_params())
            cz: dict[str, Any] = {
                "system": system_name,
                "version": __version__,
                "tensors": td.model_dump(mode="json"),
                "training": training,
                "halo": {"declared_input_px": dict(td.halo),
                         "tiling_max_abs_diff_by_halo": {a: {str(h): d for h, d in e.items()} for a, e in halo_errors.items()}},
                "export": {"tolerance": tolerance,
                           "max_abs_diff_vs_keras": {e.weights_format: e.max_abs_diff for e in exported}},
                "test_input": test_input_info,
            }  # fmt: skip
            if td.rescale is not None:
                cz["rescale"] = rescale_config(td)
            if conditions:
                cz["conditions"] = dict(conditions)
            config = {
                "bioimageio": bio,
                "deepimagej": {"pyramidal_model": False, "allow_tiling": True,
                               "model_keys": {"model_tag": "tf.saved_model.tag_constants.SERVING",
                                              "signature_definition": "tf.saved_model.signature_constants"
                                                                      ".DEFAULT_SERVING_SIGNATURE_DEF_KEY"}},
                "cristae_zoo": cz,
            }  # fmt: skip
            descr = build_description(
                template=tmpl, values=values, tensors=td, exported=exported, exporters=exporters, files=files,
                attachments=attachments, config=config, ident=str(tmpl.get("id") or package_id(output.name)),
            )  # fmt: skip
            return raise_if_invalid(descr, str(output))

        # ---- test output: Keras on the input as bioimageio.core preprocesses it (first from our own normalisation,
        # to have a description core can read, then exactly)
        descr = describe(keras_predict(model, x_check))
        x_core = preprocess_like_core(descr).reshape(test_in.shape)
        y = keras_predict(model, x_core)
        step_done("test output")

        # ---- tiling error per halo, along each spatial axis, on the normalised test input
        for i, a in enumerate(td.spatial_axes):
            axis = i - td.ndim
            declared, step = td.halo.get(a, 0), max(1, td.step.get(a, 1))
            halo_errors[a] = cut_tiling_errors(lambda t: keras_predict(model, t), x_core, axis,
                                               halo_candidates(declared, step), step, td.axis_scale(a))  # fmt: skip
        step_done("halo")
        descr = describe(y)

        # ---- the folder: staged, checked, moved into place
        save_bioimageio_package_as_folder(descr, output_path=staging)
        plain_file_fields(staging / "rdf.yaml")
        staging.chmod(0o755)  # mkdtemp makes it private
        reloaded = load_description(staging / "rdf.yaml", perform_io_checks=True)
        raise_if_invalid(reloaded, f"{output} (rdf.yaml with plain documentation/covers)")
        size = folder_size(staging)
        if size > max_bytes:
            raise CristaeZooError(
                f"{output}: the package would be {size / 1024**2:.1f} MB, more than the {max_bytes / 1024**2:.0f} MB"
                " cap (use a smaller network); nothing was written"
            )
        check_output(output, overwrite=overwrite, protect=protect)
        place_folder(staging, output)
        step_done("write package")
        if zip_path is not None:
            check_zip_output(zip_path, overwrite=overwrite)
            zip_folder(output, zip_path)
        step_done("zip")
        final = [ExportedWeights(e.weights_format, output / e.path.name, e.max_abs_diff, e.parent, e.versions)
                 for e in exported]  # fmt: skip
        return PackageResult(
            folder=output, zip_path=zip_path, rdf=output / "rdf.yaml", exported=final, tensors=td,
            halo_errors=halo_errors, size_bytes=size, test_input=source,
        )  # fmt: skip
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        ctx.cleanup()
        shutil.rmtree(work, ignore_errors=True)
