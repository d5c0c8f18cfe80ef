"""The one trainer (core.trainer) and the model-folder loader (core.model_dir) for every system: tiny networks, a
few steps. Resume equals an uninterrupted run; refusals (resume without checkpoints, an existing folder, an unknown
system or key, init-from a package of another system) are one line, exit 2, nothing changed; CLI defaults are the
library's."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import conftest
import numpy as np
import pytest
import tifffile
import yaml

from cristae_zoo.config import NetworkConfig
from cristae_zoo.core.model_dir import load_from_package, load_model_dir
from cristae_zoo.core.system import get_system, systems, training_config_from_yaml
from cristae_zoo.core.trainer import train
from cristae_zoo.errors import CristaeZooError
from cristae_zoo.labelfree.network import LabelFreeNetworkConfig
from cristae_zoo.pssr.network import PSSRNetworkConfig
from cristae_zoo.systems import DeepCristaeConfig, LabelFreeConfig, LuminescenceConfig, PSSRConfig


def run_cli(args, capsys, monkeypatch):
    return conftest.run_cli(args, capsys, monkeypatch)


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}  # fmt: skip


def one_error_line(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """A tiny training data folder per system."""
    from cristae_zoo.config import DegradationConfig, SimulationConfig
    from cristae_zoo.data.prepare import prepare_dataset
    from cristae_zoo.data.simulate import simulate_dataset
    from cristae_zoo.labelfree.simulate import LabelFreeSimulationConfig
    from cristae_zoo.labelfree.simulate import simulate_dataset as simulate_labelfree
    from cristae_zoo.luminescence.simulate import LuminescenceSimulationConfig
    from cristae_zoo.luminescence.simulate import simulate_dataset as simulate_luminescence
    from cristae_zoo.pssr.movies import MovieConfig, simulate_movies

    root = tmp_path_factory.mktemp("trainer_data")
    simulate_dataset(SimulationConfig(n_images=3, height=160, width=160, seed=1), root / "sim")
    prepare_dataset(root / "sim" / "hr", root / "deepcristae", DegradationConfig(n_test=1, rl_iterations=3))
    simulate_labelfree(LabelFreeSimulationConfig(n_images=6, height=64, width=64, seed=3), root / "labelfree")
    simulate_movies(MovieConfig(n_movies=4, n_frames=5, size=64), root / "pssr")
    simulate_luminescence(LuminescenceSimulationConfig(n_scenes=3, depth=8, height=64, width=64), root / "luminescence")
    rng = np.random.default_rng(0)  # z-stacks for the 3D label-free network
    for i in range(4):
        for folder in ("tl", "mito", "dna"):
            (root / "labelfree-3d" / folder).mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(root / "labelfree-3d" / folder / f"z{i}.tif", rng.random((8, 32, 32)).astype(np.float32))
    return {"deepcristae": root / "deepcristae", "labelfree": root / "labelfree", "labelfree-3d": root / "labelfree-3d",
            "pssr": root / "pssr", "luminescence": root / "luminescence"}  # fmt: skip


def tiny_config(name: str, data_dir: Path, **extra):
    """The smallest config of each system (and variant) that trains in a few seconds."""
    if name == "deepcristae":
        return DeepCristaeConfig(data_dir=data_dir, network=NetworkConfig(depth=1, filters=2), epochs=1,
                                 steps_per_epoch=2, batch_size=2, **extra)  # fmt: skip
    if name in ("labelfree", "labelfree-3d"):
        three = name.endswith("3d")
        return LabelFreeConfig(data_dir=data_dir, network=LabelFreeNetworkConfig(ndim=3 if three else 2, depth=1, filters=2),
                               patch_size=[4, 16, 16] if three else [16, 16], batch_size=2, steps=2, validate_every=1,
                               **extra)  # fmt: skip
    if name in ("pssr-sf", "pssr-mf"):
        net = PSSRNetworkConfig(n_frames=5 if name.endswith("mf") else 1, filters=4, depth=1, head_filters=4)
        return PSSRConfig(data_dir=data_dir, network=net, lr_patch=8, batch_size=2, steps=3, validate_every=1,
                          n_validation_movies=1, n_test_movies=1, **extra)  # fmt: skip
    mode = name.split("-")[1]
    from cristae_zoo.luminescence.modes import ModeConfig

    return LuminescenceConfig(data_dir=data_dir, mode=ModeConfig.for_mode(mode, 2),  # type: ignore[arg-type]
                              network=LabelFreeNetworkConfig(ndim=3, depth=1, filters=2, n_out=2), patch_size=[4, 16, 16],
                              batch_size=2, steps=2, validate_every=2, test_fraction=0.34, validation_fraction=0, **extra)  # fmt: skip


VARIANTS = ["deepcristae", "labelfree", "labelfree-3d", "pssr-sf", "pssr-mf", "luminescence-pairs",
            "luminescence-binning", "luminescence-noise2noise"]  # fmt: skip


# ------------------------------------------------------------------------------------------- every system


def test_registry_has_every_system():
    assert set(systems()) == {"deepcristae", "labelfree", "pssr", "luminescence"}
    with pytest.raises(CristaeZooError, match="unknown system 'care'"):
        get_system("care")


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_system_trains_through_the_one_trainer(variant, data, tmp_path):
    name = variant.split("-")[0]
    cfg = tiny_config(variant, data.get(variant, data[name]))
    result = train(cfg, tmp_path / "model")
    out = tmp_path / "model"
    assert result.finished and result.model_dir == out and np.isfinite(result.best_val_loss)
    for f in ("config.yaml", "weights.keras", "history.csv", "loss_curve.png", "checkpoints/state.json"):
        assert (out / f).is_file(), f
    assert yaml.safe_load((out / "config.yaml").read_text())["system"] == name
    assert result.best_val_loss == min(r["val_loss"] for r in result.history)
    loaded = load_model_dir(out)
    assert loaded.system.name == name and loaded.config == cfg.model_copy(update={"output_dir": out})
    td = loaded.system.tensor_description(loaded.config)
    x = np.random.default_rng(0).random((1, *(td.min_size[a] for a in td.spatial_axes), td.n_in)).astype(np.float32)
    y = np.asarray(loaded.keras_model(x, training=False))
    assert y.shape == (1, *(td.min_size[a] * td.axis_scale(a) for a in td.spatial_axes), td.n_out)
    assert not (out / ".training.lock").exists()
    # the system's evaluation on the held-out data of the split the trainer wrote
    summary = loaded.system.evaluate([loaded], tmp_path / "evaluation")
    assert summary.strip() and (tmp_path / "evaluation" / "metrics.csv").is_file()
    assert list((tmp_path / "evaluation").glob("*.png")) or name == "pssr"  # (no fission event in 5 tiny frames)


def test_tensor_descriptions_of_the_variants(data):
    td = get_system("labelfree").tensor_description(tiny_config("labelfree", data["labelfree"]))
    assert td.output_channels == ["mito", "dna"] and td.normalisation.kind == "zscore" and td.rescale is None
    td = get_system("pssr").tensor_description(tiny_config("pssr-mf", data["pssr"]))
    assert td.output_scale == 4 and td.frames_as_channels and td.n_in == 5
    td = get_system("luminescence").tensor_description(tiny_config("luminescence-pairs", data["luminescence"]))
    assert td.spatial_axes == "zyx" and td.output_channels == ["mean", "scale"]
    # the training data's pixel size becomes the rescale requirement (DeepCristae: mitochondria width scales too)
    td = get_system("deepcristae").tensor_description(DeepCristaeConfig(pixel_size_nm=50))
    assert td.rescale.pixel_size_nm == 50 and td.rescale.structure_width_px == pytest.approx(15.64 / 2)
    assert get_system("deepcristae").tensor_description(DeepCristaeConfig()).rescale.pixel_size_nm == 25
    td = get_system("labelfree").tensor_description(tiny_config("labelfree", data["labelfree"], pixel_size_nm=65))
    assert td.rescale.pixel_size_nm == 65 and td.rescale.structure_width_px is None


# ------------------------------------------------------------------------------------------------ resume


@pytest.mark.parametrize("variant", ["labelfree", "pssr-sf"])
def test_resume_equals_an_uninterrupted_run(variant, data, tmp_path):
    """Stop after 2 of 4 steps (a step budget), resume: same history and same weights as 4 steps in one go (PSSR:
    with the one-cycle hook setting learning rate and β1 every step)."""
    cfg = tiny_config(variant, data[variant.split("-")[0]]).model_copy(update={"steps": 4, "validate_every": 2})
    whole = train(cfg, tmp_path / "whole")
    part = train(cfg, tmp_path / "split", max_steps=2)
    assert not part.finished and part.steps == 2 and part.stopped == "step budget"
    resumed = train(cfg, tmp_path / "split", resume=True)
    assert resumed.finished and resumed.steps == 4
    key = lambda h: [(r["step"], r["loss"], r["val_loss"], r["learning_rate"]) for r in h]  # noqa: E731
    assert key(resumed.history) == key(whole.history)
    a, b = load_model_dir(tmp_path / "whole").keras_model, load_model_dir(tmp_path / "split").keras_model
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_resume_without_checkpoints_refuses(data, tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(["train", "--data", data["deepcristae"], "-o", empty, "--resume"], capsys, monkeypatch)
    assert "nothing to resume" in one_error_line(code, err)
    # a trained folder whose checkpoints were removed: refused, its weights untouched
    train(tiny_config("deepcristae", data["deepcristae"]), tmp_path / "m")
    for f in (tmp_path / "m" / "checkpoints").iterdir():
        f.unlink()
    (tmp_path / "m" / "checkpoints").rmdir()
    before = digest(tmp_path / "m")
    args = ["train", "--data", data["deepcristae"], "-o", tmp_path / "m", "--resume", "--depth", "1", "--filters", "2"]
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert "nothing to resume" in one_error_line(code, err)
    assert digest(tmp_path / "m") == before


def test_train_into_an_existing_folder_refuses_and_overwrite_replaces_only_its_files(data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "m"
    train(tiny_config("labelfree", data["labelfree"]), out)
    (out / "notes.txt").write_text("mine")
    before = digest(out)
    args = ["train", "--system", "labelfree", "--data", data["labelfree"], "-o", out, "--steps", "1", "--depth", "1",
            "--filters", "2", "--patch", "16,16"]  # fmt: skip
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert "already holds a trained model" in one_error_line(code, err) and digest(out) == before
    code, _, err = run_cli([*args, "--overwrite"], capsys, monkeypatch)
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "mine" and digest(out)["weights.keras"] != before["weights.keras"]
    assert yaml.safe_load((out / "config.yaml").read_text())["steps"] == 1
    assert len(json.loads((out / "checkpoints" / "state.json").read_text())["history"]) == 1  # the old run is gone


# ---------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "text, expected",
    [
        ("system: care\ndata_dir: x\n", "unknown system 'care'"),
        ("data_dir: x\nepochs: 2\n", "no `system:` key"),
        ("system: labelfree\ndata_dir: x\nepochs: 2\n", "unknown key 'epochs'"),
        ("system: deepcristae\nnetwork: {depth: 2, filterz: 4}\n", "unknown key 'network.filterz'"),
        ("system: pssr\ndata_dir: x\nnetwork: {n_frames: 4}\n", "must be odd"),
        ("system: [deepcristae\n", "not valid YAML"),
    ],
)
def test_bad_config_yaml_is_one_line(text, expected, tmp_path, capsys, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(CristaeZooError, match=expected.replace("[", r"\[")):
        training_config_from_yaml(path)
    code, _, err = run_cli(["train", path, "-o", tmp_path / "out"], capsys, monkeypatch)
    line = one_error_line(code, err)
    assert expected in line and str(path) in line
    assert not (tmp_path / "out").exists()


def test_config_yaml_for_every_system_and_flags_override(data, tmp_path, capsys, monkeypatch):
    path = tmp_path / "lum.yaml"
    cfg = tiny_config("luminescence-pairs", data["luminescence"])
    cfg.to_yaml(path)
    code, _, err = run_cli(["train", path, "-o", tmp_path / "m", "--mode", "binning", "--bin-factor", "2", "--steps", "1"],
                           capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    saved = load_model_dir(tmp_path / "m").config
    assert saved.mode.mode == "binning" and saved.mode.bin_factor == 2 and saved.steps == 1
    code, _, err = run_cli(["train", path, "-o", tmp_path / "m2", "--epochs", "3"], capsys, monkeypatch)
    assert "--epochs: not an option of the luminescence system" in one_error_line(code, err)


def test_cli_defaults_equal_library_defaults():
    """One source of truth: every `train` flag that sets a config value defaults to None (the config's default
    stands), and a config built from flags alone equals the config class's defaults."""
    import typer.main

    from cristae_zoo.cli import TRAIN_FLAGS, app, training_config

    commands = {c.name: c for c in typer.main.get_command(app).commands.values()}  # type: ignore[attr-defined]
    params = {p.name: p for p in commands["train"].params}
    for flag in [*TRAIN_FLAGS, "mode", "bin_factor", "system", "max_steps"]:
        assert params[flag].default is None, flag
    assert params["no_residual"].default is False and params["overwrite"].default is False
    assert {p.name: p.default for p in commands["patches"].params if p.name in ("sampling", "seed")} == {"sampling": None, "seed": None}
    for name, system in systems().items():
        from_flags = training_config(None, name, data=Path("d"))
        assert from_flags == system.config_class(data_dir=Path("d")), name
    # the label-free defaults are those the shipped model was trained with (the CLI's before this trainer)
    lf = LabelFreeConfig(data_dir=Path("d"))
    assert (lf.network.depth, lf.network.filters, lf.steps) == (3, 12, 800)


# -------------------------------------------------------------------------------------------- fine-tuning


def fake_package(root: Path, config, model) -> Path:
    """A package folder with what the packager writes for fine-tuning (rdf config.cristae_zoo.system/training and
    the keras_weights.weights.h5 attachment); the rest of the rdf is not needed by `load_from_package`."""
    root.mkdir(parents=True)
    model.save_weights(str(root / "keras_weights.weights.h5"))
    training = config.model_dump(mode="json")
    rdf = {"type": "model", "format_version": "0.5.4", "attachments": [{"source": "keras_weights.weights.h5"}],
           "config": {"cristae_zoo": {"system": config.system, "training": training}}}  # fmt: skip
    (root / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    return root


def test_init_from_a_package(data, tmp_path, capsys, monkeypatch):
    lf_cfg = tiny_config("labelfree", data["labelfree"])
    lf_model = get_system("labelfree").build_keras(lf_cfg)
    other = fake_package(tmp_path / "labelfree_pkg", lf_cfg, lf_model)
    loaded = load_from_package(other)
    assert loaded.system.name == "labelfree"
    for a, b in zip(loaded.keras_model.get_weights(), lf_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # a package of another system: one line, exit 2, nothing written
    args = ["train", "--data", data["deepcristae"], "-o", tmp_path / "ft", "--epochs", "1", "--steps-per-epoch", "1",
            "--depth", "1", "--filters", "2", "--init-from", other]  # fmt: skip
    code, _, err = run_cli(args, capsys, monkeypatch)
    line = one_error_line(code, err)
    assert "a labelfree network, but this training is deepcristae" in line and not (tmp_path / "ft").exists()
    # the same system: training starts from the package's weights and records the new pixel size
    dc_cfg = tiny_config("deepcristae", data["deepcristae"])
    dc_model = get_system("deepcristae").build_keras(dc_cfg.model_copy(update={"init_seed": 7}))
    same = fake_package(tmp_path / "dc_pkg", dc_cfg, dc_model)
    args[-1] = same
    code, _, err = run_cli([*args, "--pixel-size", "50", "--learning-rate", "1e-12"], capsys, monkeypatch)
    assert code == 0, err
    tuned = load_model_dir(tmp_path / "ft")
    assert tuned.config.pixel_size_nm == 50 and tuned.config.init_from == str(same)
    for a, b in zip(tuned.keras_model.get_weights(), dc_model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert tuned.system.tensor_description(tuned.config).rescale.pixel_size_nm == 50


def test_init_from_an_old_package_says_what_is_missing(tmp_path):
    pkg = tmp_path / "old"
    pkg.mkdir()
    (pkg / "rdf.yaml").write_text(yaml.safe_dump({"type": "model", "config": {"cristae_zoo": {"rescale": {}}}}))
    with pytest.raises(CristaeZooError, match="no config.cristae_zoo.system, no config.cristae_zoo.training, no"
                                              " attachment keras_weights.weights.h5 .*re-package"):  # fmt: skip
        load_from_package(pkg)


def test_a_second_training_into_a_locked_folder_is_refused(data, tmp_path):
    """Two trainings cannot write into one folder: the lock names the running process."""
    import os

    out = tmp_path / "m"
    out.mkdir()
    (out / ".training.lock").write_text(str(os.getpid()))  # a live process holds it
    with pytest.raises(CristaeZooError, match=f"another training \\(process {os.getpid()}\\)"):
        train(tiny_config("labelfree", data["labelfree"]), out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [".training.lock"]


def test_time_budget_stops_resumably(data, tmp_path):
    """A wall-time budget stops the run after the step that exceeds it, validated and checkpointed; --resume (with
    another budget: the budget may change) finishes it."""
    cfg = tiny_config("labelfree", data["labelfree"]).model_copy(update={"steps": 3, "validate_every": 3, "max_minutes": 1e-6})
    first = train(cfg, tmp_path / "m")
    assert first.stopped == "time budget" and first.steps == 1 and [r["step"] for r in first.history] == [1]
    done = train(cfg.model_copy(update={"max_minutes": None}), tmp_path / "m", resume=True)
    assert done.finished and [r["step"] for r in done.history] == [1, 3]


def test_a_full_disk_is_one_line_and_leaves_no_folder(data, tmp_path, monkeypatch):
    """An OSError while writing (here: ENOSPC when the first checkpoint is written) is one line naming the file;
    the folder this run created, without any checkpoint, is removed."""
    import errno

    import cristae_zoo.core.trainer as trainer

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "m" / "history.csv"))

    monkeypatch.setattr(trainer, "write_csv", full)
    with pytest.raises(CristaeZooError, match="history.csv: cannot write the model folder \\(No space left on device\\)"):
        train(tiny_config("labelfree", data["labelfree"]), tmp_path / "m")
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------------------------------------ devices


def test_gpu_requested_where_none_exists_is_one_line_and_writes_nothing(data, tmp_path, capsys, monkeypatch):
    """This machine (and CI) has no GPU: `--device gpu` must refuse, not quietly train on the CPU for days."""
    from cristae_zoo.core.devices import visible_gpus

    assert visible_gpus("tensorflow") == [] and visible_gpus("torch") == []  # the premise: no GPU here
    out = tmp_path / "m"
    args = ["train", "--data", data["deepcristae"], "-o", out, "--depth", "1", "--filters", "2", "--device", "gpu"]
    code, _, err = run_cli(args, capsys, monkeypatch)
    line = one_error_line(code, err)
    assert "device gpu" in line and "sees no GPU" in line and "'tensorflow'" in line
    assert not out.exists()
    code, _, err = run_cli([*args[:-1], "tpu"], capsys, monkeypatch)
    assert "expected one of auto, cpu, gpu" in one_error_line(code, err) and not out.exists()


def test_device_cpu_and_auto_train_the_same_numbers_on_the_cpu(data, tmp_path):
    cfg = tiny_config("labelfree", data["labelfree"])
    auto, cpu = train(cfg, tmp_path / "auto"), train(cfg, tmp_path / "cpu", device="cpu")
    assert auto.device == cpu.device == "cpu"
    assert [r["val_loss"] for r in auto.history] == [r["val_loss"] for r in cpu.history]
