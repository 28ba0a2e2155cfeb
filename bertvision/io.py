"""The file layer: every file BertVision reads or writes goes through here.

Paths are local paths or anything `tf.io.gfile` opens (``gs://...``). Writes
are atomic: a file (or folder) is written under a temporary name beside its
target and renamed over it only when complete, so a kill at any moment
leaves either the old file or the new one, never half of one. A failed write
raises a `BertVisionError` that says what to do (disk full, permission).
Folder locks are `filelock`'s (any operating system). TensorFlow, whose
`tf.io.gfile` does the reading and writing, is imported on the first file
operation, so that importing this module (and the command-line parsers that
need its callers' constants) stays fast.

Example:
    >>> atomic_write_json("runs/a/results.json", {"task": "sst2"})
    >>> read_json("runs/a/results.json")["task"]
    'sst2'
    >>> with atomic_path("runs/a/notes.txt") as part:
    ...     _ = open(part, "w").write("epoch 1")   # model.save(part) alike; renamed when the block ends
    >>> sorted(os.listdir("runs/a"))
    ['notes.txt', 'results.json']
    >>> with exclusive_lock("runs/a", "training"):
    ...     pass                                  # a second writer is refused with a clear error
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import filelock

from bertvision.errors import BertVisionError

__all__ = ["LOCK_FILE", "atomic_folder", "atomic_path", "atomic_write_bytes", "atomic_write_json",
           "atomic_write_text", "exclusive_lock", "exists", "glob", "is_local", "isdir", "join", "listdir",
           "makedirs", "read_bytes", "read_json", "read_text", "remove", "sha256_bytes", "sha256_file",
           "size", "temp_name", "write_error"]

LOCK_FILE = ".lock"


@functools.cache
def _gfile():
    """`tf.io.gfile`, imported on first use: TensorFlow takes seconds to import, and a command's ``--help``
    or ``import bertvision`` should not wait for it."""
    import tensorflow as tf  # noqa: PLC0415  (deferred on purpose, see above)

    return tf.io.gfile


def is_local(path: str | os.PathLike) -> bool:
    """True for a local path (no ``scheme://``)."""
    return "://" not in str(path)


def join(*parts: str | os.PathLike) -> str:
    """Join path parts with ``/`` (local paths and ``gs://`` alike)."""
    return "/".join([str(parts[0]).rstrip("/")] + [str(p).strip("/") for p in parts[1:]])


def exists(path: str | os.PathLike) -> bool:
    return _gfile().exists(str(path))


def isdir(path: str | os.PathLike) -> bool:
    return _gfile().isdir(str(path))


def listdir(path: str | os.PathLike) -> list[str]:
    return sorted(_gfile().listdir(str(path)))


def glob(pattern: str | os.PathLike) -> list[str]:
    return sorted(_gfile().glob(str(pattern)))


def size(path: str | os.PathLike) -> int:
    return int(_gfile().stat(str(path)).length)


def makedirs(path: str | os.PathLike) -> None:
    try:
        _gfile().makedirs(str(path))
    except Exception as err:  # gfile raises its own error types
        raise write_error(path, err) from err


def remove(path: str | os.PathLike) -> None:
    """Remove a file if it exists (never raises for a missing or busy file)."""
    with contextlib.suppress(Exception):
        if _gfile().exists(str(path)):
            _gfile().remove(str(path))


def read_bytes(path: str | os.PathLike) -> bytes:
    with _gfile().GFile(str(path), "rb") as handle:
        return handle.read()


def read_text(path: str | os.PathLike) -> str:
    return read_bytes(path).decode("utf-8")


def read_json(path: str | os.PathLike, error: type[BertVisionError] = BertVisionError) -> Any:
    """Parse a JSON file; a file that is not valid JSON raises `error` naming it."""
    try:
        return json.loads(read_bytes(path).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{path}: not valid JSON ({err}); the file is damaged or was not written by BertVision"
                    ) from err


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with _gfile().GFile(str(path), "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_error(path: str | os.PathLike, err: BaseException) -> BertVisionError:
    """A failed write as a user-facing error that says what to do."""
    text = str(err)
    if isinstance(err, OSError) and err.errno == errno.ENOSPC or "No space left" in text:
        return BertVisionError(f"disk full while writing {path}: free space and run the same command again "
                               "to resume")
    if isinstance(err, PermissionError) or "Permission denied" in text or "Read-only" in text:
        return BertVisionError(f"cannot write {path}: permission denied (choose a writable --out)")
    return BertVisionError(f"writing {path} failed: {text}")


def temp_name(path: str | os.PathLike) -> str:
    """A unique temporary name beside `path` (hidden, same folder, same suffix)."""
    folder, name = os.path.split(str(path))
    stem, suffix = os.path.splitext(name)
    return (join(folder, f".{stem}.tmp-{uuid.uuid4().hex[:8]}{suffix}") if folder else
            f".{stem}.tmp-{uuid.uuid4().hex[:8]}{suffix}")


def _rename(src: str, dst: str) -> None:
    if is_local(dst):
        os.replace(src, dst)
    else:
        _gfile().rename(src, dst, overwrite=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside `path` for any writer (``model.save``,
    ``np.savez``, ``chart.save``); rename it to `path` when the block
    completes, remove it on any error. Creates the parent folder.

    >>> with atomic_path("runs/a/model.keras") as part:
    ...     model.save(part)  # doctest: +SKIP
    """
    path = str(path)
    parent = os.path.dirname(path)
    if parent:
        makedirs(parent)
    tmp = temp_name(path)
    try:
        yield tmp
        _rename(tmp, path)
    except BertVisionError:
        remove(tmp)
        raise
    except OSError as err:
        remove(tmp)
        raise write_error(path, err) from err
    except BaseException:
        remove(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (see the module docstring)."""
    with atomic_path(path) as tmp:
        try:
            with _gfile().GFile(tmp, "wb") as handle:
                handle.write(data)
        except Exception as err:
            raise write_error(path, err) from err


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """JSON with two-space indents, keys in the order given, a final newline."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):  # numpy arrays
        return value.tolist()
    if isinstance(value, os.PathLike):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Build a local folder under a temporary name beside it; it replaces
    `folder` only when the block completes, and is removed on any error.

    >>> with atomic_folder("runs/x/checkpoints/epoch-1.00") as part:
    ...     (part / "weights.bin").write_bytes(b"...")
    3
    >>> os.listdir("runs/x/checkpoints/epoch-1.00")
    ['weights.bin']
    """
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir(parents=True)
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and not isinstance(err, BertVisionError):
            raise write_error(folder, err) from err
        raise


@contextlib.contextmanager
def exclusive_lock(folder: str | os.PathLike, what: str, make_error: Callable[[str], BertVisionError]
                   = BertVisionError, name: str = LOCK_FILE, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (the file `name` in it) for the
    block. A second process asking for it is refused at once with an error
    naming the process that holds it (``wait=True``: it waits its turn). The
    operating system releases the lock when its holder exits, even on
    ``kill -9``. Remote folders (``gs://``) have no locks; the block then
    runs unlocked.
    """
    if not is_local(folder):
        yield
        return
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    lock = filelock.FileLock(path, timeout=-1 if wait else 0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise make_error(f"{folder} is in use by {_lock_holder(path)} ({what}); wait for it to finish, or stop "
                         "it and run this command again") from None
    try:
        with contextlib.suppress(OSError), open(path, "w") as handle:
            handle.write(f"pid {os.getpid()}")  # names the holder to a refused second writer
        yield
    finally:
        lock.release()


def _lock_holder(path: str) -> str:
    """Who holds the lock at `path`, as its holder wrote it (``pid N``)."""
    with contextlib.suppress(OSError):
        with open(path) as handle:
            return handle.read().strip() or "another process"
    return "another process"
