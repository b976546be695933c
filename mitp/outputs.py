"""Which folders a command may write: its own earlier outputs, empty folders and new paths, nothing else.

Every output folder that mitp writes carries a small marker file, `.mitp-output`, naming the kind of
output and the command and version that wrote it. A command asked to write into an existing, non-empty
folder without its own kind of marker (a user's folder, a run folder given to `export`, the `data` folder
given to `prepare`) refuses with OutputError instead of replacing it, and so does an `--out` that is the
current folder, one of its parents, or a folder holding the command's own inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import __version__
from .atomic import atomic_write_json, clear_leftovers
from .errors import MitpError

MARKER = ".mitp-output"
COMMANDS = {
    "bundle": "mitp export",
    "prepared": "mitp data prepare",
    "raw": "mitp data download",
    "standin": "mitp pretrain-standin",
    "report": "mitp report",
    "run": "mitp train",
    "backbone": "mitp fetch-backbone",
}


class OutputError(MitpError, ValueError):
    """An output path that the command may not write; the message says why and what to do."""


def marker_kind(folder: Path) -> str | None:
    """The kind written in `folder`'s marker, or None (no marker, or an unreadable one)."""
    try:
        value = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return value.get("kind") if isinstance(value, dict) else None


def mark(folder: Path, kind: str) -> None:
    atomic_write_json(Path(folder) / MARKER, {"kind": kind, "command": COMMANDS[kind], "mitp_version": __version__})


def claim(path: Path, kind: str, option: str = "--out", inputs: tuple[Path, ...] = ()) -> Path:
    """Check that the command writing outputs of `kind` may write (or replace) `path`, then clear the
    leftovers of its own interrupted builds there. Returns the path; raises OutputError."""
    path = Path(path)
    command = COMMANDS[kind]
    resolved, cwd = path.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise OutputError(f"{option} {path} is the current folder or one of its parents; {command} replaces its output folder whole: name a new folder")
    for given in inputs:
        source = Path(given).resolve()
        if resolved == source or resolved in source.parents:
            raise OutputError(f"{option} {path} would replace the input {given}: name another folder")
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"{option} {path} exists and is not a folder: name a folder")
        owner = marker_kind(path)
        if owner != kind and any(path.iterdir()):
            written_by = f"was written by {COMMANDS[owner]}" if owner in COMMANDS else "was not written by mitp"
            raise OutputError(
                f"{option} {path} already exists and {written_by}, not by {command}; it is left as it is. "
                f"Name another folder, or remove it yourself if its content can go"
            )
    clear_leftovers(path)
    return path


def claim_file(path: Path, inputs: tuple[Path, ...] = ()) -> None:
    """A file a command will write whole (replacing it): not a folder, and none of the command's inputs."""
    if path.is_dir():
        raise OutputError(f"--out {path} is a folder: name a file")
    if path.resolve() in {p.resolve() for p in inputs}:
        raise OutputError(f"--out {path} would overwrite an input: name another file")
