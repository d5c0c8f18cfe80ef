"""Re-export the shipped bioimage.io packages through the one packager, with the same weights.

For each package in model_zoo/: rebuild the Keras network from the package's own config (`config.cristae_zoo.<…>`
or the attached training config) through its system, load the weights from the package's TF SavedModel variables
(matched by layer/weight name), check that Keras reproduces the package's test output from its test input
(≤ 1e-5), package it again with `export.package.package_network` (test input: the old one; README: the old
sections, minus those the packager writes), check the new test output against the old one, run `bioimageio test`,
and only then (`--install`) replace model_zoo/NAME.

    python benchmarks/reexport_zoo.py deepcristae pssr-sf --work /tmp/reexport --install

The training facts the old packages keep only in their README (steps, patch size, data folder) are transcribed in
`FACTS` below, from those READMEs and docs/{labelfree,pssr,luminescence}.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "model_zoo"
#: where the packages to re-export are read from (`--source`; the originals are in git history, see main())
SOURCE = ZOO

#: per package: the system, and training-config fields the old rdf does not hold (from its README and the docs)
FACTS: dict[str, dict[str, Any]] = {
    "deepcristae": {"system": "deepcristae"},  # training_config.yaml is attached to the old package
    "labelfree": {"system": "labelfree", "data_dir": "runs/labelfree/sim", "steps": 800, "patch_size": [64, 64]},
    "pssr-sf": {"system": "pssr", "data_dir": "runs/pssr/data", "steps": 800, "lr_patch": 32,
                "init_from": "runs/pssr/sf"},
    "pssr-mf": {"system": "pssr", "data_dir": "runs/pssr/data", "steps": 800, "lr_patch": 32,
                "init_from": "runs/pssr/sf"},
    "care-luminescence-pairs-3d": {"system": "luminescence", "data_dir": "runs/luminescence/data", "steps": 400,
                                   "max_minutes": 22, "patch_size": [16, 32, 32], "residual": False},
    "care-luminescence-binning-3d": {"system": "luminescence", "data_dir": "runs/luminescence/data", "steps": 400,
                                     "max_minutes": 22, "patch_size": [16, 32, 32], "residual": False},
    "care-luminescence-n2n-3d": {"system": "luminescence", "data_dir": "runs/luminescence/data", "steps": 400,
                                 "max_minutes": 16, "patch_size": [16, 32, 32], "residual": False},
}  # fmt: skip

#: sentences of the old READMEs that the re-export makes untrue, and what replaces them
README_FIXES = [
    (r"Pixel sizes are declared as axis\s+scales 4 \(input\) and 1 \(output\), unit-free, so that output size = 4 × input size holds exactly\.",
     "Axis scales are 16 (input) and 4 (output), unit-free, so that the spec and deepImageJ both size the output"
     " as 4 × the input."),
    (r"The package outputs the (\w+) mean, in the target's 1/99\.8-percentile-normalised units\. The scale\s+"
     r"\(a per-voxel uncertainty\) is not packaged:.*?beside `OUT/NAME\.tif`\.",
     r"The package outputs two channels: the \1 mean (channel `mean`), in the target's 1/99.8-percentile-normalised"
     " units, and the scale (channel `scale`, a per-voxel uncertainty) of the predicted distribution."),
    (r"- Weights: in Fiji/deepImageJ pick the ONNX weights \(opset 17; a SavedModel written by TF 2\.21 may not load in\s+"
     r"deepImageJ's TensorFlow Java\), in ilastik the TorchScript weights; Python: any of the three\.\n?", ""),
    (r"- Fiji/deepImageJ: pick the ONNX weights \(opset 17\); ilastik: TorchScript; Python: any of the three\.\n?", ""),
    (r"\nEvery weights format reproduces the Keras model on the test input\s*\(max \|Δ\|:[^)]*\)\.", ""),
]  # fmt: skip


#: output texts that changed with the re-export (luminescence now also outputs the scale)
OUTPUT_DESCRIPTIONS = {
    "luminescence": "Restored z-stack: mean and scale of the predicted per-voxel distribution, in normalised target units.",
}


def log(*args: Any) -> None:
    print(time.strftime("%H:%M:%S"), *args, flush=True)


def old_rdf(name: str) -> dict[str, Any]:
    return yaml.safe_load((SOURCE / name / "rdf.yaml").read_text())


def training_config(name: str, rdf: dict[str, Any]) -> Any:
    """The system's training config, from the package's own config plus `FACTS`."""
    from cristae_zoo.core.system import training_config_from_dict

    facts = dict(FACTS[name])
    cz = rdf["config"]["cristae_zoo"]
    if isinstance(cz.get("training"), dict):  # written by the one packager: the training config itself
        return training_config_from_dict(cz["training"], f"{name} (re-export)")
    bio_training = rdf["config"]["bioimageio"].get("training") or {}
    common = {"batch_size": int(bio_training.get("training_batch_size", 8)),
              "learning_rate": float(bio_training.get("initial_learning_rate", 1e-3))}  # fmt: skip
    system = facts["system"]
    if system == "deepcristae":
        data = yaml.safe_load((SOURCE / name / "training_config.yaml").read_text())
        data = {"system": "deepcristae", **data, "network": cz["network"]}
    elif system == "labelfree":
        lf = cz["labelfree"]
        data = {**facts, **common, "network": lf["network"], "structures": lf["structures"]}
    elif system == "pssr":
        ps = cz["pssr"]
        data = {**facts, **common, "network": ps["network"], "crappifier": ps["crappifier"]}
    else:
        lu = cz["luminescence"]
        loss = str(bio_training.get("loss_function", "laplace_nll")).removesuffix("_nll")
        data = {**facts, **common, "network": lu["network"], "mode": lu["mode"], "loss": loss}
    return training_config_from_dict(data, f"{name} (re-export)")


def saved_model_weights(name: str, work: Path) -> dict[str, np.ndarray]:
    """`layer/weight` → value of every variable in the package's TF SavedModel."""
    import tensorflow as tf

    folder = work / f"{name}_saved_model"
    shutil.rmtree(folder, ignore_errors=True)
    with zipfile.ZipFile(SOURCE / name / "tf_saved_model.zip") as zf:
        zf.extractall(folder)
    loaded = tf.saved_model.load(str(folder))
    out: dict[str, np.ndarray] = {}
    for v in loaded.variables:
        key = v.name.removesuffix(":0")
        if key in out and not np.array_equal(out[key], v.numpy()):
            raise SystemExit(f"{name}: two different variables named {key}")
        out[key] = v.numpy()
    return out


def load_weights(model: Any, weights: dict[str, np.ndarray], name: str) -> int:
    """Set every Keras weight from the SavedModel's variable of the same `layer/weight` name."""
    n = 0
    for layer in model.layers:
        for w in layer.weights:
            key = f"{layer.name}/{w.name}"
            if key not in weights:
                raise SystemExit(f"{name}: the SavedModel has no variable {key} (has e.g. {sorted(weights)[:4]})")
            if tuple(weights[key].shape) != tuple(w.shape):
                raise SystemExit(f"{name}: {key} has shape {weights[key].shape} in the SavedModel, {w.shape} in Keras")
            w.assign(weights[key])
            n += 1
    return n


def core_preprocessed_input(name: str) -> np.ndarray:
    """The old test input as bioimageio.core preprocesses it for the old package."""
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import get_test_input_sample
    from bioimageio.spec import load_description

    descr = load_description(SOURCE / name / "rdf.yaml")
    sample = get_test_input_sample(descr)
    with create_prediction_pipeline(descr, weights_format="onnx") as pp:
        pp.apply_preprocessing(sample)
    return sample.members["input"].data.to_numpy().astype(np.float32)


def template_from(name: str, rdf: dict[str, Any], system: str) -> dict[str, Any]:
    """The system's template with the package's own name, description, tags, authors, cites and tensor texts."""
    from cristae_zoo.export.rdf import find_template, load_template

    tmpl = load_template(find_template(system))
    bio = {k: v for k, v in (rdf["config"].get("bioimageio") or {}).items() if k not in ("model_parameter_count", "training")}
    return {**tmpl, "name": rdf["name"], "description": rdf["description"], "tags": rdf["tags"],
            "authors": rdf["authors"], "cite": rdf["cite"], "license": rdf["license"], "version": rdf.get("version"),
            "inputs": {"description": rdf["inputs"][0].get("description", "")},
            "outputs": {"description": OUTPUT_DESCRIPTIONS.get(system, rdf["outputs"][0].get("description", ""))},
            "bioimageio": bio, "id": name}  # fmt: skip


def readme_sections(name: str) -> list[tuple[str, str]]:
    from cristae_zoo.export.readme import split_sections

    _, sections = split_sections((SOURCE / name / "README.md").read_text())
    fixed = []
    for title, body in sections:
        for pattern, repl in README_FIXES:
            body = re.sub(pattern, repl, body, flags=re.S)
        fixed.append((title, body.strip()))
    return fixed


def provenance_folder(name: str, work: Path, sections: list[tuple[str, str]]) -> Path:
    """A model-folder-like view of what the old package carries about its training (attached history, loss curve,
    metrics; its "Conditions of use" section), for the packager to attach and cite again."""
    folder = work / f"{name}_provenance"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "evaluation").mkdir(parents=True)
    for old, new in (("training_history.csv", "history.csv"), ("loss_curve.png", "loss_curve.png"),
                     ("evaluation_metrics.csv", "evaluation/metrics.csv")):  # fmt: skip
        if (SOURCE / name / old).is_file():
            shutil.copyfile(SOURCE / name / old, folder / new)
    conditions = dict(sections).get("Conditions of use")
    if conditions:
        (folder / "conditions_of_use.md").write_text(conditions + "\n")
    return folder


def run_bioimageio_test(folder: Path) -> dict[str, str]:
    """bioimageio.core's `test_model` per weights format (in a scratch working directory: it unzips TF weights)."""
    import os

    from bioimageio.core import test_model

    results = {}
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="reexport_test_") as tmp:
        os.chdir(tmp)
        try:
            for wf in ("onnx", "tensorflow_saved_model_bundle", "torchscript"):
                summary = test_model(str(folder / "rdf.yaml"), weight_format=wf)
                failed = [d.name for d in summary.details if d.status == "failed"]
                results[wf] = summary.status + (f" ({'; '.join(failed)[:300]})" if failed else "")
        finally:
            os.chdir(cwd)
    return results


def reexport(name: str, work: Path, install: bool) -> dict[str, Any]:
    from cristae_zoo.core.system import get_system
    from cristae_zoo.export.base import keras_predict
    from cristae_zoo.export.package import TrainedNetwork, package_network, place_folder

    log(name, "rebuilding")
    rdf = old_rdf(name)
    config = training_config(name, rdf)
    system = get_system(config.system)
    model = system.build_keras(config)
    keras_weights = SOURCE / name / "keras_weights.weights.h5"
    if keras_weights.is_file():  # written by the one packager (its SavedModel is frozen: no variables to read)
        model.load_weights(str(keras_weights))
        n, source = len(model.weights), "its attached Keras weights"
    else:
        n, source = load_weights(model, saved_model_weights(name, work), name), "its TF SavedModel"
    old_in = np.load(SOURCE / name / "test_input.npy")
    old_out = np.load(SOURCE / name / "test_output.npy")
    y = keras_predict(model, core_preprocessed_input(name))
    keras_diff = float(np.max(np.abs(y[:, : old_out.shape[1]] - old_out)))
    log(name, f"{n} weights loaded; Keras vs old test output: max |Δ| {keras_diff:.2e}")
    if not keras_diff <= 1e-5:
        raise SystemExit(f"{name}: the rebuilt network does not reproduce the old test output ({keras_diff:.3g})")

    facts = [f"- Re-exported from the package shipped before (same weights, read from {source}; Keras"
             f" reproduces the old test output to {keras_diff:.1e}). The training config was rebuilt from that"
             " package's rdf and README (network, data folder, batch size, learning rate, steps, patch size); fields"
             " they did not record (e.g. the seed, split fractions, validation interval) show the current defaults."]  # fmt: skip
    out = work / name
    sections = readme_sections(name)
    provenance = provenance_folder(name, work, sections)
    result = package_network(
        TrainedNetwork(config.system, config, model, model_dir=provenance), out, template=template_from(name, rdf, config.system),
        test_input=old_in, crop=10**6, overwrite=True, zip_package=False, readme_sections=sections,
        conditions=rdf["config"]["cristae_zoo"].get("conditions"),
        training_facts=facts,
    )  # fmt: skip
    new_out = np.load(out / "test_output.npy")
    new_in = np.load(out / "test_input.npy")
    package_diff = float(np.max(np.abs(new_out[:, : old_out.shape[1]] - old_out)))
    log(name, f"packaged ({result.size_bytes / 1024**2:.1f} MB); new vs old test output: max |Δ| {package_diff:.2e}")
    if not (np.array_equal(new_in, old_in) and package_diff <= 1e-5):
        raise SystemExit(f"{name}: the re-exported test output differs from the old one ({package_diff:.3g})")
    tests = run_bioimageio_test(out)
    log(name, "bioimageio test:", tests)
    report = {"package": name, "weights_loaded": n, "keras_vs_old_max_abs": keras_diff,
              "new_vs_old_test_output_max_abs": package_diff, "size_bytes": result.size_bytes,
              "exported_max_abs_vs_keras": {e.weights_format: e.max_abs_diff for e in result.exported},
              "bioimageio_test": tests, "old_outputs": int(old_out.shape[1]), "new_outputs": int(new_out.shape[1])}  # fmt: skip
    if install:
        if not all(v.startswith("passed") for v in tests.values()):
            raise SystemExit(f"{name}: bioimageio test failed; model_zoo/{name} left as it was")
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.staging.", dir=ZOO))
        staging.rmdir()
        shutil.copytree(out, staging)
        place_folder(staging, ZOO / name)
        report["installed"] = str(ZOO / name)
        log(name, "installed")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(FACTS), help="packages in model_zoo/ (default: all seven)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cristae_zoo_reexport")
    parser.add_argument("--install", action="store_true", help="replace model_zoo/NAME once bioimageio test passes")
    parser.add_argument("--source", type=Path, default=ZOO,
                        help="the zoo to read the packages from (default: model_zoo/). The packages as shipped before"
                        " the one packager: `git archive ab475f9 model_zoo | tar -x -C /tmp/zoo_orig`, then"
                        " --source /tmp/zoo_orig/model_zoo")  # fmt: skip
    args = parser.parse_args(argv)
    global SOURCE
    SOURCE = args.source.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    reports = []
    for name in args.names:
        if name not in FACTS:
            parser.error(f"unknown package {name!r}; expected one of {', '.join(FACTS)}")
        reports.append(reexport(name, args.work, args.install))
        (args.work / f"{name}.json").write_text(json.dumps(reports[-1], indent=2))
    print(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
