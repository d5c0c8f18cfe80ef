"""A BioImageIT tool that restores an image with a cristae-zoo bioimage.io package (`cristae-zoo predict`).

BioImageIT (bioimageit/bioimageit 0.3.60) has no bioimage.io loader: its tools are Python files defining a class
`Tool` (PyFlow/ToolManagement/ToolTemplate.py) with `name`, `description`, `categories`, `environment`,
`dependencies`, `inputs` / `outputs` (argparse-like dicts, PyFlow/ToolManagement/ToolParser.py) and
`processData(args)`, called once per row of the input DataFrame with `args` holding one attribute per input and
output (PyFlow/ToolManagement/ToolBase.py). BioImageIT loads every such file found in `PyFlow/Tools/<Category>/` or
in a workflow's `Tools/` folder (PyFlow/Packages/PyFlowBase/FunctionLibraries/BiitToolNode.py `createNode`).

This tool imports nothing beyond the standard library: it runs the `cristae-zoo` command of a separate cristae-zoo
installation (TensorFlow, onnxruntime and bioimageio.core stay out of BioImageIT's environment), so it runs in
BioImageIT's own environment (`environment = 'bioimageit'`, no dependencies to install). See README.md beside it.
"""

import os
import shutil
import subprocess
from pathlib import Path


class Tool:
    name = "cristae-zoo restore"
    description = (
        "Restore mitochondria images with a cristae-zoo bioimage.io model (DeepCristae, label-free, PSSR, "
        "luminescence CARE) by running `cristae-zoo predict`: 2D, z, t or z+t TIFF / OME-TIFF / OME-Zarr, rescaled "
        "so mitochondria are ~15.64 px wide, restored in seamless tiles."
    )
    categories = ["Denoising", "Deep learning"]
    environment = "bioimageit"  # runs the cristae-zoo executable; nothing to install into BioImageIT
    dependencies = dict()
    inputs = [
        dict(
            name="input_image",
            shortname="i",
            help="The image to restore (TIFF, OME-TIFF or OME-Zarr).",
            required=True,
            type="Path",
            autoColumn=True,
        ),
        dict(
            name="package",
            shortname="p",
            help="Model: a name in cristae-zoo's model_zoo/ (deepcristae, labelfree, pssr-sf, ...), or the path of a "
            "bioimage.io package folder, rdf.yaml or .zip.",
            default="deepcristae",
            type="str",
        ),
        dict(
            name="pixel_size",
            help="Input pixel size in nm (overrides the file's metadata); the rescale factor is pixel size / 25 nm.",
            default=None,
            type="float",
        ),
        dict(
            name="rescale",
            help="Rescale factor before restoring (>1 enlarges) or 'auto' to measure the mitochondria; empty: from "
            "the pixel size.",
            default=None,
            type="str",
        ),
        dict(
            name="channel",
            help="Channel to restore (0-based) when the input has several.",
            default=None,
            type="int",
        ),
        dict(
            name="weights",
            help="Weights format to run.",
            default="onnx",
            choices=["onnx", "tensorflow", "torchscript"],
            type="str",
            advanced=True,
        ),
        dict(
            name="executable",
            help="The cristae-zoo command (e.g. /path/to/cristae-zoo/.venv/bin/cristae-zoo); empty: $CRISTAE_ZOO, "
            "else cristae-zoo on the PATH.",
            default=None,
            type="str",
            advanced=True,
        ),
    ]
    outputs = [
        dict(
            name="restored_image",
            shortname="o",
            help="The restored image (same kind and axes as the input, float32).",
            default="{input_image.stem}_restored{input_image.exts}",
            type="Path",
        ),
    ]

    def command(self, args) -> list:
        """The `cristae-zoo predict` command line for one row of arguments."""
        exe = getattr(args, "executable", None) or os.environ.get("CRISTAE_ZOO") or shutil.which("cristae-zoo")
        if not exe:
            raise Exception(
                "cristae-zoo not found: install it (see integrations/bioimageit/README.md) and set the tool's "
                "'executable' parameter or the CRISTAE_ZOO environment variable to its cristae-zoo command"
            )
        cmd = [str(exe), "predict", str(args.package), str(args.input_image), "--output", str(args.restored_image)]
        for flag, value in (
            ("--pixel-size", getattr(args, "pixel_size", None)),
            ("--rescale", getattr(args, "rescale", None)),
            ("--channel", getattr(args, "channel", None)),
            ("--weights", getattr(args, "weights", None)),
        ):
            if value is not None and value != "":
                cmd += [flag, str(value)]
        return cmd

    def processData(self, args):
        if not Path(args.input_image).exists():
            raise Exception(f"Error: input image {args.input_image} does not exist.")
        cmd = self.command(args)
        print(f"[[1/2]] Restore {args.input_image} with {args.package}")
        print(" ".join(cmd))
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.stdout.strip():
            print(result.stdout.strip())
        if result.returncode != 0:
            # cristae-zoo reports user errors as one `error: ...` line on stderr (exit code 2)
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            message = next((line for line in reversed(lines) if line.startswith("error:")), lines[-1] if lines else "")
            raise Exception(f"cristae-zoo predict failed (exit code {result.returncode}): {message}")
        print(f"[[2/2]] Wrote {args.restored_image}")
        return None
