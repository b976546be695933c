"""Checkpoints: only the trained parameters (safetensors) plus the resolved config, written crash-safe.

A run directory looks like

    run/.mitp-output                    marker: a run folder written by `mitp train`
    run/.lock                           held (flock) while a process trains here
    run/config.json                     the resolved RunConfig, written with the first checkpoint
    run/checkpoints/epoch-0003/         model.safetensors, optimizer.pt, state.json, config.json
    run/best/                           model.safetensors, state.json, config.json (best validation epoch)
    run/history.json                    per-epoch metrics
    run/result.json                     written last, when every epoch is done

The newest epoch checkpoint is the run's truth: `best/`, `history.json` and `result.json` are derived
from its state and repaired from it on the next start if a kill fell between their writes. Every
checkpoint folder is built under a temporary name and swapped in whole (mitp.files.atomic).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config import ConfigError, RunConfig
from ..errors import MitpError
from ..files.atomic import FOLDER_TMP_SUFFIX, build_directory, repair_directory

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"


class CheckpointMissing(MitpError, FileNotFoundError):
    """No complete checkpoint where one was named."""


class CheckpointError(MitpError, ValueError):
    """A checkpoint file is missing, truncated or corrupt; the message names the file."""


def save_checkpoint(
    directory: Path,
    trainable: dict[str, torch.Tensor],
    run: RunConfig,
    state: dict[str, Any],
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint folder at `directory` (built aside, swapped in whole)."""
    directory = Path(directory)
    with build_directory(directory) as tmp:
        save_file(trainable, str(tmp / MODEL_FILE), metadata={"format": "pt", "mitp": "trainable-only"})
        if optimizer_state is not None:
            torch.save(optimizer_state, tmp / OPTIMIZER_FILE)
        (tmp / CONFIG_FILE).write_text(run.to_json() + "\n")
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    return directory


def is_complete(directory: Path) -> bool:
    return (directory / STATE_FILE).is_file() and (directory / MODEL_FILE).is_file()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is unreadable ({err}): the checkpoint is damaged") from err


def load_checkpoint(directory: Path) -> tuple[dict[str, torch.Tensor], RunConfig, dict[str, Any]]:
    """Trainable tensors, the run config and the trainer state of a checkpoint directory."""
    directory = Path(directory)
    if not is_complete(directory):
        raise CheckpointMissing(f"no complete checkpoint in {directory} (expected {MODEL_FILE} and {STATE_FILE})")
    try:
        run = RunConfig.from_dict(_read_json(directory / CONFIG_FILE))
    except (ConfigError, KeyError, TypeError) as err:
        raise CheckpointError(f"{directory / CONFIG_FILE} does not hold a run config ({err}): the checkpoint is damaged") from err
    state = _read_json(directory / STATE_FILE)
    problem = state_problem(state, run.epochs)
    if problem:
        raise CheckpointError(f"{directory / STATE_FILE} {problem}: the checkpoint is damaged")
    try:
        tensors = load_file(str(directory / MODEL_FILE))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{directory / MODEL_FILE} is unreadable ({err}): the checkpoint is damaged") from err
    return tensors, run, state


def state_problem(state: Any, epochs: int) -> str | None:
    """Why a trainer state cannot be the state of a run of `epochs` epochs (None if it can): its epoch
    and best epoch must be whole numbers within the run, the best no later than the epoch."""
    if not isinstance(state, dict):
        return "holds no trainer state"
    epoch, best = state.get("epoch"), state.get("best_epoch", 0)
    if not isinstance(epoch, int) or not isinstance(best, int) or isinstance(epoch, bool) or isinstance(best, bool):
        return "holds no whole epoch numbers"
    if not 1 <= epoch <= epochs or not 1 <= best <= epoch:
        return f"says epoch {epoch}, best epoch {best}, which a run of {epochs} epochs cannot have"
    return None


def load_optimizer_state(directory: Path) -> dict[str, Any] | None:
    path = Path(directory) / OPTIMIZER_FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises RuntimeError, EOFError, UnpicklingError... on damaged files
        raise CheckpointError(f"{path} is unreadable ({type(err).__name__}: {err}): the checkpoint is damaged") from err


def epoch_directory(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"epoch-{epoch:04d}"


def epoch_checkpoints(run_dir: Path) -> list[Path]:
    """Complete epoch checkpoints, oldest first (half-built ones live under hidden temporary names)."""
    root = Path(run_dir) / "checkpoints"
    return sorted(d for d in root.glob("epoch-*") if d.is_dir() and is_complete(d)) if root.is_dir() else []


def clear_leftovers(run_dir: Path) -> None:
    """Remove the temporary folders of checkpoint saves that a kill interrupted."""
    for leftover in (Path(run_dir) / "checkpoints").glob(f".*{FOLDER_TMP_SUFFIX}"):
        shutil.rmtree(leftover, ignore_errors=True)


@dataclass(frozen=True)
class EpochCheckpoint:
    """An epoch checkpoint read back whole: what a run resumes from."""

    directory: Path
    tensors: dict[str, Any]  # the trainable tensors, by parameter name
    run: RunConfig  # the config it was trained with
    state: dict[str, Any]  # the training state (TrainState.to_dict)
    optimizer: dict[str, Any] | None  # the optimizer's state, where it was saved


def latest_good_checkpoint(run_dir: Path, warn: Callable[[str], object] = print) -> EpochCheckpoint | None:
    """The newest epoch checkpoint that reads back whole; a damaged newer one is reported through `warn`
    and skipped. None if there is none; a CheckpointError (naming the damaged file) if every checkpoint
    is damaged."""
    checkpoints = epoch_checkpoints(run_dir)
    first_error = None
    for directory in reversed(checkpoints):
        try:
            tensors, run, state = load_checkpoint(directory)
            optimizer = load_optimizer_state(directory)
        except CheckpointError as err:
            first_error = first_error or err
            warn(f"{err}; trying the epoch before it")
            continue
        return EpochCheckpoint(directory, tensors, run, state, optimizer)
    if first_error is not None:
        raise CheckpointError(f"{first_error}, and no earlier epoch checkpoint is readable: remove {run_dir} to train afresh")
    return None


def prune_epoch_checkpoints(run_dir: Path, keep: int) -> None:
    for old in epoch_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(path: Path) -> Path:
    """Accept a run directory (uses its best checkpoint) or a checkpoint directory itself."""
    path = Path(path)
    if is_complete(path):
        return path
    repair_directory(path / "best")
    if is_complete(path / "best"):
        return path / "best"
    raise CheckpointMissing(f"{path} is neither a checkpoint nor a run directory with a best/ checkpoint")
