"""A training run's folder: who may write it, what a resume may change, and how it stays consistent.

- The folder must be new, empty or an earlier run folder (mitp.files.outputs), and is locked (flock on
  `.lock`) while a process trains in it: a second trainer gets a clear error, not a race.
- The newest readable epoch checkpoint is the run's truth. On every start `best/`, `history.json` and
  `result.json` are made to agree with it, so a kill between any two of the writes of an epoch
  (checkpoint, best/, history, pruning) is repaired by the rerun.
- A resume refuses only if a value that changes results differs, and names those keys; runtime-only
  values (loader workers, evaluation batch size, checkpoints kept) may change.
- `config.json` is written with the first checkpoint, so a start that fails leaves nothing that blocks
  the corrected rerun.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..config import ConfigError, RunConfig
from ..errors import MitpError
from ..files.atomic import atomic_write_json, atomic_write_text, build_directory, repair_directory
from ..files.outputs import claim, mark
from . import checkpoint as ckpt

RESULT_FILE, HISTORY_FILE, LOCK_FILE = "result.json", "history.json", ".lock"
RUNTIME_ONLY_KEYS = ("train.num_workers", "train.eval_batch_size", "train.keep_checkpoints", "train.log_with")


class RunLocked(MitpError, RuntimeError):
    """Another process trains in this run folder."""


@contextmanager
def locked_run_folder(run_dir: Path, main: bool = True) -> Iterator[Path]:
    """Claim `run_dir` for `mitp train` and hold its lock for the block (the main process of a
    distributed run does both; the others only read)."""
    run_dir = Path(run_dir)
    if not main:
        yield run_dir
        return
    claim(run_dir, "run")
    run_dir.mkdir(parents=True, exist_ok=True)
    mark(run_dir, "run")
    handle = open(run_dir / LOCK_FILE, "a+")  # noqa: SIM115 (held for the whole block)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunLocked(f"{run_dir} is in use: {holder} is training in it; wait for it or pick another --out") from None
        except OSError:
            pass  # a file system without locks (some network mounts): train unlocked rather than not at all
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        yield run_dir
    finally:
        handle.close()  # releases the lock


def resume_point(
    run_dir: Path, run: RunConfig, warn: Callable[[str], object], fingerprint: str | None = None
) -> ckpt.EpochCheckpoint | None:
    """The newest readable checkpoint, after checking that it was made by the same config on the same
    prepared data (`fingerprint`); None for a fresh run."""
    found = ckpt.latest_good_checkpoint(run_dir, warn)
    if found is None:
        return None
    differing = config_differences(found.run, run)
    if differing:
        raise ConfigError(
            f"{run_dir} holds a run whose {', '.join(differing)} differ{'s' if len(differing) == 1 else ''} from this "
            f"command's (it would change the results); use the same values to resume, or pick another --out"
        )
    saved = found.state.get("data_fingerprint")
    if saved is not None and fingerprint is not None and saved != fingerprint:
        raise ConfigError(
            f"{run_dir} was trained on other prepared data than {run.dataset.data_dir} holds now (it was prepared again "
            f"since): resuming would mix two training and validation sets; prepare the data it began with, or pick another --out"
        )
    return found


def config_differences(saved: RunConfig, new: RunConfig) -> list[str]:
    """Dotted keys whose values differ and change results (runtime-only keys are ignored)."""
    old_flat, new_flat = _flatten(saved.to_dict()), _flatten(new.to_dict())
    keys = sorted(set(old_flat) | set(new_flat))
    return [k for k in keys if old_flat.get(k) != new_flat.get(k) and k not in RUNTIME_ONLY_KEYS]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def repair(run_dir: Path, state: dict[str, Any] | None, epochs: int) -> None:
    """Make best/, history.json and result.json agree with the newest checkpoint's `state` (None: no
    checkpoint yet, so nothing derived may exist)."""
    run_dir = Path(run_dir)
    repair_directory(run_dir / "best")
    ckpt.clear_leftovers(run_dir)
    if state is None:
        if (run_dir / "best").exists() or (run_dir / RESULT_FILE).exists():
            raise ConfigError(f"{run_dir} holds a trained model but no epoch checkpoint to resume from: pick another --out")
        (run_dir / HISTORY_FILE).unlink(missing_ok=True)
        return
    best_epoch = ckpt.epoch_directory(run_dir, state["best_epoch"])
    if _best_epoch_of(run_dir) != state["best_epoch"]:
        if not ckpt.is_complete(best_epoch):  # best/ lost, and the epoch it copied already pruned
            raise ckpt.CheckpointMissing(
                f"{run_dir / 'best'} is missing or from another epoch, and epoch {state['best_epoch']}'s checkpoint, its "
                f"source, was pruned: the run's best model is lost; train again with another --out"
            )
        copy_to_best(run_dir, best_epoch)
    if _read(run_dir / HISTORY_FILE) != state["history"]:
        atomic_write_json(run_dir / HISTORY_FILE, state["history"])
    if state["epoch"] < epochs:
        (run_dir / RESULT_FILE).unlink(missing_ok=True)  # describes another state of the run


def _best_epoch_of(run_dir: Path) -> int | None:
    value = _read(run_dir / "best" / ckpt.STATE_FILE)
    return value.get("epoch") if isinstance(value, dict) else None


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def copy_to_best(run_dir: Path, epoch_dir: Path) -> None:
    with build_directory(Path(run_dir) / "best") as staging:
        for name in (ckpt.MODEL_FILE, ckpt.CONFIG_FILE, ckpt.STATE_FILE):
            shutil.copy2(epoch_dir / name, staging / name)


def save_epoch(run_dir: Path, run: RunConfig, trainable: dict, optimizer_state: dict, state: dict, improved: bool) -> None:
    """Write one epoch: the checkpoint first (the commit point), then what derives from it."""
    run_dir = Path(run_dir)
    if not (run_dir / ckpt.CONFIG_FILE).is_file():
        atomic_write_text(run_dir / ckpt.CONFIG_FILE, run.to_json() + "\n")
    directory = ckpt.save_checkpoint(ckpt.epoch_directory(run_dir, state["epoch"]), trainable, run, state, optimizer_state)
    if improved:
        copy_to_best(run_dir, directory)
    atomic_write_json(run_dir / HISTORY_FILE, state["history"])
    ckpt.prune_epoch_checkpoints(run_dir, max(run.train.keep_checkpoints, 1))
