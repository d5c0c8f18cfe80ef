"""Prediction engines behind the one predictor (`predict.Restorer`), one per runtime, as bioimageio.core keeps one
model adapter per weights format.

- `bioimageio`: bioimageio.core's prediction pipeline (its model adapters and pre/postprocessing operators). Every
  weights format, every processing step the spec knows. The reference.
- `onnxruntime` (the default where it applies): the package's ONNX weights in an ONNX Runtime session, with the
  rdf's pre/postprocessing done here in numpy, exactly as bioimageio.core's operators define them
  (`proc_ops.ScaleRange`, `ZeroMeanUnitVariance`, `ScaleLinear`, `Clip`, `EnsureDtype`: per-sample statistics
  over the rdf's axes, `linear` quantiles, eps 1e-6). It needs neither bioimageio.spec nor bioimageio.core, whose
  import and validation cost several seconds per run; the package is checked by the sha256 of its weights file.
  Tests check that it reproduces every model_zoo package's test output and equals the `bioimageio` engine.
- `openvino`: the same ONNX file in OpenVINO, fp32 or, with `precision="bf16"`, bfloat16 inference on CPUs with
  AVX-512 BF16 / AMX (opt-in: results differ from fp32 by ~1 % of the output range; see docs/benchmarks.md).

`auto` picks `onnxruntime` when the package has ONNX weights and only the processing steps above, else
`bioimageio`. Engines see normalised (batch, channel, [z], y, x) float32 blocks; `Processing` does the rest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cristae_zoo.errors import CristaeZooError

ENGINES = ("auto", "onnxruntime", "openvino", "bioimageio")
#: --weights names → bioimage.io weights keys.
WEIGHTS_FORMAT_ALIASES = {
    "tensorflow": "tensorflow_saved_model_bundle",
    "tf": "tensorflow_saved_model_bundle",
    "tensorflow_saved_model_bundle": "tensorflow_saved_model_bundle",
    "onnx": "onnx",
    "torchscript": "torchscript",
}
PRECISIONS = ("fp32", "bf16")
#: Processing steps implemented here (names as in the rdf).
LEAN_STEPS = {"ensure_dtype", "scale_range", "zero_mean_unit_variance", "scale_linear", "clip"}
EPS = 1e-6  # bioimageio.core's default for scale_range and zero_mean_unit_variance


# ------------------------------------------------------------------------------------------ the rdf, read lean


@dataclass
class RdfPackage:
    """What the lean engines need of a package, read from its rdf.yaml with PyYAML (no bioimageio import)."""

    root: Path  # the folder holding rdf.yaml (a zip is unpacked by the bioimageio engine only)
    rdf: dict[str, Any]
    input_dims: tuple[str, ...]  # "batch", "channel", "z", "y", "x" as in the rdf
    output_dims: tuple[str, ...]
    preprocessing: list[dict[str, Any]] = field(default_factory=list)
    postprocessing: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.rdf.get("name", self.root.name))

    @property
    def weights_formats(self) -> list[str]:
        return [k for k, v in (self.rdf.get("weights") or {}).items() if v]

    def weights_file(self, key: str) -> Path:
        """The weights file of format `key`, checked against the rdf's sha256 (one line naming it if not)."""
        entry = (self.rdf.get("weights") or {}).get(key) or {}
        path = self.root / str(entry.get("source", ""))
        if not entry.get("source") or not path.is_file():
            raise CristaeZooError(f"{path}: the package's {key} weights file is missing")
        expected = entry.get("sha256")
        if expected:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
            if h.hexdigest() != expected:
                raise CristaeZooError(
                    f"{path}: sha256 {h.hexdigest()[:12]}… differs from the rdf's {str(expected)[:12]}…; the weights"
                    " file was changed or corrupted"
                )
        return path

    @property
    def lean(self) -> bool:
        """Whether the lean engines can run it: ONNX weights, one input, one output, known processing steps."""
        steps = {str(s.get("id")) for s in self.preprocessing + self.postprocessing}
        return "onnx" in self.weights_formats and steps <= LEAN_STEPS


def _dims(tensor: dict[str, Any]) -> tuple[str, ...]:
    dims = []
    for a in tensor.get("axes", []):
        kind = str(a.get("type"))
        dims.append("batch" if kind == "batch" else "channel" if kind == "channel" else str(a.get("id")))
    return tuple(dims)


def read_rdf(rdf_path: Path) -> RdfPackage:
    """The lean view of a package folder's rdf.yaml; a one-line error if it is not a one-in, one-out model."""
    import yaml

    try:
        # libyaml's safe loader where PyYAML has it: 6× faster than the pure-Python one, same result
        rdf = yaml.load(Path(rdf_path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError) as err:
        raise CristaeZooError(f"{rdf_path}: cannot read the rdf ({type(err).__name__})") from None
    if not isinstance(rdf, dict) or rdf.get("type") != "model":
        raise CristaeZooError(f"{rdf_path}: not a bioimage.io model rdf")
    inputs, outputs = rdf.get("inputs") or [], rdf.get("outputs") or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise CristaeZooError(f"{rdf_path}: expected a model with one input and one output tensor")
    return RdfPackage(
        root=Path(rdf_path).parent,
        rdf=rdf,
        input_dims=_dims(inputs[0]),
        output_dims=_dims(outputs[0]),
        preprocessing=list(inputs[0].get("preprocessing") or []),
        postprocessing=list(outputs[0].get("postprocessing") or []),
    )


# ----------------------------------------------------------------------------------------------- processing


class Processing:
    """The rdf's pre/postprocessing on (batch, channel, *spatial) numpy arrays, as bioimageio.core computes it.

    Statistics are per sample (bioimageio.core's `SampleQuantile`/`SampleMean`/`SampleStd`) over the step's
    `axes` (default: all but batch); `reference_tensor` on a postprocessing step refers to the input's statistics,
    which `preprocess` returns for `postprocess`."""

    def __init__(self, package: RdfPackage):
        self.package = package
        self.in_id = str(package.rdf["inputs"][0]["id"])

    def preprocess(self, x: np.ndarray, *, inplace: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """`inplace`: normalise float32 `x` in place (no full-size copy: an 8192² plane is 256 MiB)."""
        stats: dict[str, np.ndarray] = {}
        x = self._apply(self.package.preprocessing, x, self.package.input_dims, stats, record=True, inplace=inplace)
        return x, stats

    def postprocess(self, y: np.ndarray, stats: dict[str, np.ndarray], source: np.ndarray | None = None) -> np.ndarray:
        return self._apply(self.package.postprocessing, y, self.package.output_dims, stats, record=False,
                           inplace=True)  # y is the predictor's own array

    def _apply(self, steps: list[dict[str, Any]], x: np.ndarray, dims: tuple[str, ...],
               stats: dict[str, np.ndarray], *, record: bool, inplace: bool = False) -> np.ndarray:  # fmt: skip
        # Arrays here are (B, C, *spatial); map the rdf's axis names onto those positions.
        names = ["batch", "channel", *[d for d in dims if d not in ("batch", "channel")]]
        for i, step in enumerate(steps):
            kind, kw = str(step.get("id")), dict(step.get("kwargs") or {})
            if kind == "ensure_dtype":
                x = x.astype(np.dtype(str(kw.get("dtype", "float32"))), copy=False)
                continue
            axes = kw.get("axes")
            reduce = tuple(names.index(str(a)) for a in axes) if axes else tuple(range(1, x.ndim))
            if kind == "scale_range":
                # Statistics of the tensor itself, or (postprocessing with reference_tensor = the input) the
                # input's, recorded under the same key by `preprocess`.
                key = f"scale_range:{reduce}:{kw.get('min_percentile', 0.0)}:{kw.get('max_percentile', 100.0)}"
                ref = kw.get("reference_tensor")
                if not record and ref is not None and str(ref) == self.in_id:
                    if key not in stats:
                        raise CristaeZooError(f"postprocessing refers to input statistics {key} that were not computed")
                    lo, hi = stats[key]
                else:
                    q = np.array([float(kw.get("min_percentile", 0.0)), float(kw.get("max_percentile", 100.0))]) / 100
                    lo, hi = np.quantile(x, q, axis=reduce, keepdims=True, method="linear")
                    if record:
                        stats[key] = np.stack([lo, hi])
                scale = (hi - lo + float(kw.get("eps", EPS))).astype(np.float32)
                if inplace and x.dtype == np.float32:
                    x -= lo.astype(np.float32)
                    x /= scale
                else:
                    x = (x - lo) / scale
                    inplace = x.dtype == np.float32  # x is now our own array
            elif kind == "zero_mean_unit_variance":
                mean = x.mean(axis=reduce, keepdims=True, dtype=np.float64)
                std = x.std(axis=reduce, keepdims=True, dtype=np.float64)
                x = ((x - mean) / (std + float(kw.get("eps", EPS)))).astype(np.float32)
            elif kind == "scale_linear":
                gain, offset = np.asarray(kw.get("gain", 1.0), np.float32), np.asarray(kw.get("offset", 0.0), np.float32)
                axis = kw.get("axis")
                if axis is not None and gain.ndim:  # one value per entry of `axis`
                    shape = [1] * x.ndim
                    shape[names.index(str(axis))] = -1
                    gain, offset = gain.reshape(shape), offset.reshape(shape)
                x = x * gain + offset
            elif kind == "clip":
                x = np.clip(x, kw.get("min"), kw.get("max"))
            else:  # pragma: no cover - `RdfPackage.lean` keeps these packages on the bioimageio engine
                raise CristaeZooError(f"processing step {kind!r} is not implemented by the lean engines")
        return x.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------------- runners


class OnnxRuntimeRunner:
    """An ONNX Runtime session on the package's ONNX weights (intra-op threads = the machine's cores)."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        # The memory arena stays on (ONNX Runtime's default): without it every activation is a fresh allocation
        # and a 2048² plane ran 1.6× slower than bioimageio.core's session (docs/benchmarks.md, "e2e").
        # The memory *pattern* is off: with it ONNX Runtime plans one block per input shape and keeps it in the
        # arena beside the blocks of the first run, so a 1080² tile cost 1.5 GB instead of 1.17 GB (and 1.9 GB
        # with four tile shapes); the arena alone reuses its blocks across tiles of any shape, at the same speed.
        options.enable_mem_pattern = False
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.description = f"onnxruntime {ort.__version__} fp32" + (
            f" ({threads} intra-op thread{'s' if threads > 1 else ''} per session)" if threads else ""
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]


class OpenVinoRunner:
    """OpenVINO on the package's ONNX weights; `precision="bf16"` uses the CPU's bfloat16 units (opt-in)."""

    def __init__(self, path: Path, precision: str = "fp32"):
        ov = require_openvino(precision)
        core = ov.Core()
        hint = ov.Type.bf16 if precision == "bf16" else ov.Type.f32
        model = core.read_model(str(path))
        # Dynamic spatial sizes: the compiled model takes any tile shape.
        self.compiled = core.compile_model(
            model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        )
        self.request = self.compiled.create_infer_request()
        self.description = f"openvino {ov.get_version().split('-')[0]} {precision}"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: np.ascontiguousarray(x, np.float32)})
        return np.asarray(next(iter(result.values())))


def require_openvino(precision: str = "fp32") -> Any:
    """The openvino module, or a one-line error: not installed, or (bf16) a CPU without bfloat16 units. Called
    when a Restorer is made, so a run is refused before it reads or writes anything."""
    what = "--precision bf16" if precision == "bf16" else "--engine openvino"
    try:
        import openvino as ov
    except ImportError:
        raise CristaeZooError(
            f"{what} needs OpenVINO: pip install 'cristae-zoo[openvino]' (or pip install openvino); use --precision"
            " fp32 to run the exact default engine"
        ) from None
    if precision == "bf16":
        caps = set(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        if "BF16" not in caps:
            raise CristaeZooError(
                f"--precision bf16: this CPU has no bfloat16 support (OpenVINO reports {sorted(caps)}); use"
                " --precision fp32"
            )
    return ov


def cpu_supports_bf16() -> bool:
    """Whether OpenVINO can run bfloat16 inference on this CPU (False if OpenVINO is not installed)."""
    try:
        import openvino as ov
    except ImportError:
        return False
    return "BF16" in set(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
