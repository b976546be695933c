"""Crash-safe writes of files and folders (torch-free, so data preparation and predict can use them).

A file is written to a temporary name in its folder and renamed over the target. A folder is built under
a hidden temporary name beside its target (`.<name>.<random>.mitp-tmp`) and swapped in with one atomic
exchange (Linux renameat2 RENAME_EXCHANGE), so a process killed at any instant leaves the target either
old or new, never missing. Where the exchange is not available the swap takes two renames, and
`repair_directory` puts the old folder back if a kill fell between them. Leftover temporary folders are
removed by the next build of the same target.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".tmp"  # files; folders use FOLDER_TMP_SUFFIX
FOLDER_TMP_SUFFIX = ".mitp-tmp"
OLD_SUFFIX = ".mitp-old"  # the fallback swap's parking name


@contextmanager
def atomic_writer(path: Path, mode: str = "w") -> Iterator[IO]:
    """An open file whose content replaces `path` only when the block finishes (fsynced first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; results and bundles are meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_writer(path) as f:
        f.write(text)


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


@contextmanager
def build_directory(target: Path) -> Iterator[Path]:
    """A fresh, empty folder beside `target` to build in; it replaces `target` whole only if the block
    finishes. A failed or killed build leaves `target` as it was (its leftover goes at the next build)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clear_leftovers(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=FOLDER_TMP_SUFFIX))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_directory(tmp, target)


def replace_directory(source: Path, target: Path) -> None:
    """Put the complete folder `source` at `target`, atomically swapping out an existing one."""
    source, target = Path(source), Path(target)
    _fsync_tree(source)
    if not target.exists():
        os.rename(source, target)
    elif _exchange(source, target):
        shutil.rmtree(source)  # now the old content
    else:  # two renames; repair_directory undoes a kill between them
        old = target.with_name(target.name + OLD_SUFFIX)
        shutil.rmtree(old, ignore_errors=True)
        os.rename(target, old)
        os.rename(source, target)
        shutil.rmtree(old)
    _fsync_dir(target.parent)


def repair_directory(target: Path) -> None:
    """Undo a swap killed between its two renames (only the fallback swap can leave that state)."""
    target = Path(target)
    old = target.with_name(target.name + OLD_SUFFIX)
    if old.exists():
        if not target.exists():
            os.rename(old, target)
        else:
            shutil.rmtree(old)


def clear_leftovers(target: Path) -> None:
    """Remove the temporary folders that builds of `target` left behind, and repair an interrupted swap."""
    target = Path(target)
    repair_directory(target)
    if target.parent.is_dir():
        for leftover in target.parent.glob(f".{target.name}.*{FOLDER_TMP_SUFFIX}"):
            shutil.rmtree(leftover, ignore_errors=True)


_RENAME_EXCHANGE, _AT_FDCWD = 2, -100
_libc = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where that is not supported."""
    global _libc
    try:
        _libc = _libc or ctypes.CDLL(None, use_errno=True)
        renameat2 = _libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this file system cannot exchange
        return False
    raise OSError(errno, os.strerror(errno), str(b))


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: Path) -> str:
    """The file's sha256, read in chunks (model weights, archives and cards alike)."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
