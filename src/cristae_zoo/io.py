"""Reading and writing images: checked on the way in, written atomically on the way out.

Writing outputs safely (every command that writes uses these; see README "Reliability"):

- `staged_file(target, overwrite=...)` and `staged_dir(target, overwrite=..., marker=...)` yield a hidden
  temporary path beside `target` (same file system, so the final move is atomic). The block writes there; when it
  ends normally the result is moved onto `target`; when it raises (an error, Ctrl-C, a full disk, a signal
  turned into an exception by `cleanup_on_signals`) the temporary path is removed and `target` is untouched.
  An existing `target` is refused unless `overwrite`; with `overwrite` a folder is replaced only if it is one the
  command wrote itself (it holds `marker`), never a folder the user keeps other things in. A lock file claims
  `target` for the whole run, and the final move never replaces a target that appeared meanwhile, so two runs
  racing for one output cannot both report success.
- `check_target(...)` makes the same refusals up front, before the slow part of a command.
- `cleanup_on_signals()` turns SIGTERM and SIGHUP into an `Interrupted` exception (a KeyboardInterrupt, like
  Ctrl-C), so `finally` blocks and the staging context managers run and nothing partial is left behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import csv
import errno
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import numpy as np
import tifffile

from cristae_zoo.errors import CristaeZooError

IMAGE_SUFFIXES = (".tif", ".tiff")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; move it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs should be as readable as any other
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_tiff(path: Path, image: np.ndarray, **kwargs) -> None:
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, image, **kwargs)


def list_images(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise CristaeZooError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise CristaeZooError(f"{folder}: no TIFF images (*.tif, *.tiff) in this folder")
    return files


def read_image_2d(path: Path, min_size: int = 1) -> np.ndarray:
    """Read a 2D single-channel image as float32, refusing anything a restoration step cannot use."""
    path = Path(path)
    try:
        image = tifffile.imread(path)
    except Exception as err:  # tifffile raises many types for unreadable files
        raise CristaeZooError(f"{path}: cannot read as TIFF ({type(err).__name__}: {err})") from None
    image = np.squeeze(image)
    if image.ndim != 2:
        raise CristaeZooError(f"{path}: expected a 2D image, got shape {image.shape}")
    if image.dtype.kind not in "buif":  # complex: the imaginary part would be dropped silently
        raise CristaeZooError(f"{path}: pixel type {image.dtype} is not a real intensity; save the image as integers or"
                              " real floats")  # fmt: skip
    image = image.astype(np.float32)
    if not np.all(np.isfinite(image)):
        raise CristaeZooError(f"{path}: contains NaN or Inf values")
    if image.max() == image.min():
        raise CristaeZooError(f"{path}: the image is constant ({image.flat[0]:g} everywhere)")
    if min(image.shape) < min_size:
        raise CristaeZooError(f"{path}: image {image.shape} is smaller than {min_size}×{min_size} px")
    return image


def refuse_overwriting_inputs(outputs: list[Path], inputs: list[Path]) -> None:
    resolved = {Path(p).resolve() for p in inputs}
    for out in outputs:
        if Path(out).resolve() in resolved:
            raise CristaeZooError(f"{out}: refusing to overwrite an input file")


def write_csv(path: Path, rows: list[dict], fieldnames: Sequence[str] | None = None) -> None:
    """Rows of dicts as CSV, written atomically; columns `fieldnames` (default: the first row's keys)."""
    fieldnames = list(fieldnames or (rows[0].keys() if rows else []))
    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


# ------------------------------------------------------------------------------------------- staged outputs

#: errno values that mean "this output cannot be written here", as opposed to a bug: reported as one line.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
#: The subset that, raised while the block writes, surely concerns the output (EACCES may be an unreadable input).
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def _umask() -> int:
    """The process umask, read without changing it where possible (os.umask(0) briefly affects every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_error(target: Path, err: OSError) -> CristaeZooError:
    """A one-line error for an OSError met while writing `target` (full disk, read-only or forbidden folder)."""
    reason = err.strerror or str(err)
    fix = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space (quota)", errno.EFBIG: "write elsewhere",
           errno.EROFS: "choose a writable folder"}.get(err.errno or 0, "choose a folder you can write to")  # fmt: skip
    return CristaeZooError(f"{target}: cannot write ({reason}); nothing was written: {fix} and run again")


def check_target(
    target: Path, *, overwrite: bool = False, marker: str | None = None, folder: bool | None = None,
    inputs: Iterable[Path] = (),
) -> None:  # fmt: skip
    """Refuse, as a one-line `CristaeZooError`, an output `target` that this run must not write:

    - `target` is one of `inputs`, inside one, or holds one (replacing it would delete an input), links followed;
    - `target` exists and `overwrite` is false;
    - with `overwrite`: `target` is of the wrong kind (`folder` true/false: a folder/file is expected), or is a
      folder without `marker` (a file only the command itself writes, e.g. "rdf.yaml", "degradation.yaml"), so it
      may hold the user's own files.
    Call it before the slow part of a command; `staged_file`/`staged_dir` call it again when they start."""
    target = Path(target)
    resolved = target.resolve()
    for given in inputs:
        source = Path(given).resolve()
        if resolved == source or resolved in source.parents or source in resolved.parents:
            raise CristaeZooError(f"{target}: the output would replace or lie inside the input {given}; choose another output")
    if not (target.exists() or target.is_symlink()):
        return
    if folder and _empty_dir(target):  # nothing in it to lose (e.g. a folder made for the output beforehand)
        return
    if not overwrite:
        raise CristaeZooError(f"{target}: already exists; use --overwrite to replace it (or choose another output)")
    if target.is_symlink() or (folder is not None and target.is_dir() != folder):
        kind = "a link" if target.is_symlink() else ("a folder" if target.is_dir() else "a file")
        raise CristaeZooError(f"{target}: is {kind}, not the {'folder' if folder else 'file'} this command writes;"
                              " refusing to replace it even with --overwrite")  # fmt: skip
    if target.is_dir() and marker is not None and not (target / marker).is_file():
        raise CristaeZooError(
            f"{target}: exists and has no {marker}, so it was not written by this command; refusing to replace it"
            " even with --overwrite (choose a new or empty output folder)"
        )


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _stale(lock: Path) -> bool:
    """A lock left by a process of this host that no longer runs (killed with SIGKILL, power loss)."""
    try:
        pid, host = lock.read_text().split()[:2]
        if host != socket.gethostname():
            return False
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        return False
    return False


@contextmanager
def _claim(target: Path) -> Iterator[None]:
    """Hold `.NAME.lock` beside `target` for the run: a second run for the same output fails at once (O_EXCL)
    instead of both writing and the last one silently winning. A lock whose process is gone is taken over."""
    lock = target.parent / f".{target.name}.lock"
    for attempt in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            if attempt == 0 and _stale(lock):
                try:  # rename first: of two runs taking over the same stale lock, only one rename succeeds
                    os.replace(lock, lock.with_name(f"{lock.name}.{uuid.uuid4().hex[:8]}.stale"))
                except FileNotFoundError:
                    pass
                for old in lock.parent.glob(f"{lock.name}.*.stale"):
                    old.unlink(missing_ok=True)
                continue
            owner = lock.read_text().strip() if lock.is_file() else "?"
            raise CristaeZooError(
                f"{target}: another run is writing this output (lock {lock.name}: pid, host {owner!r}); wait for it"
                f" to end, or delete {lock} if that run is gone"
            ) from None
        except OSError as err:
            if err.errno in _WRITE_ERRNOS:
                raise write_error(target, err) from None
            raise
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {socket.gethostname()}\n")
    except OSError as err:
        lock.unlink(missing_ok=True)
        raise write_error(target, err) from None
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _libc_renameat2() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return getattr(libc, "renameat2", None)
    except OSError:
        return None


_RENAMEAT2 = _libc_renameat2()
_AT_FDCWD, _RENAME_NOREPLACE = -100, 1


def rename_noreplace(src: Path, dst: Path) -> None:
    """Move `src` onto `dst` atomically, failing with FileExistsError if `dst` exists (even if it appeared a
    microsecond ago). Linux renameat2(RENAME_NOREPLACE); elsewhere, or on file systems without it, a hard link
    for files and rename(2) for folders (which fails on a non-empty folder)."""
    src, dst = Path(src), Path(dst)
    if _RENAMEAT2 is not None:
        rc = _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)  # type: ignore[operator]
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, os.strerror(err), str(dst))
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # EINVAL: file system without NOREPLACE
            raise OSError(err, os.strerror(err), str(dst))
    if not src.is_dir():
        try:
            os.link(src, dst)  # EEXIST if dst exists
            os.unlink(src)
            return
        except FileExistsError:
            raise
        except OSError as err:  # file systems without hard links (FAT, some FUSE and network mounts)
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
    # Check, then rename: a tiny window, but the run's lock file already keeps other cristae-zoo runs out.
    if dst.exists() or dst.is_symlink():
        raise FileExistsError(errno.EEXIST, "File exists", str(dst))
    os.rename(src, dst)  # for a folder, fails on a non-empty folder that appeared meanwhile


@contextmanager
def _staged(target: Path, *, overwrite: bool, marker: str | None, folder: bool,
            inputs: Iterable[Path]) -> Iterator[Path]:  # fmt: skip
    # Absolute and normalised: "." or "runs/.." have no name to stage beside (the staging path would land inside).
    target = Path(os.path.abspath(target))
    inputs = list(inputs)
    check_target(target, overwrite=overwrite, marker=marker, folder=folder, inputs=inputs)
    created = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        blocking = next((p for p in [target.parent, *target.parent.parents] if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise CristaeZooError(f"{target}: cannot create its folder: {blocking} is a file, not a folder") from None
        raise write_error(target, err) from None
    committed = False
    try:
        with _claim(target):
            check_target(target, overwrite=overwrite, marker=marker, folder=folder, inputs=inputs)  # raced?
            prefix, suffix = f".{target.name}.", f".partial{target.suffix}"
            try:
                tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=prefix, suffix=suffix) if folder else
                           _mkstemp(target.parent, prefix, suffix))  # fmt: skip
                os.chmod(tmp, (0o777 if folder else 0o666) & ~_umask())  # mkstemp/mkdtemp make owner-only paths
            except OSError as err:
                raise write_error(target, err) from None
            try:
                try:
                    yield tmp
                except OSError as err:
                    if err.errno in _FULL_ERRNOS:
                        raise write_error(target, err) from None
                    raise
                _commit(tmp, target, overwrite=overwrite)
                committed = True
            finally:
                if not committed:
                    _remove(tmp)
    finally:
        if not committed:  # folders this run created for the output and left empty
            for p in created:
                try:
                    p.rmdir()
                except OSError:
                    break


def _mkstemp(folder: Path, prefix: str, suffix: str) -> str:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    os.close(fd)
    return tmp


def _commit(tmp: Path, target: Path, *, overwrite: bool) -> None:
    """Move the finished `tmp` onto `target`; with `overwrite` the old target is moved aside first and deleted
    only once the new one is in place (restored if the move fails)."""
    old = None
    if tmp.is_dir() and _empty_dir(target):
        try:
            target.rmdir()  # fails if something was put there meanwhile: then the move below refuses
        except OSError:
            pass
    if overwrite and (target.exists() or target.is_symlink()):
        old = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.old"
        os.replace(target, old)
    try:
        rename_noreplace(tmp, target)
    except FileExistsError:
        if old is not None:
            _remove(old)  # someone else's output is in place now; ours is dropped, theirs kept
        raise CristaeZooError(
            f"{target}: appeared while this run was writing it (another run?); this run's output was discarded"
        ) from None
    except OSError as err:
        if old is not None:
            os.replace(old, target)
        raise write_error(target, err) from None
    if old is not None:
        _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def staged_file(target: Path, *, overwrite: bool = False, inputs: Iterable[Path] = ()) -> Iterator[Path]:
    """Write one output file safely: yields an (empty, existing) hidden path `.NAME.XXXX.partial.SUFFIX` beside
    `target` to write to; on normal exit it is moved onto `target`, on any exception it is deleted.

        with staged_file(out / "weights.onnx", overwrite=overwrite, inputs=[model_dir]) as tmp:
            export(model, tmp)

    Refuses (`CristaeZooError`, before yielding): an existing `target` without `overwrite`; with `overwrite`, a
    `target` that is a folder or a link; a `target` that is or contains one of `inputs`; a target another run is
    writing (lock file). A target that appears during the block is not replaced: the run fails instead.
    Full-disk and permission errors inside the block become a one-line `CristaeZooError`. The suffix is kept on
    the temporary path, so writers that pick the format from it (matplotlib, tifffile) work."""
    with _staged(target, overwrite=overwrite, marker=None, folder=False, inputs=inputs) as tmp:
        yield tmp


@contextmanager
def staged_dir(target: Path, *, overwrite: bool = False, marker: str | None = None,
               inputs: Iterable[Path] = ()) -> Iterator[Path]:  # fmt: skip
    """Write one output folder safely: yields an empty hidden folder `.NAME.XXXX.partial` beside `target` to fill;
    on normal exit it replaces `target` in one move, on any exception it is deleted with all it holds.

        with staged_dir(out_dir, overwrite=overwrite, marker="rdf.yaml", inputs=[model_dir]) as tmp:
            write_package(tmp)          # must write tmp / "rdf.yaml"

    `marker` is a file the command always writes into its folder: with `overwrite`, an existing `target` is
    replaced only if it holds `marker` (so `-o .` or `-o ~/data` can never be deleted), and the block should write
    `marker` too. Without `marker`, `overwrite` replaces any existing folder (use only for folders that are
    obviously the command's own). The old folder is replaced as a whole: nothing of it leaks into the new one.
    Other refusals as in `staged_file`."""
    with _staged(target, overwrite=overwrite, marker=marker, folder=True, inputs=inputs) as tmp:
        yield tmp


# ------------------------------------------------------------------------------------------------- signals


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP received inside `cleanup_on_signals`: unwinds like Ctrl-C; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


@contextmanager
def cleanup_on_signals(signals: Sequence[int] = (signal.SIGTERM, signal.SIGHUP), *,
                       exit_on_signal: bool = True) -> Iterator[None]:  # fmt: skip
    """Turn `signals` (default SIGTERM, SIGHUP) into an `Interrupted` exception raised in the main thread, so the
    `finally` blocks and context managers inside (`staged_file`, `staged_dir`, temporary folders) clean up as
    they do on Ctrl-C. Wrap a command's whole body:

        with cleanup_on_signals(), staged_dir(out, overwrite=overwrite, marker="config.yaml") as tmp:
            ...

    A second signal during the clean-up is ignored (so the clean-up finishes; SIGKILL still kills). A signal that
    was already ignored (SIGHUP under `nohup`) stays ignored. On exit the previous handlers are restored. With `exit_on_signal` (default) an `Interrupted` that reaches this context
    manager prints one line on stderr and exits with 128 + the signal number (143 for SIGTERM, 129 for SIGHUP),
    as a process killed by that signal would; otherwise the exception propagates. Outside the main thread (where
    Python cannot install handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # A signal the process was told to ignore stays ignored: `nohup cristae-zoo ...` must survive a hang-up.
    previous = {s: h for s in signals if (h := signal.getsignal(s)) is not signal.SIG_IGN}
    signals = tuple(previous)

    def handler(signum: int, frame: FrameType | None) -> None:
        for s in signals:  # clean-up must not be cut short by a repeated TERM from an impatient supervisor
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    for s in signals:
        signal.signal(s, handler)
    try:
        yield
    except Interrupted as err:
        if not exit_on_signal:
            raise
        sys.stderr.write(f"error: {err}; partial outputs were removed\n")
        raise SystemExit(128 + err.signum) from None
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
