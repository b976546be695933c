"""Atomic checkpoints: only the trained parameters (safetensors) plus the resolved config.

A run directory looks like

    run/config.json                     the resolved RunConfig (a resumed run must match it)
    run/checkpoints/epoch-0003/         model.safetensors, optimizer.pt, state.json, config.json
    run/best/                           model.safetensors, state.json, config.json (best validation epoch)
    run/history.json                    per-epoch metrics

Every file is written to a temporary name and renamed; a checkpoint directory is assembled under a
temporary name and renamed into place, so a killed run never leaves a half-written checkpoint under
its final name. `state.json` is written last inside each directory.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .atomic import TMP_SUFFIX, recover_directory
from .config import RunConfig

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"


def save_checkpoint(
    directory: Path,
    trainable: dict[str, torch.Tensor],
    run: RunConfig,
    state: dict[str, Any],
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Assemble a checkpoint in `<directory>.tmp` and rename it to `directory` (which must not exist)."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + TMP_SUFFIX)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable, str(tmp / MODEL_FILE), metadata={"format": "pt", "mitp": "trainable-only"})
    if optimizer_state is not None:
        torch.save(optimizer_state, tmp / OPTIMIZER_FILE)
    (tmp / CONFIG_FILE).write_text(run.to_json() + "\n")
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    _fsync_dir(tmp)
    os.replace(tmp, directory)
    _fsync_dir(directory.parent)
    return directory


def is_complete(directory: Path) -> bool:
    return (directory / STATE_FILE).is_file() and (directory / MODEL_FILE).is_file()


def load_checkpoint(directory: Path) -> tuple[dict[str, torch.Tensor], RunConfig, dict[str, Any]]:
    """Trainable tensors, the run config and the trainer state of a checkpoint directory."""
    directory = Path(directory)
    if not is_complete(directory):
        raise FileNotFoundError(f"no complete checkpoint in {directory} (expected {MODEL_FILE} and {STATE_FILE})")
    run = RunConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    state = json.loads((directory / STATE_FILE).read_text())
    return load_file(str(directory / MODEL_FILE)), run, state


def load_optimizer_state(directory: Path) -> dict[str, Any] | None:
    path = Path(directory) / OPTIMIZER_FILE
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def epoch_directory(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"epoch-{epoch:04d}"


def latest_epoch_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete epoch checkpoint; unfinished `.tmp` leftovers of a killed run are removed."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    for leftover in root.glob(f"*{TMP_SUFFIX}"):
        shutil.rmtree(leftover, ignore_errors=True)
    complete = sorted(d for d in root.glob("epoch-*") if d.is_dir() and is_complete(d))
    return complete[-1] if complete else None


def prune_epoch_checkpoints(run_dir: Path, keep: int) -> None:
    root = Path(run_dir) / "checkpoints"
    complete = sorted(d for d in root.glob("epoch-*") if d.is_dir() and not d.name.endswith(TMP_SUFFIX))
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(path: Path) -> Path:
    """Accept a run directory (uses its best checkpoint) or a checkpoint directory itself."""
    path = Path(path)
    if is_complete(path):
        return path
    recover_directory(path / "best")
    if is_complete(path / "best"):
        return path / "best"
    raise FileNotFoundError(f"{path} is neither a checkpoint nor a run directory with a best/ checkpoint")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
