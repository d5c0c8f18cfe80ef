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
