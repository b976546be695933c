"""Whether a path stays inside a folder: the one containment rule for data, bundles, releases and sites.

A path is inside a folder when it is, once `..`, relative parts and every symbolic link are resolved on
both sides: `pairs.csv` in the current folder, `./pairs.csv` and `/abs/pairs.csv` name the same root, and a
link inside the folder to a file elsewhere is outside. One layout is trusted as it is: a snapshot in the
Hugging Face cache (`.../models--ORG--NAME/snapshots/REV/`), whose files are links into the same
repository's `blobs/`; a link from such a snapshot anywhere else is still outside. Torch-free.
"""

from __future__ import annotations

import os
from pathlib import Path


def hub_blobs(folder: Path) -> Path | None:
    """The blobs/ folder of the Hub cache repository whose snapshot holds `folder` (resolved), or None."""
    real = Path(folder).resolve()
    for snapshot in (real, *real.parents):
        if snapshot.parent.name == "snapshots" and snapshot.parent.parent.name.startswith(("models--", "datasets--", "spaces--")):
            blobs = snapshot.parent.parent / "blobs"
            return blobs if blobs.is_dir() else None
    return None


def inside(path: Path | str, root: Path | str) -> bool:
    """True when `path` lies inside `root` (or is `root`) with links and `..` resolved on both sides; a file
    of a Hub cache snapshot that links into its repository's blobs/ counts as inside its snapshot."""
    path, root = Path(path), Path(root)
    real, real_root = path.resolve(), root.resolve()
    if real.is_relative_to(real_root):
        return True
    blobs = hub_blobs(real_root)
    if blobs is None or real.parent != blobs:
        return False
    written = Path(os.path.abspath(path))  # as written, `..` folded: the link itself must stand in the snapshot
    return written.is_relative_to(Path(os.path.abspath(root))) or written.is_relative_to(real_root)


class Within:
    """`inside(path, root)` for many paths, each folder resolved once: a data set's 500,000 images sit in a
    few folders. A path whose last part is a link, `.` or `..` is judged whole by `inside`."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._folders: dict[Path, bool] = {}

    def __call__(self, path: Path | str) -> bool:
        path = Path(path)
        if path.name in ("", ".", "..") or path.is_symlink():
            return inside(path, self.root)
        folder = self._folders.get(path.parent)
        if folder is None:
            folder = self._folders[path.parent] = inside(path.parent, self.root)
        return folder
