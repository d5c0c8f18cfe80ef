import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory):
    """A tiny bioimage.io package (depth-2 U-Net, 4 filters; TF, ONNX and TorchScript weights), built once."""
    from cristae_zoo.config import NetworkConfig
    from cristae_zoo.export.package import package_model
    from cristae_zoo.export.testing import make_model_dir

    root = tmp_path_factory.mktemp("tiny_package")
    model_dir = make_model_dir(root, NetworkConfig(depth=2, filters=4))
    return package_model(model_dir, root / "model_zoo" / "tiny", crop=128, zip_package=False).folder


@pytest.fixture
def zoo_app():
    """A typer app with the `package | validate | test | predict | estimate-scale` commands."""
    import typer

    from cristae_zoo.cli_zoo import register

    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def scratch_cwd(tmp_path, monkeypatch):
    """bioimageio.core unzips TensorFlow weights into the working directory."""
    monkeypatch.chdir(tmp_path)


def run_cli(args, capsys, monkeypatch):
    """Run `cristae-zoo ARGS` through its real entry point: (exit code, stdout, stderr)."""
    import sys

    from cristae_zoo import cli

    monkeypatch.setattr(sys, "argv", ["cristae-zoo", *map(str, args)])
    code = 0
    try:
        cli.main()
    except SystemExit as exit_:
        code = exit_.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err
