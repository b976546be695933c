"""Which folders a command may write: its own earlier outputs, empty folders and new paths, nothing else.

Every output folder that mitp writes carries a small marker file, `.mitp-output`, naming the kind of
output and the command and version that wrote it, and, for the outputs built whole and swapped in
(`build_output`), the entries it wrote. A command asked to write into an existing, non-empty folder
without its own kind of marker (a user's folder, a run folder given to `export`, the `data` folder given
to `prepare`) refuses with OutputError instead of replacing it, and so does an `--out` that is the current
folder, one of its parents, a folder holding the command's own inputs, a mount point, or an output of its
own kind that now holds something it did not write (a user's file, another command's output inside it).
An `--out` that is a symbolic link is followed: the folder it points to is the one replaced.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import __version__
from ..errors import MitpError
from .atomic import (
    FOLDER_TMP_SUFFIX,
    OLD_SUFFIX,
    TMP_SUFFIX,
    atomic_write_json,
    build_directory,
    clear_leftovers,
    file_sha256,
)

MARKER = ".mitp-output"
COMMANDS = {
    "bundle": "mitp export",
    "prepared": "mitp data prepare",
    "raw": "mitp data download",
    "standin": "mitp pretrain-standin",
    "report": "mitp report",
    "run": "mitp train",
    "backbone": "mitp fetch-backbone",
    "release": "mitp release",
    "site": "mitp bundle web",
    "scores": "mitp score",
}


REPLACED_WHOLE = {"bundle", "prepared", "raw", "standin", "backbone", "release", "site"}  # built beside, then swapped in whole
FILES_RECORDED = {"bundle", "release", "site"}  # few files, often edited or added to by hand: each file is recorded
HASHED_BYTES = 1 << 20  # files up to this size are recorded with their sha256 too (cards, pages, JSON)
NESTED_SEARCH_DEPTH = 3  # how deep a folder about to be replaced is searched for other commands' outputs


class OutputError(MitpError, ValueError):
    """An output path that the command may not write; the message says why and what to do."""


def marker_kind(folder: Path) -> str | None:
    """The kind written in `folder`'s marker, or None (no marker, or an unreadable one)."""
    try:
        value = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return value.get("kind") if isinstance(value, dict) else None


def mark(folder: Path, kind: str, entries: list[str] | None = None, files: dict[str, list] | None = None) -> None:
    value: dict = {"kind": kind, "command": COMMANDS[kind], "mitp_version": __version__}
    if entries is not None:
        value["entries"] = entries
    if files is not None:
        value["files"] = files
    atomic_write_json(Path(folder) / MARKER, value)


def add_entries(folder: Path, names: list[str]) -> None:
    """Record entries that a later command added to an output (an image cache in a prepared folder)."""
    try:
        value = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return
    if isinstance(value, dict) and isinstance(value.get("entries"), list):
        atomic_write_json(Path(folder) / MARKER, {**value, "entries": sorted({*value["entries"], *names})})


@contextmanager
def build_output(path: Path, kind: str, option: str = "--out", inputs: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Build an output folder of `kind` beside `path` and swap it in whole when the block finishes: claimed
    first, marked, and its entries recorded in the marker last, so that a later build can tell what a user
    has added since."""
    with build_directory(claim(path, kind, option, inputs)) as tmp:
        mark(tmp, kind)
        yield tmp
        files = file_record(tmp) if kind in FILES_RECORDED else None
        mark(tmp, kind, entries=sorted(entry.name for entry in tmp.iterdir() if entry.name != MARKER), files=files)


def file_record(folder: Path) -> dict[str, list]:
    """{relative path: [size, mtime_ns, sha256 or None]} of every file below `folder` but the marker: what a
    later build compares to tell a file mitp wrote from one a user added or edited since."""
    return {
        relative: [info.st_size, info.st_mtime_ns, file_sha256(folder / relative) if info.st_size <= HASHED_BYTES else None]
        for relative, info in _files_below(folder).items()
        if not stat.S_ISLNK(info.st_mode)
    }


def recorded_files(folder: Path) -> dict[str, list] | None:
    """The file record in `folder`'s marker, or None (an older marker, or none)."""
    try:
        files = json.loads((Path(folder) / MARKER).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return None
    return files if isinstance(files, dict) else None


def claim(path: Path, kind: str, option: str = "--out", inputs: tuple[Path, ...] = ()) -> Path:
    """Check that the command writing outputs of `kind` may write (or replace) `path`, then clear the
    leftovers of its own interrupted builds there. Returns the path; raises OutputError."""
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()  # the folder the link points to is the one replaced; the link stays
    command = COMMANDS[kind]
    resolved, cwd = path.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise OutputError(f"{option} {path} is the current folder or one of its parents; {command} replaces its output folder whole: name a new folder")
    if resolved.is_mount():  # (resolved: pathlib takes a relative '.' for a mount point)
        raise OutputError(f"{option} {path} is a mount point, which {command} cannot replace whole: name a folder inside it")
    for given in inputs:
        source = Path(given).resolve()
        if resolved == source or resolved in source.parents:
            raise OutputError(f"{option} {path} would replace the input {given}: name another folder")
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"{option} {path} exists and is not a folder: name a folder")
        owner = marker_kind(path)
        if owner != kind and _holds_anything(path):
            written_by = f"was written by {COMMANDS[owner]}" if owner in COMMANDS else "was not written by mitp"
            raise OutputError(
                f"{option} {path} already exists and {written_by}, not by {command}; it is left as it is. "
                f"Name another folder, or remove it yourself if its content can go"
            )
        if owner == kind and kind in REPLACED_WHOLE:
            _nothing_foreign(path, option, command)
    clear_leftovers(path)
    return path


def _holds_anything(path: Path) -> bool:
    """Whether a folder holds a file or a link anywhere below it: empty folders alone (a workflow engine makes
    its outputs' parents before the job) hold nothing to lose."""
    return any(not entry.is_dir() or entry.is_symlink() for entry in path.rglob("*"))


def _nothing_foreign(path: Path, option: str, command: str) -> None:
    """Refuse to replace an output of this command's own kind that holds what the command did not write:
    an entry absent from its marker's list, or another output (a folder with a marker) anywhere inside."""
    def refuse(what: str) -> None:
        raise OutputError(
            f"{option} {path} holds {what}, which {command} did not write and replacing the folder would delete: "
            f"move it out, or name another folder"
        )

    try:
        entries = json.loads((path / MARKER).read_text()).get("entries")
    except (OSError, ValueError, AttributeError):
        entries = None
    if isinstance(entries, list):
        foreign = sorted(e.name for e in path.iterdir() if e.name not in {*entries, MARKER} and not _build_leftover(e.name))
        if foreign:
            refuse(", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""))
    changed = changed_files(path)
    if changed:
        refuse(", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else ""))
    nested = _nested_output(path, lambda folder: (folder / MARKER).is_file())
    if nested is not None:
        refuse(f"{nested} (the output of {COMMANDS.get(marker_kind(nested) or '', 'another command')})")


def changed_files(path: Path) -> list[str]:
    """Files below `path` that its marker's file record does not hold as written: added since (a file in
    bundle/ or test_vectors/), or edited since (a hand-edited README.md). Empty without a record."""
    record = recorded_files(path)
    if record is None:
        return []
    changed = []
    for relative, now in sorted(_files_below(path).items()):
        written = record.get(relative)
        if not isinstance(written, list) or len(written) != 3 or stat.S_ISLNK(now.st_mode):
            changed.append(f"{relative} (added)")
        elif now.st_size != written[0] or (now.st_mtime_ns != written[1] and (written[2] is None or file_sha256(path / relative) != written[2])):
            changed.append(f"{relative} (edited)")
    return changed


def _files_below(folder: Path) -> dict[str, os.stat_result]:
    """{relative path: lstat} of every file or link below `folder`, but the marker and build leftovers."""
    found = {}
    for base, subfolders, names in os.walk(folder):
        subfolders[:] = [name for name in subfolders if not _build_leftover(name)]
        for name in names:
            path = Path(base) / name
            relative = path.relative_to(folder).as_posix()
            if relative != MARKER and not _build_leftover(name):
                found[relative] = path.lstat()
    return found


def _nested_output(root: Path, is_output: Callable[[Path], bool]) -> Path | None:
    for folder, subfolders, _ in os.walk(root):
        here = Path(folder)
        if here != root and is_output(here):
            return here
        if len(here.relative_to(root).parts) >= NESTED_SEARCH_DEPTH:
            subfolders.clear()
    return None


def _build_leftover(name: str) -> bool:
    return name.endswith((TMP_SUFFIX, FOLDER_TMP_SUFFIX, OLD_SUFFIX))


def claim_file(
    path: Path, inputs: tuple[Path, ...] = (), within: tuple[Path, ...] = (), ours: Callable[[Path], bool] | None = None
) -> None:
    """A file a command will write whole (replacing it): not a folder, none of the command's inputs, nothing
    inside the input folders `within`, and, if it exists, a file `ours` recognises as this command's output."""
    if path.is_dir():
        raise OutputError(f"--out {path} is a folder: name a file")
    resolved = path.resolve()
    if resolved in {p.resolve() for p in inputs}:
        raise OutputError(f"--out {path} would overwrite an input: name another file")
    for folder in within:
        if resolved.is_relative_to(Path(folder).resolve()):
            raise OutputError(f"--out {path} is inside {folder}, an input of this command: name a file elsewhere")
    if ours is not None and path.exists() and not ours(path):
        raise OutputError(f"--out {path} exists and is not a file this command wrote; it is left as it is: name another file")
