"""Where the planes are restored: in this process (threads) by default, or on a Dask distributed cluster.

The work is the same either way: a `PlaneJob` (picklable: paths and numbers only) and batches of plane indices.
`restore_batch` runs on a worker: it reads its planes from the input file, rescales them, restores them with a
`Restorer` that the worker keeps loaded between batches, and either returns the planes (TIFF output, written in
order by the client) or writes them straight into the output OME-Zarr (each plane is whole chunks, so workers
never write the same chunk). The executor is a `concurrent.futures.Executor`: a thread pool here, or the
`ClientExecutor` of a `distributed.Client` for `--scheduler ADDRESS` (or `--scheduler local[:N]`, a `LocalCluster`
of N worker processes). Results come back in order with a bounded number of batches in flight, so memory stays
bounded by (in flight) × (batch) × (plane size) whatever the length of the stack.

Workers read the input and write the output by path: on a remote cluster, both must be on a file system the
workers see.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np

from cristae_zoo.errors import CristaeZooError
from cristae_zoo.units import UnitPlan


@dataclass(frozen=True)
class PlaneJob:
    """Everything a worker needs to restore units of one acquisition (paths, not open files)."""

    package: str
    weights: str | None
    tile: int | None
    input: str
    axes: str | None
    channel: int | None
    factor: float
    restored_shape: tuple[int, int]  # plane shape after rescale (what the network sees)
    output_shape: tuple[int, int]  # plane shape written (× the package's output scale, or the input's when resampling back)
    plan: UnitPlan  # how the file is cut into network inputs (planes, volumes, frame windows)
    out_axes: str  # the output's axes
    zarr_output: str | None = None  # workers write here (an OME-Zarr being written); None: return the units
    # Uncertainty (`predict --ensemble`): `tta` dihedral transforms of each unit, through this package and the
    # `members` packages; the mean is the restoration and the pixel-wise standard deviation goes to `std_zarr_output`
    # (or is returned beside the units).
    tta: int = 1
    members: tuple[str, ...] = ()
    std_zarr_output: str | None = None
    engine: str = "auto"
    precision: str = "fp32"
    at_once: int = 1  # units restored at the same time in this process, each by its own runner (`lend_runner`)

    @property
    def uncertainty(self) -> bool:
        return self.tta > 1 or bool(self.members)


_LOCK = threading.Lock()  # guards the caches below
_TF_LOCK = threading.Lock()  # one TensorFlow call at a time (see restore_batch)
_RESTORERS: dict[tuple[Any, ...], Any] = {}
_ACQUISITIONS: dict[tuple[Any, ...], Any] = {}


def load_restorer(package: str, weights: str | None, tile: int | None, engine: str = "auto",
                  precision: str = "fp32") -> Any:  # fmt: skip
    """The `Restorer` of this process for (package, weights, tile, engine, precision), loaded once: loading and
    checking a package is the slow part. Threads of this process share it; each Dask worker process has its own."""
    from cristae_zoo.predict import Restorer

    key = (package, weights, tile, engine, precision)
    with _LOCK:
        if key not in _RESTORERS:
            _RESTORERS[key] = Restorer(package, weights, tile, engine=engine, precision=precision)
        return _RESTORERS[key]


def _restorer(job: PlaneJob) -> Any:
    return load_restorer(job.package, job.weights, job.tile, job.engine, job.precision)


def _acquisition(job: PlaneJob) -> Any:
    from cristae_zoo.acquisition import open_acquisition

    key = (job.input, job.axes, job.channel)
    with _LOCK:
        if key not in _ACQUISITIONS:
            _ACQUISITIONS[key] = open_acquisition(job.input, axes=job.axes, channel=job.channel)
        return _ACQUISITIONS[key]


def prepare_units(job: PlaneJob, indices: list[tuple[int, ...]]) -> np.ndarray:
    """The units `indices` of the input, rescaled to what the network sees: float32 (B, C_in, [Z], Y', X')."""
    from cristae_zoo.units import read_unit

    acq = _acquisition(job)
    with acq.open_array() as array:
        if len(indices) == 1:  # one unit (e.g. one large plane): a view, not a stacked copy
            return read_unit(acq, array, job.plan, indices[0], job.restored_shape)[None]
        return np.stack([read_unit(acq, array, job.plan, i, job.restored_shape) for i in indices])


def restore_batch(job: PlaneJob, batch: list[tuple[int, ...]]) -> np.ndarray | tuple[np.ndarray, np.ndarray] | int:
    """Restore units `batch` (indices in canonical order). Returns the predicted units (B, C_out, [Z], Y, X) — with
    `job.uncertainty`, the (mean, std) pair of them — or writes them into `job.zarr_output` (and the std into
    `job.std_zarr_output`) and returns how many were written."""
    from cristae_zoo.rescale import resample

    units = prepare_units(job, batch)
    outputs = list(_predict_with_std(job, units)) if job.uncertainty else [_predict(job, units)]
    if tuple(outputs[0].shape[-2:]) != tuple(job.output_shape):  # --resample-back
        outputs = [_resample_units(o, job.output_shape, resample) for o in outputs]
    if job.zarr_output is None:
        return tuple(outputs) if job.uncertainty else outputs[0]
    from cristae_zoo.acquisition import open_zarr_output
    from cristae_zoo.units import output_index, unit_in_output

    for path, restored in zip((job.zarr_output, job.std_zarr_output), outputs):
        out = open_zarr_output(path)
        for index, unit in zip(batch, restored):
            out[output_index(job.plan, index, job.out_axes)] = unit_in_output(unit, job.plan, job.out_axes)
    return len(batch)


def _resample_units(units: np.ndarray, shape: tuple[int, int], resample: Callable[..., np.ndarray]) -> np.ndarray:
    flat = units.reshape(-1, *units.shape[-2:])
    return np.stack([resample(p, shape) for p in flat]).reshape(*units.shape[:-2], *shape)


def _predict(job: PlaneJob, units: np.ndarray, overwrite_input: bool = True) -> np.ndarray:
    with _TF_LOCK if _restorer(job).weights_format == "tensorflow_saved_model_bundle" else _nullcontext():
        # TensorFlow's SavedModel layer is not safe to call from several threads at once; ONNX Runtime and
        # TorchScript are.
        # `units` was read for this call: it may be normalised in place (one full-size copy less)
        restorer = _restorer(job)
        with restorer.lend_runner(job.at_once) as runner:
            return restorer.predict_units(units, overwrite_input=overwrite_input, runner=runner)


def _predict_with_std(job: PlaneJob, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and pixel-wise standard deviation over the ensemble: every package × `tta` dihedral transforms (on y
    and x, mapped back exactly)."""
    from dataclasses import replace

    from cristae_zoo.uncertainty import RunningMeanStd, dihedral_inverse, dihedral_transform

    jobs = [job] + [replace(job, package=m, members=()) for m in job.members]
    stats = RunningMeanStd()
    for j in jobs:
        for i in range(job.tta):
            # the identity transform returns `units` itself, which the next members/transforms still need
            stats.add(dihedral_inverse(_predict(j, dihedral_transform(units, i), overwrite_input=False), i))
    mean, std = stats.result()
    return mean.astype(np.float32), std.astype(np.float32)


@contextmanager
def _nullcontext() -> Iterator[None]:
    yield


def release_workers() -> None:
    """Unload the models this process holds (tests, and the end of a local run)."""
    with _LOCK:
        for r in _RESTORERS.values():
            r.close()
        _RESTORERS.clear()
        _ACQUISITIONS.clear()


# ----------------------------------------------------------------------------------------------------- executors


@dataclass
class Engine:
    executor: Executor
    workers: int
    description: str


@contextmanager
def engine(scheduler: str | None = None, workers: int = 1) -> Iterator[Engine]:
    """An executor for `restore_batch`: threads in this process (`scheduler` None), a new `LocalCluster`
    (`local` or `local:N`), or the Dask scheduler at `scheduler` (e.g. tcp://10.0.0.5:8786)."""
    if workers < 1:
        raise CristaeZooError(f"--workers {workers}: expected at least 1")
    if scheduler is None:
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cristae-zoo")
        try:
            yield Engine(pool, workers, f"{workers} thread{'s' if workers > 1 else ''} in this process")
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            release_workers()
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - distributed is a dependency
        raise CristaeZooError("--scheduler needs the 'distributed' package (pip install 'dask[distributed]')") from None
    cluster = None
    try:
        if scheduler == "local" or scheduler.startswith("local:"):
            n = int(scheduler.split(":", 1)[1]) if ":" in scheduler else workers
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
        else:
            client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError, ValueError) as err:
        if cluster is not None:
            cluster.close()
        raise CristaeZooError(f"--scheduler {scheduler}: cannot connect to a Dask scheduler ({err})") from None
    try:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        yield Engine(client.get_executor(pure=False), n_workers, f"Dask scheduler {client.scheduler.address}"
                     f" ({n_workers} worker{'s' if n_workers > 1 else ''})")  # fmt: skip
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


class InOrder:
    """`fn(*args, item)` for every item, on `executor`, yielded in order with at most `window` items in flight. The
    first `window` items are submitted here, not on the first `next()`: the caller may do other work (the conditions
    check) while they run. Iterate once; `cancel()` (iteration calls it on exit) drops what has not started and waits
    for what has."""

    def __init__(self, executor: Executor, fn: Callable[..., Any], items: Iterable[Any], *args: Any, window: int = 2):
        self._submit: Callable[[Any], Future[Any]] = lambda item: executor.submit(fn, *args, item)
        self._items = iter(items)
        self._pending: deque[Future[Any]] = deque(self._submit(item) for item in islice(self._items, window))

    def __iter__(self) -> Iterator[Any]:
        try:
            while self._pending:
                yield self._pending.popleft().result()
                for item in islice(self._items, 1):
                    self._pending.append(self._submit(item))
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Drop the items not started and wait for those already running: with several workers, a batch still
        writing OME-Zarr chunks after another one failed would recreate the staged output its caller then removes."""
        running = [f for f in self._pending if not f.cancel()]
        self._pending.clear()
        wait(running)
