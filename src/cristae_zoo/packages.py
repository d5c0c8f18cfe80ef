"""Finding bioimage.io packages: a package folder, its rdf.yaml, a package .zip, or the name of a model in
model_zoo/ (in the working directory or the source checkout). Light (no bioimageio import), shared by the predictor
and the fine-tuning loader."""

from __future__ import annotations

import zipfile
from pathlib import Path

from cristae_zoo.errors import CristaeZooError

MODEL_ZOO = "model_zoo"
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")


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
