"""Will this bioimage.io package load in deepImageJ, ilastik, the bioimage.io website, BioImageIT, bioimageio.core and
our own CLI? Cheap in-process checks, one verdict per client (`check_clients`), behind `cristae-zoo check-clients`.

Each client runs other code than ours: deepImageJ parses the rdf with JDLL (Java) and runs the weights JDLL picks on
TensorFlow 2.7; ilastik pins bioimageio.spec 0.5.9.1, bioimageio.core 0.10.2 and torch 2.7; the website's runner
pins spec 0.5.10.2, torch 2.5.1 and onnxruntime 1.20. A package that our bioimageio.core 0.11 accepts can fail in
all of them. The rules below are ported from those clients' own source (file:line cited at each rule, JDLL at tag
`dl-modelrunner-0.6.1`) and were checked against the real clients (docs/clients.md quotes the runs); they are
cheap, so CI applies them to every package in model_zoo/ (tests/test_clients.py).

Nothing here imports a heavy library at module import: torch (optional, `export` extra), onnx and TensorFlow's
protobufs are imported inside the checks that need them.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cristae_zoo.errors import CristaeZooError

Status = Literal["yes", "no", "n/a"]

# ---------------------------------------------------------------------------------------------------- clients

DEEPIMAGEJ = "deepImageJ 3.1 (JDLL 0.6.1, TF 2.7.0 / onnxruntime 1.12.1)"
ILASTIK = "ilastik (spec 0.5.9.1, core 0.10.2, torch 2.7)"
WEBSITE = "bioimage.io website runner (spec 0.5.10.2, torch 2.5.1, onnxruntime 1.20)"
BIOIMAGEIT = "BioImageIT (integrations/bioimageit tool → cristae-zoo predict)"
CORE = "bioimageio.core 0.11 (spec 0.5.12)"
OUR_CLI = "cristae-zoo CLI (predict)"
CLIENTS: tuple[str, ...] = (DEEPIMAGEJ, ILASTIK, WEBSITE, BIOIMAGEIT, CORE, OUR_CLI)

# Spec versions that still require `documentation` and `covers` as plain strings (a {source, sha256} mapping is
# "Input should be a valid string" there; bioimageio.spec 0.5.12 writes the mapping). Found by validating with
# spec 0.5.9.1 and 0.5.10.2 (scripts/validate_spec_versions.py).
STRING_ONLY_FILE_FIELDS_SPECS = ("0.5.9.1", "0.5.10.2")

# ONNX: the newest IR version and default-domain opset each onnxruntime release runs (onnxruntime's
# docs/Versioning.md compatibility table). JDLL's opset-17 engine is onnxruntime 1.12.1.
ORT_LIMITS: dict[str, tuple[int, int]] = {"1.12": (8, 17), "1.15": (9, 19), "1.20": (10, 21)}

# TorchScript archives: torch refuses an archive whose file-format `version` record is above its maximum
# (caffe2/serialize/versions.h kMaxSupportedFileFormatVersion, 0xA since torch 1.x up to 2.7).
TORCHSCRIPT_MAX_FILE_FORMAT = {"2.5": 10, "2.7": 10}

# aten ops registered by torch 2.13 (our export torch) that older torch does not know: a TorchScript graph that
# holds one fails to load there with "Unknown builtin op: aten::...". A scripted `F.interpolate` compiles all its
# branches and so pulls in aten::_upsample_lanczos2d_aa. 2.7: (torch 2.13's jit schemas) − (torch 2.7.1's jit
# schemas). 2.5: the 2.7 list plus (2.13's) − (the schema strings in torch 2.5.1's libtorch_cpu.so, keeping only
# names absent from every string there). docs/clients.md says how the lists were made.
TORCH_OPS_MISSING: dict[str, frozenset[str]] = {
    "2.7": frozenset(
        """
        aten::_cudnn_attention_backward aten::_flash_attention_forward_no_dropout_inplace
        aten::_foreach_clone aten::_foreach_mm aten::_foreach_powsum aten::_fused_rms_norm
        aten::_fused_rms_norm_backward aten::_grouped_mm aten::_philox_key_fold_in aten::_philox_key_split
        aten::_philox_normal aten::_philox_normal_ aten::_philox_uniform aten::_philox_uniform_
        aten::_scaled_grouped_mm_v2 aten::_scaled_mm_v2 aten::_upsample_lanczos2d_aa
        aten::_upsample_lanczos2d_aa_backward aten::_use_miopen_ctc_loss
        aten::_weight_int4pack_mm_with_scales_and_zeros aten::broadcast_shapes aten::hash_tensor
        aten::linalg__powsum aten::miopen_ctc_loss aten::sym_is_contiguous
        """.split()
    ),
}
TORCH_OPS_MISSING["2.5"] = TORCH_OPS_MISSING["2.7"] | frozenset(
    """
    aten::_convert_weight_to_int4pack_for_cpu aten::_cudnn_attention_forward aten::_dyn_quant_matmul_4bit
    aten::_dyn_quant_pack_4bit_weight aten::_foreach_rsqrt aten::_foreach_rsqrt_
    aten::_nested_from_padded_tensor aten::_scaled_grouped_mm aten::_weight_int4pack_mm_for_cpu
    aten::rrelu_with_noise_functional
    """.split()
)

# TensorFlow ops unknown to TF 2.7's op registry: a SavedModel whose graph or function library holds one fails to
# load there with "Op type not registered '...'" (TF ≥ 2.12 writes DisableCopyOnRead into the variables' save
# functions). JDLL's default TensorFlow engine is 2.7.0. The list is (TF 2.21.0's registry) − (TF 2.7.0's registry),
# both read with TF_GetAllOpList() (docs/clients.md says how); 171 ops.
TF27_UNKNOWN_OPS: frozenset[str] = frozenset(
    """
    AnonymousIteratorV3 AnonymousMultiDeviceIteratorV3 AnonymousMutableDenseHashTable AnonymousMutableHashTable
    AnonymousMutableHashTableOfTensors ApproxTopK AssertPrevDataset CalibrationStatisticsSaver CheckPinned
    CollateTPUEmbeddingMemory CollectiveAllToAllV2 CollectiveAssignGroupV2 CollectiveReduceScatterV2
    ComputeDedupDataSize ComputeDedupDataSizeV2 ComputeDedupDataTupleMask ComputeDedupDataTupleMaskV2
    ConfigureAndInitializeGlobalTPU ConfigureTPUEmbeddingHost ConfigureTPUEmbeddingMemory
    ConnectTPUEmbeddingHosts Conv Conv2DBackpropFilterV2 Conv2DBackpropInputV2 ConvertToCooTensor
    ConvertToListOfSparseCoreCooTensors ConvertToSparseCoreCsrWrappedCooTensor CopyToMesh CopyToMeshGrad
    CustomAggregator DTensorAllGather DTensorAllReduce DTensorAllScatter DTensorAllToAll DTensorReduceScatter
    DTensorRestoreV2 DTensorSetGlobalTPUArray DataServiceDatasetV3 DataServiceDatasetV4 DatasetFingerprint
    DebugIdentityV3 DecodeJxl DecodeWebP DisableCopyOnRead DistributedSave DumpTensor
    DynamicEnqueueTPUEmbeddingArbitraryTensorBatch DynamicEnqueueTPUEmbeddingRaggedTensorBatch
    EnqueueTPUEmbeddingArbitraryTensorBatch EnqueueTPUEmbeddingBatch ExecuteTPUEmbeddingPartitioner FFTND
    FileSystemSetConfiguration FinalizeTPUEmbedding FinalizeTPUEmbeddingV2 GetMinibatchSplitsWithPhysicalReplica
    GetMinibatchesInCsrWithPhysicalReplica GetStatsFromListOfSparseCoreCooTensors GetTpuTaskId GlobalIterId
    GlobalShuffleDataset IFFTND IRFFTND IndexFlatMapDataset IsResourceHandleRefCounting IteratorGetModelProto
    ListDataset ListSnapshotChunksDataset LoadAllTPUEmbeddingParameters MakeWeakResourceHandle MergeDedupData
    ParallelFilterDataset RFFTND RaggedFillEmptyRows RaggedFillEmptyRowsGrad RandomDatasetV2 RandomIndexShuffle
    RegisterDatasetV2 Relayout RelayoutLike RetrieveAllTPUEmbeddingParameters RewriteDataset SegmentMaxV2
    SegmentMinV2 SegmentProdV2 SegmentSumV2 ShutdownTPUSystem SleepIdentityOp SnapshotChunkDataset
    SortListOfSparseCoreCooTensors SparseSegmentMeanGradV2 SparseSegmentSqrtNGradV2 SparseSegmentSumGradV2
    SplitDedupData StatelessRandomGammaV3 StatelessShuffle StochasticCastToInt StoreMinibatchStatisticsInFdo
    SyncDevice TFRecordDatasetV2 TPUAnnotateTensorsWithDynamicShape TPUCopyWithDynamicShape TPUDummyInput
    TPUPartitionedInputV2 TPUPartitionedOutputV2 TPURoundRobin TpuHandleToProtoKey UniformDequantize
    UniformQuantize UniformQuantizedAdd UniformQuantizedClipByValue UniformQuantizedConvolution
    UniformQuantizedConvolutionHybrid UniformQuantizedDot UniformQuantizedDotHybrid UniformRequantize
    UpdateTaskIdAndGlobalCoreArray WeightedFlatMapDataset XlaCallModule XlaCustomCall XlaCustomCallV2
    XlaLaunchV2 XlaOptimizationBarrier XlaRecvTPUEmbeddingActivations XlaRecvTPUEmbeddingActivationsV2
    XlaRecvTPUEmbeddingDeduplicationData XlaRecvTPUEmbeddingDeduplicationDataV2 XlaReducePrecision
    XlaSendTPUEmbeddingGradients XlaSendTPUEmbeddingGradientsV2 XlaSparseActivationsUnstack XlaSparseCoreAdagrad
    XlaSparseCoreAdagradMomentum XlaSparseCoreAdam XlaSparseCoreFtrl XlaSparseCoreSgd XlaSparseDenseMatmul
    XlaSparseDenseMatmulCustomCombinerOnTcGradWithAdagradAndCsrInput
    XlaSparseDenseMatmulCustomCombinerOnTcGradWithAdagradMomentumAndCsrInput
    XlaSparseDenseMatmulCustomCombinerOnTcGradWithAdamAndCsrInput
    XlaSparseDenseMatmulCustomCombinerOnTcGradWithCsrInput
    XlaSparseDenseMatmulCustomCombinerOnTcGradWithFtrlAndCsrInput
    XlaSparseDenseMatmulCustomCombinerOnTcGradWithSgdAndCsrInput
    XlaSparseDenseMatmulCustomCombinerOnTcWithCsrInput XlaSparseDenseMatmulGradWithAdagradAndCsrInput
    XlaSparseDenseMatmulGradWithAdagradAndStaticBufferSize
    XlaSparseDenseMatmulGradWithAdagradMomentumAndCsrInput
    XlaSparseDenseMatmulGradWithAdagradMomentumAndStaticBufferSize XlaSparseDenseMatmulGradWithAdamAndCsrInput
    XlaSparseDenseMatmulGradWithAdamAndStaticBufferSize XlaSparseDenseMatmulGradWithCsrInput
    XlaSparseDenseMatmulGradWithFtrlAndCsrInput XlaSparseDenseMatmulGradWithFtrlAndStaticBufferSize
    XlaSparseDenseMatmulGradWithSgdAndCsrInput XlaSparseDenseMatmulGradWithSgdAndStaticBufferSize
    XlaSparseDenseMatmulWithCsrInput XlaSparseDenseMatmulWithStaticBufferSize XlaSparseGradientsStack
    _FusedConv3D _FusedQuantizedConv2D _FusedQuantizedDepthwiseConv2D _MklFusedBatchMatMulV2
    _MklFusedInstanceNorm _MklFusedMish _MklLayerNorm _MklNativeFusedConv3D _MklNativeSparseMatrixMatMul
    _MklSwish _QuantizedMatMul _QuantizedMaxPool3D _XlaCompileMlirPlaceholderProgramKey
    """.split()
)

# Formats each client can run at all.
ILASTIK_FORMATS = ("pytorch_state_dict", "torchscript")  # ilastik/applets/neuralNetwork/bioimageiodl.py
# bioimageio.core's DEFAULT_WEIGHT_FORMAT_PRIORITY_ORDER (backends/__init__.py), trying the next on a load failure.
CORE_PRIORITY = ("pytorch_state_dict", "tensorflow_saved_model_bundle", "torchscript", "onnx", "keras_v3", "keras_hdf5")
OUR_FORMATS = ("onnx", "tensorflow_saved_model_bundle", "torchscript")  # predict.normalize_weights_format


@dataclass(frozen=True)
class Verdict:
    """Whether one client loads the package: `status` yes | no | n/a, the weights it would run, and why not."""

    client: str
    status: Status
    weights: str | None = None
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # limits of the client that do not stop it loading the package

    def line(self) -> str:
        """One line for the terminal: `client: yes [weights] (note: ...)` or `client: NO [weights] — reason; ...`."""
        head = {"yes": "yes", "no": "NO", "n/a": "not applicable"}[self.status]
        used = f" [{self.weights}]" if self.weights else ""
        why = f" — {'; '.join(self.reasons)}" if self.reasons else ""
        note = f" (note: {'; '.join(self.notes)})" if self.notes else ""
        return f"{self.client}: {head}{used}{why}{note}"


@dataclass
class Package:
    """A package folder (a .zip is unpacked into a temporary folder first) and its rdf as plain YAML data."""

    root: Path
    rdf: dict[str, Any]
    source: Path
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def file(self, name: str) -> Path:
        return self.root / name

    def weights(self) -> dict[str, dict[str, Any]]:
        w = self.rdf.get("weights")
        return {k: v for k, v in w.items() if isinstance(v, dict)} if isinstance(w, dict) else {}


# ---------------------------------------------------------------------------------------------------- loading


@contextmanager
def open_package(package: str | Path) -> Iterator[Package]:
    """The package as a folder plus its rdf; `CristaeZooError` (one line) for a folder without rdf.yaml, an rdf that
    is not a YAML mapping describing a model, or a file the rdf names (weights, test tensors, ...) that is missing."""
    import yaml

    from cristae_zoo.predict import check_package_files, resolve_package

    source = resolve_package(package)
    check_package_files(source, hashes=True)  # a missing or changed weights file: one line naming it
    tmp: str | None = None
    try:
        if source.suffix.lower() == ".zip":
            tmp = tempfile.mkdtemp(prefix="cristae_zoo_clients_")
            with zipfile.ZipFile(source) as zf:
                zf.extractall(tmp)
            root = Path(tmp)
            rdf_path = next(p for p in (root / "rdf.yaml", root / "bioimageio.yaml") if p.is_file())
        else:
            root, rdf_path = source.parent, source
        try:
            rdf = yaml.safe_load(rdf_path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise CristaeZooError(f"{source}: the rdf is not valid YAML ({' '.join(str(err).split())[:200]})") from None
        if not isinstance(rdf, dict):
            raise CristaeZooError(f"{source}: the rdf is not a YAML mapping of fields (got {type(rdf).__name__})")
        if rdf.get("type") != "model":
            raise CristaeZooError(f"{source}: not a bioimage.io model (type: {rdf.get('type')!r}, expected 'model')")
        for key in ("format_version", "inputs", "outputs", "weights"):
            if key not in rdf:
                raise CristaeZooError(f"{source}: invalid rdf: the required field '{key}' is missing")
        if not isinstance(rdf["weights"], dict) or not rdf["weights"]:
            raise CristaeZooError(f"{source}: invalid rdf: 'weights' must map weights formats to their entries")
        yield Package(root=root, rdf=rdf, source=source)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- JDLL port


def java_string_hash(s: str) -> int:
    """java.lang.String.hashCode (UTF-16 code units, 32-bit overflow), as a signed int."""
    h = 0
    for unit in s.encode("utf-16-be").hex(" ", 2).split():
        h = (31 * h + int(unit, 16)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def java_hashmap_order(keys: Sequence[str]) -> list[str]:
    """The iteration order of a java.util.HashMap filled with `keys` in this order: buckets by
    (hash ^ hash >>> 16) & (capacity − 1), insertion order within a bucket; capacity 16, doubled while more than
    0.75 · capacity entries (a resize splits buckets stably, so the final table decides)."""
    capacity = 16
    while len(keys) > 0.75 * capacity:
        capacity *= 2

    def bucket(key: str) -> int:
        h = java_string_hash(key) & 0xFFFFFFFF
        return (h ^ (h >> 16)) & (capacity - 1)

    return [k for _, _, k in sorted((bucket(k), i, k) for i, k in enumerate(keys))]


def _java_version_string(value: Any) -> str | None:
    """What JDLL's WeightFormat.setTrainingVersion keeps: a string as is, a number through Java's toString."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)  # Java Double.toString for the short values an rdf holds ("2.1")
    return str(value)


# ModelWeight.build (weights/ModelWeight.java:74-104): one HashMap entry per format, keyed
# `<format>_v<training version>`; the version key of each format and JDLL's default when it is missing
# (OnnxWeights.java:71,88-89: opset_version, "17"; TorchscriptWeights.java:91-92: "1.13.1").
_JDLL_VERSION_KEY = {
    "keras_hdf5": ("tensorflow_version", None),
    "onnx": ("opset_version", "17"),
    "pytorch_state_dict": ("pytorch_version", None),
    "tensorflow_saved_model_bundle": ("tensorflow_version", None),
    "tensorflow_js": ("tensorflow_version", None),
    "torchscript": ("pytorch_version", "1.13.1"),
    "pytorch_script": ("pytorch_version", "1.13.1"),
}


def jdll_weights_order(rdf: Mapping[str, Any]) -> list[str]:
    """The weights formats in the order JDLL tries them: BioimageIoModelJava.createBioimageioModel
    (model/java/BioimageIoModelJava.java:214-229) walks ModelWeight's HashMap values and takes the first format with
    a compatible engine installed, so the HashMap's bucket order of `<format>_v<version>` picks the weights, not
    the user. (A key without a version gets `_vUnknown0`; ModelWeight.java:278-293.)"""
    weights = rdf.get("weights")
    if not isinstance(weights, dict):
        return []
    keys: list[str] = []
    formats: dict[str, str] = {}
    for fmt, entry in weights.items():
        if fmt not in _JDLL_VERSION_KEY or not isinstance(entry, dict):
            continue
        version_key, default = _JDLL_VERSION_KEY[fmt]
        version = _java_version_string(entry.get(version_key)) or default or "Unknown0"
        key = f"{'torchscript' if fmt == 'pytorch_script' else fmt}_v{version}"
        keys.append(key)
        formats[key] = fmt
    return [formats[k] for k in java_hashmap_order(keys)]


def jdll_parse_problems(rdf: Mapping[str, Any]) -> list[str]:
    """What makes JDLL's rdf parser (and with it deepImageJ's model list) throw, from the casts in its source."""
    problems: list[str] = []
    fv = rdf.get("format_version")
    if not (isinstance(fv, str) and (fv.startswith("0.5") or fv.startswith("0.4"))):
        # ModelDescriptorFactory.java:124-133: format_version must be a YAML string starting with 0.4 / 0.5
        problems.append(f"format_version {fv!r} is not a string starting with '0.5' (ModelDescriptorFactory.java:124)")
    # ModelDescriptor.java:159-205 casts these top-level fields to String: a mapping or list throws
    # ClassCastException (documentation as {source, sha256} → ModelDescriptor.java:193), and deepImageJ's model list
    # (getModelsAtLocalRepo) silently drops the model.
    lines = {"format_version": 160, "name": 163, "description": 169, "id": 172, "license": 190, "documentation": 193,
             "git_repo": 196, "type": 199}
    for key, line in lines.items():
        value = rdf.get(key)
        if value is not None and not isinstance(value, str):
            problems.append(
                f"{key} is a {'mapping' if isinstance(value, dict) else type(value).__name__}, JDLL casts it to"
                f" String (ModelDescriptor.java:{line},"
                " ClassCastException; deepImageJ lists no model)"
            )
    covers = rdf.get("covers")
    if isinstance(covers, list) and any(not isinstance(c, str) for c in covers):
        # ModelDescriptor.java:202 castListStrings keeps the list unchecked; the model list then reads each cover as
        # a String and fails on a {source, sha256} mapping.
        problems.append("covers entries are mappings, JDLL reads them as Strings (ModelDescriptor.java:202,638-647)")
    config = rdf.get("config") if isinstance(rdf.get("config"), dict) else {}
    nickname = (config.get("bioimageio") or {}).get("nickname") if isinstance(config.get("bioimageio"), dict) else None
    if not rdf.get("id") and not nickname:
        # ModelDescriptorV05.java:45-47: modelID = findID() (config.bioimageio.nickname or id), then modelID.length()
        problems.append("no id: JDLL calls modelID.length() (ModelDescriptorV05.java:47, NullPointerException)")
    for kind in ("inputs", "outputs"):
        for t in rdf.get(kind) or []:
            for ax in (t.get("axes") or []) if isinstance(t, dict) else []:
                if not isinstance(ax, dict):
                    continue
                if ax.get("type") is None:
                    # AxisV05.java:67 calls this.type.equals("batch")
                    problems.append(f"{kind} axis {ax.get('id')!r} has no type (AxisV05.java:67, NullPointerException)")
                elif ax.get("type") == "channel" and not ax.get("channel_names"):
                    # AxisV05.java:71-74: size.min = channelNames.size()
                    problems.append(f"{kind} channel axis without channel_names (AxisV05.java:74, NullPointerException)")
                elif ax.get("type") == "space" and not ax.get("id"):
                    problems.append(f"{kind} space axis without id (AxisV05.java:61, IllegalArgumentException)")
    return problems


@dataclass(frozen=True)
class JdllAxis:
    """One axis as JDLL's AxisV05 reads it (AxisV05.java:40-77, AxisSize.java:34-55)."""

    name: str  # b, c or the axis id
    min: int
    step: int
    scale: float
    halo: int
    offset: float
    ref_tensor: str | None
    ref_axis: str | None


def _jdll_axes(tensor: Mapping[str, Any]) -> list[JdllAxis]:
    axes = []
    for ax in tensor.get("axes") or []:
        size = ax.get("size")
        mn, step, offset, ref_t, ref_a = 1, 0, 0.0, None, None
        if isinstance(size, int):
            mn = size
        elif isinstance(size, dict):
            mn = int(size["min"]) if isinstance(size.get("min"), (int, float)) else 1
            step = int(size["step"]) if isinstance(size.get("step"), (int, float)) else 0
            offset = float(size["offset"]) if isinstance(size.get("offset"), (int, float)) else 0.0
            ref_t = size.get("tensor_id") if isinstance(size.get("tensor_id"), str) else None
            ref_a = size.get("axis_id") if isinstance(size.get("axis_id"), str) else None
        kind = ax.get("type")
        name = "b" if kind == "batch" else "c" if kind == "channel" else str(ax.get("id"))
        if name == "c":
            mn = len(ax.get("channel_names") or [None])
        scale = float(ax["scale"]) if isinstance(ax.get("scale"), (int, float)) else 1.0
        halo = int(ax["halo"]) if isinstance(ax.get("halo"), (int, float)) else 0
        axes.append(JdllAxis(name, mn, step, scale, halo, offset, ref_t, ref_a))
    return axes


def _tensor_id(tensor: Mapping[str, Any]) -> str:
    return str(tensor.get("id") or tensor.get("name"))


def jdll_input_halo(rdf: Mapping[str, Any]) -> dict[str, int]:
    """Input halo per axis as JDLL computes it (ModelDescriptorV05.calculateTotalInputHalo, lines 117-146):
    `int((output halo + offset) / output scale)` — the output axis's own scale, not the spec's ratio."""
    inputs = [t for t in rdf.get("inputs") or [] if isinstance(t, dict)]
    halo: dict[str, int] = {ax.name: ax.halo for ax in _jdll_axes(inputs[0])} if inputs else {}
    first = _tensor_id(inputs[0]) if inputs else None
    for out in rdf.get("outputs") or []:
        for ax in _jdll_axes(out):
            if ax.halo == 0 or ax.ref_tensor != first or ax.ref_axis not in halo:
                continue
            n_halo = (ax.halo + ax.offset) / ax.scale
            if halo[ax.ref_axis] > n_halo:
                return halo  # JDLL returns from the whole loop here (line 141)
            halo[ax.ref_axis] = int(n_halo)
    return halo


def spec_input_halo(rdf: Mapping[str, Any]) -> dict[str, float]:
    """Input halo per axis as bioimageio.spec means it: output halo × output scale / reference scale
    (spec model/v0_5.py, ModelDescr halo validation: `ref_halo = axis.halo * axis.scale / ref_axis.scale`)."""
    inputs = [t for t in rdf.get("inputs") or [] if isinstance(t, dict)]
    if not inputs:
        return {}
    in_axes = {ax.name: ax for ax in _jdll_axes(inputs[0])}
    halo: dict[str, float] = {name: float(ax.halo) for name, ax in in_axes.items()}
    for out in rdf.get("outputs") or []:
        for ax in _jdll_axes(out):
            ref = in_axes.get(ax.ref_axis or "")
            if ax.halo and ref is not None and ax.ref_tensor == _tensor_id(inputs[0]):
                halo[ref.name] = max(halo[ref.name], ax.halo * ax.scale / ref.scale)
    return halo


JDLL_MAX_INPUT_PIXELS = 4096 * 4096 * 3  # TileCalculator.java:41 OPTIMAL_MAX_NUMBER_PIXELS
JAVA_INT_MAX = 2**31 - 1
_BYTES = {"float32": 4, "int32": 4, "uint32": 4, "int16": 2, "uint16": 2, "int64": 8, "float64": 8}


def tiling_allowed(rdf: Mapping[str, Any]) -> bool:
    """ModelDescriptor.isTilingAllowed (ModelDescriptor.java:575-582): true without config.deepimagej, else its
    allow_tiling (DeepImageJExecutionConfig: false when the key is missing)."""
    config = rdf.get("config")
    dij = config.get("deepimagej") if isinstance(config, dict) else None
    if not isinstance(dij, dict):
        return True
    return bool(dij.get("allow_tiling", False))


@dataclass(frozen=True)
class JdllTiling:
    """JDLL's first tile for an image: input tile, the output tile it expects, and what breaks."""

    image: tuple[int, ...]
    axes: str
    input_tile: tuple[int, ...]
    expected_output: tuple[int, ...]
    spec_output: tuple[int, ...]
    problems: tuple[str, ...]


def jdll_tiling(rdf: Mapping[str, Any], image: Mapping[str, int]) -> JdllTiling:
    """Port of TileCalculator.getOptimalTileSize (TileCalculator.java:52-127, 233-304) and TileMaker's halo check
    for the first input and output: the input tile JDLL picks for an image of `image` sizes per axis id, the output
    tile it then expects, and the size the spec (and so the network) gives instead."""
    inp = next(t for t in rdf["inputs"] if isinstance(t, dict))
    out = next(t for t in rdf["outputs"] if isinstance(t, dict))
    in_axes = _jdll_axes(inp)
    halo = jdll_input_halo(rdf)
    tiling = tiling_allowed(rdf)
    dims, tile = [], []
    for ax in in_axes:
        size = 1 if ax.name == "b" else ax.min if ax.name == "c" else int(image.get(ax.name, 256))
        dims.append(size)
        h = halo.get(ax.name, 0)
        if ax.step != 0 and tiling:
            patch = ((size + 2 * h) // ax.step) * ax.step  # Java int division inside Math.ceil (line 69)
            if patch > 3 * size and patch - ax.step >= ax.min:
                patch -= ax.step
            if patch > 3 * size and math.ceil(size / ax.step) * ax.step >= ax.min:
                patch = math.ceil(size / ax.step) * ax.step
        elif ax.step != 0:
            patch = size  # tiling off: JDLL leaves -1 and takes the (pre-processed) image size
        else:
            patch = ax.min
        tile.append(patch)
    by_name = {ax.name: (ax, t) for ax, t in zip(in_axes, tile)}
    problems: list[str] = []
    expected, spec = [], []
    for ax in _jdll_axes(out):
        if ax.ref_tensor is not None and ax.ref_axis in by_name:
            ref_ax, ref_tile = by_name[ax.ref_axis]
            expected.append(int(ref_tile * ax.scale + 2 * ax.offset))  # TileCalculator.java:260
            spec.append(int(ref_tile * ref_ax.scale / ax.scale + ax.offset))  # spec v0_5.SizeReference.get_size
        elif ax.name in by_name and ax.ref_tensor is None and ax.min == 1 and ax.name not in ("b", "c"):
            t = by_name[ax.name][1]
            expected.append(t)
            spec.append(t)
        else:
            expected.append(ax.min)
            spec.append(ax.min)
    n_in = math.prod(tile)
    out_bytes = math.prod(expected) * _BYTES.get(str((out.get("data") or {}).get("type", "float32")), 4)
    shape = "×".join(str(d) for d, ax in zip(dims, in_axes) if ax.name not in ("b", "c"))
    if n_in > JDLL_MAX_INPUT_PIXELS:
        # JDLL's first tile is the whole image plus halo. Past 4096²·3 px, checkOutputSize's shrink loop
        # (TileCalculator.java:142-178) never advances its axis index `c` (lines 160-166), so it "shrinks" the batch
        # axis up to 100 and loops for ever: deepImageJ hangs (seen with JDLL 0.6.1 on a 64×1024² volume).
        problems.append(
            f"a {shape} image makes a {n_in / 1e6:.1f} M px first tile (> 4096²·3): JDLL 0.6.1 hangs in"
            " TileCalculator.checkOutputSize (TileCalculator.java:142-178); crop or split the image"
        )
    elif out_bytes > JAVA_INT_MAX:
        # output over 2 GiB: checkOutputSize calls calculateByteSizeOfAffectedOutput(affected, null)
        # (TileCalculator.java:180) → NullPointerException at line 256 (seen with the old deepcristae, 1024²)
        problems.append(
            f"a {shape} image makes JDLL expect a {out_bytes / 2**30:.1f} GiB output (> 2 GiB):"
            " NullPointerException in TileCalculator (TileCalculator.java:180, 256)"
        )
    for ax in in_axes:
        h = halo.get(ax.name, 0)
        t = by_name[ax.name][1]
        if h and t - 2 * h <= 0:
            problems.append(f"input tile {t} along {ax.name} is not larger than twice the halo {h} (TileMaker.java:216)")
    return JdllTiling(
        image=tuple(dims),
        axes="".join(ax.name for ax in in_axes),
        input_tile=tuple(tile),
        expected_output=tuple(expected),
        spec_output=tuple(spec),
        problems=tuple(problems),
    )


def jdll_scale_problems(rdf: Mapping[str, Any]) -> list[str]:
    """Where JDLL and the spec read the axis scales differently: JDLL sizes an output axis as
    `ref size × output scale` (TileCalculator.java:260) and converts its halo with the output scale alone
    (ModelDescriptorV05.java:138); the spec uses `ref size × ref scale / output scale`. They agree only when
    output scale² = reference scale (and both are 1 for an output of the input's size)."""
    problems = []
    inputs = [t for t in rdf.get("inputs") or [] if isinstance(t, dict)]
    outputs = [t for t in rdf.get("outputs") or [] if isinstance(t, dict)]
    if not inputs or not outputs:
        return problems
    in_axes = {ax.name: ax for ax in _jdll_axes(inputs[0])}
    j_halo, s_halo = jdll_input_halo(rdf), spec_input_halo(rdf)
    for ax in _jdll_axes(outputs[0]):
        ref = in_axes.get(ax.ref_axis or "")
        if ref is None or ax.ref_tensor != _tensor_id(inputs[0]):
            continue
        if not math.isclose(ax.scale, ref.scale / ax.scale, rel_tol=1e-9):
            problems.append(
                f"axis {ax.name}: scale {ref.scale:g} in / {ax.scale:g} out makes JDLL expect an output of"
                f" {ax.scale:g}× the input, the network gives {ref.scale / ax.scale:g}×"
            )
    for name, h in j_halo.items():
        if name in s_halo and abs(h - int(s_halo[name])) >= 1:
            problems.append(f"axis {name}: JDLL's input halo is {h} px, the spec's {s_halo[name]:g} px")
    return problems


def hyperstack_problem(pkg: Package) -> str | None:
    """A multi-channel sample input must be an ImageJ hyperstack with a C axis: deepImageJ reads a plain
    multi-page TIFF as a stack (batch), not as channels."""
    inputs = [t for t in pkg.rdf.get("inputs") or [] if isinstance(t, dict)]
    if not inputs:
        return None
    n_channels = next((a.min for a in _jdll_axes(inputs[0]) if a.name == "c"), 1)
    sample = inputs[0].get("sample_tensor")
    name = sample.get("source") if isinstance(sample, dict) else sample
    if n_channels <= 1 or not isinstance(name, str) or not name.lower().endswith((".tif", ".tiff")):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(pkg.file(name)) as tif:
            meta = tif.imagej_metadata or {}
    except (OSError, ValueError):
        return None
    if int(meta.get("channels", 1)) != n_channels:
        return (
            f"sample input {name} has {n_channels} channels but is not an ImageJ hyperstack with a C axis of"
            f" {n_channels}: deepImageJ reads its pages as a batch"
        )
    return None


# ---------------------------------------------------------------------------------------------------- runtimes


def torchscript_ops(path: Path) -> set[str]:
    """The ops of a TorchScript archive's saved graph. With torch installed: the kinds of every node (blocks
    included) of `torch.jit.load(...).inlined_graph`; without it, the `ops.aten.X` / `torch.X(` calls of the
    archive's code/ files (what the loader compiles). An op that our own torch does not know makes `jit.load`
    itself fail; its name is taken from the error."""
    try:
        import torch
    except ImportError:
        return _torchscript_ops_from_code(path)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as err:
        m = re.search(r"Unknown builtin op: (aten::[\w.]+)", str(err))
        if m:
            return {m.group(1)} | _torchscript_ops_from_code(path)
        raise
    ops: set[str] = set()

    def walk(block: Any) -> None:
        for node in block.nodes():
            ops.add(node.kind())
            for sub in node.blocks():
                walk(sub)

    walk(module.inlined_graph)
    for method in module._c._method_names():  # methods other than forward (scripted helpers) are compiled too
        walk(getattr(module, method).graph)
    return ops


def _torchscript_ops_from_code(path: Path) -> set[str]:
    ops: set[str] = set()
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if "/code/" in f"/{name}" and name.endswith(".py"):
                text = zf.read(name).decode("utf-8", "replace")
                ops.update(f"aten::{m}" for m in re.findall(r"\bops\.aten\.(\w+)", text))
                ops.update(f"aten::{m}" for m in re.findall(r"\btorch\.(_?\w+)\(", text))
    return ops


def torchscript_file_format(path: Path) -> int | None:
    """The archive's `version` record (the file-format version torch checks on load)."""
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if name.endswith("/version") or name == "version":
                try:
                    return int(zf.read(name).decode().strip())
                except ValueError:
                    return None
    return None


def torchscript_problems(path: Path, torch_version: str) -> list[str]:
    """Why torch `torch_version` (2.5 or 2.7) cannot load this TorchScript archive, from its saved graph."""
    problems = []
    version = torchscript_file_format(path)
    if version is not None and version > TORCHSCRIPT_MAX_FILE_FORMAT[torch_version]:
        problems.append(f"TorchScript file format {version} > {TORCHSCRIPT_MAX_FILE_FORMAT[torch_version]}")
    missing = sorted(torchscript_ops(path) & TORCH_OPS_MISSING[torch_version])
    if missing:
        problems.append(f"TorchScript graph uses {', '.join(missing)}, unknown to torch {torch_version} (Unknown builtin op)")
    return problems


def savedmodel_ops(path: Path) -> set[str]:
    """Op names in a SavedModel (a folder or a .zip of one): every node of every meta graph and of every function
    in its function library — TF-Java imports them all when it loads the bundle."""
    from tensorflow.core.protobuf import saved_model_pb2

    if path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as zf:
            name = next((n for n in zf.namelist() if n.endswith("saved_model.pb")), None)
            if name is None:
                raise CristaeZooError(f"{path}: no saved_model.pb in this TensorFlow weights zip")
            data = zf.read(name)
    else:
        data = (path / "saved_model.pb").read_bytes()
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString(data)
    ops: set[str] = set()
    for mg in sm.meta_graphs:
        ops.update(n.op for n in mg.graph_def.node)
        for fn in mg.graph_def.library.function:
            ops.update(n.op for n in fn.node_def)
    return ops


def savedmodel_problems(path: Path) -> list[str]:
    """Why TensorFlow 2.7 (JDLL's default engine) cannot load this SavedModel."""
    unknown = sorted(savedmodel_ops(path) & TF27_UNKNOWN_OPS)
    if unknown:
        return [f"SavedModel uses {', '.join(unknown)}, unknown to TF 2.7 (Op type not registered)"]
    return []


def onnx_problems(path: Path, ort: str) -> list[str]:
    """Why onnxruntime `ort` cannot run this ONNX file: its IR version or default-domain opset is too new."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    max_ir, max_opset = ORT_LIMITS[ort]
    problems = []
    if model.ir_version > max_ir:
        problems.append(f"ONNX IR version {model.ir_version} > {max_ir} (onnxruntime {ort})")
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > max_opset:
            problems.append(f"ONNX opset {imp.version} > {max_opset} (onnxruntime {ort})")
    return problems


# ---------------------------------------------------------------------------------------------------- spec rules


def string_field_problems(rdf: Mapping[str, Any]) -> list[str]:
    """Fields that bioimageio.spec 0.5.9.1 and 0.5.10.2 reject but 0.5.12 writes: `documentation` and `covers` as
    {source, sha256} mappings ("Input should be a valid string")."""
    problems = []
    if "documentation" in rdf and not isinstance(rdf["documentation"], str):
        problems.append("documentation is a mapping, spec ≤ 0.5.10 needs a string (Input should be a valid string)")
    covers = rdf.get("covers")
    if isinstance(covers, list) and any(not isinstance(c, str) for c in covers):
        problems.append("covers entries are mappings, spec ≤ 0.5.10 needs strings (Input should be a valid string)")
    return problems


def same_size_output(rdf: Mapping[str, Any]) -> bool:
    """Every output space axis has the size of the input axis it references (ilastik tiles the input and pastes
    outputs of the same size back; its NN workflow cannot place a 4× output)."""
    inputs = [t for t in rdf.get("inputs") or [] if isinstance(t, dict)]
    outputs = [t for t in rdf.get("outputs") or [] if isinstance(t, dict)]
    if len(inputs) != 1 or len(outputs) != 1:
        return False
    in_axes = {ax.name: ax for ax in _jdll_axes(inputs[0])}
    for ax in _jdll_axes(outputs[0]):
        if ax.name in ("b", "c"):
            continue
        ref = in_axes.get(ax.ref_axis or "")
        if ref is None:
            return False
        if not math.isclose(ref.scale / ax.scale, 1.0) or ax.offset != 0:
            return False
    return True


# ---------------------------------------------------------------------------------------------------- verdicts


def _weights_file(pkg: Package, fmt: str) -> Path | None:
    entry = pkg.weights().get(fmt)
    src = entry.get("source") if entry else None
    return pkg.file(src) if isinstance(src, str) else None


def _runtime_problems(pkg: Package, fmt: str, *, tf: bool = False, torch: str | None = None,
                      ort: str | None = None) -> list[str]:
    path = _weights_file(pkg, fmt)
    if path is None:
        return [f"no {fmt} weights"]
    if fmt == "tensorflow_saved_model_bundle" and tf:
        return savedmodel_problems(path)
    if fmt == "torchscript" and torch:
        return torchscript_problems(path, torch)
    if fmt == "onnx" and ort:
        return onnx_problems(path, ort)
    return []


def check_deepimagej(pkg: Package) -> Verdict:
    problems = jdll_parse_problems(pkg.rdf)
    order = jdll_weights_order(pkg.rdf)
    chosen = next((f for f in order if f in ("tensorflow_saved_model_bundle", "onnx", "torchscript")), None)
    if chosen is None:
        return Verdict(DEEPIMAGEJ, "no", None, tuple(problems + ["no weights format JDLL runs"]))
    # JDLL runs the first format in its order (no fallback on a load failure); a fresh install has TF 2.7.0 and
    # onnxruntime 1.12.1 engines.
    problems += _runtime_problems(pkg, chosen, tf=True, torch="2.5", ort="1.12")
    problems += jdll_scale_problems(pkg.rdf)
    notes: list[str] = []
    inputs = [t for t in pkg.rdf.get("inputs") or [] if isinstance(t, dict)]
    if inputs and not problems:
        # JDLL's limits depend on the image, not the package: report them for a large typical image as notes
        spatial = {a.name: 1024 for a in _jdll_axes(inputs[0]) if a.name not in ("b", "c")}
        if "z" in spatial:
            spatial["z"] = 64
        notes += list(jdll_tiling(pkg.rdf, spatial).problems)
    if not tiling_allowed(pkg.rdf):
        problems.append("config.deepimagej.allow_tiling is not true: deepImageJ runs whole images only")
    if (p := hyperstack_problem(pkg)) is not None:
        problems.append(p)
    return Verdict(DEEPIMAGEJ, "no" if problems else "yes", chosen, tuple(problems), tuple(notes))


def check_ilastik(pkg: Package) -> Verdict:
    if not same_size_output(pkg.rdf):
        why = "ilastik runs one-input, one-output models whose output has the input's size"
        if "ilastik" in (pkg.rdf.get("tags") or []):  # the website lists tagged models as ilastik-ready
            return Verdict(ILASTIK, "no", None, (f"tagged 'ilastik', but {why}",))
        return Verdict(ILASTIK, "n/a", None, (why,))
    problems = string_field_problems(pkg.rdf)
    fmt = next((f for f in ILASTIK_FORMATS if f in pkg.weights()), None)
    if fmt is None:
        return Verdict(ILASTIK, "no", None, tuple(problems + ["ilastik runs only torchscript or pytorch_state_dict"]))
    problems += _runtime_problems(pkg, fmt, torch="2.7")
    return Verdict(ILASTIK, "no" if problems else "yes", fmt, tuple(problems))


def check_website(pkg: Package) -> Verdict:
    problems = string_field_problems(pkg.rdf)
    # bioimageio.core tries its priority order and falls back on a load failure; the runner has no TensorFlow.
    tried: list[str] = []
    chosen = None
    for fmt in CORE_PRIORITY:
        if fmt not in pkg.weights() or fmt in ("tensorflow_saved_model_bundle", "keras_v3", "keras_hdf5"):
            continue
        why = _runtime_problems(pkg, fmt, torch="2.5", ort="1.20")
        if not why:
            chosen = fmt
            break
        tried += why
    if chosen is None:
        problems += tried or ["no weights format the runner has a backend for (torch, onnxruntime)"]
    return Verdict(WEBSITE, "no" if problems else "yes", chosen, tuple(problems))


def core_validation_problem(pkg: Package) -> str | None:
    """The first error of our bioimageio.spec's validation (with file hashes), or None."""
    from bioimageio.spec import InvalidDescr, load_description

    from cristae_zoo.predict import first_error

    try:
        descr = load_description(pkg.source, perform_io_checks=True)
    except Exception as err:  # noqa: BLE001 - any reader failure is the answer
        return f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
    if isinstance(descr, InvalidDescr):
        return first_error(descr.validation_summary)
    return None


def check_core(pkg: Package) -> Verdict:
    chosen = next((f for f in CORE_PRIORITY if f in pkg.weights()), None)
    return Verdict(CORE, "yes" if chosen else "no", chosen, () if chosen else ("no weights format core runs",))


def check_our_cli(pkg: Package) -> Verdict:
    inputs, outputs = pkg.rdf.get("inputs") or [], pkg.rdf.get("outputs") or []
    if len(inputs) != 1 or len(outputs) != 1:
        return Verdict(OUR_CLI, "n/a", None, ("predict runs one-input, one-output models",))
    chosen = next((f for f in OUR_FORMATS if f in pkg.weights()), None)
    if chosen is None:
        return Verdict(OUR_CLI, "no", None, ("no onnx, tensorflow or torchscript weights",))
    return Verdict(OUR_CLI, "yes", chosen)


def check_bioimageit(ours: Verdict) -> Verdict:
    """BioImageIT has no bioimage.io loader: its users reach a package through our tool, which runs predict."""
    return Verdict(BIOIMAGEIT, ours.status, ours.weights, ours.reasons)


def check_clients(package: str | Path) -> list[Verdict]:
    """One verdict per client in `CLIENTS` order; `CristaeZooError` for input that is not a readable package or an
    rdf that our bioimageio.spec rejects (every client needs at least a valid rdf)."""
    with open_package(package) as pkg:
        validation = core_validation_problem(pkg)
        if validation:
            raise CristaeZooError(f"{pkg.source}: invalid rdf: {validation}")
        ours = check_our_cli(pkg)
        return [
            check_deepimagej(pkg),
            check_ilastik(pkg),
            check_website(pkg),
            check_bioimageit(ours),
            check_core(pkg),
            ours,
        ]
