"""Atomic writes of files and folders (torch-free, so data preparation and export can use them).

A file is written to a temporary name in the same folder and renamed; a folder is built beside its
target and swapped in. A process killed at any point leaves either the old or the new version.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to `path` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; results and bundles are meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


@contextmanager
def build_directory(target: Path) -> Iterator[Path]:
    """A fresh, empty folder beside `target` to build in; it replaces `target` whole only if the block
    finishes. A failed or killed build leaves `target` as it was (its leftover is cleared next time)."""
    target = Path(target)
    tmp = target.with_name(target.name + TMP_SUFFIX)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    replace_directory(tmp, target)


def replace_directory(source: Path, target: Path) -> None:
    """Put a complete checkpoint `source` at `target`, swapping out an existing one.

    Order: target -> target.old, source -> target, remove target.old. If killed in between,
    `recover_directory` restores target from target.old."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(source, target)
    shutil.rmtree(old, ignore_errors=True)


def recover_directory(target: Path) -> None:
    old = target.with_name(target.name + ".old")
    if not target.exists() and old.exists():
        os.replace(old, target)
    shutil.rmtree(old, ignore_errors=True)
