"""What training and evaluation share: the accelerator, the loaders' worker count, a pass over a loader,
and the memory hub's gates (observed during training, frozen for the memory-strategy ablation)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration
from torch.utils.data import DataLoader

from ..config import ConfigError
from ..data.dataset import pixel_values
from ..model.base import PromptedCLIP
from ..model.hub import GateStatistics
from ..report.metrics import PRIMARY_METRIC, classification_metrics
from ..runtime.decision import multilabel_decisions

# A gate whose per-sample spread (standard deviation over samples, averaged over its elements) stays below
# this is flagged: it acts as a constant, and the memory strategy cannot be doing per-sample work there.
GATE_SPREAD_FLOOR = 0.02


def worker_count(requested: int) -> int:
    """DataLoader workers: as configured, but no more than this machine has cores."""
    return min(requested, os.cpu_count() or 1)


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def make_accelerator(precision: str, log_with: tuple[str, ...] = (), logging_dir: Path | None = None) -> Accelerator:
    """bf16 autocast on a GPU (precision auto or bf16), fp32 on a CPU; `log_with` trackers write under
    `logging_dir` (TensorBoard's event files; wandb and mlflow their own way)."""
    cuda = torch.cuda.is_available()
    if precision == "bf16" and not cuda:
        raise ConfigError("train.precision: bf16 needs a GPU here; use auto or fp32 on CPU")
    missing = [name for name in log_with if importlib.util.find_spec(TRACKER_PACKAGES[name]) is None]
    if missing:
        raise ConfigError(f"train.log_with: {', '.join(missing)} is not installed here: python -m pip install {' '.join(TRACKER_PACKAGES[m] for m in missing)}")
    mixed = "bf16" if (precision == "bf16" or (precision == "auto" and cuda)) else "no"
    project = ProjectConfiguration(project_dir=str(logging_dir), logging_dir=str(logging_dir)) if log_with and logging_dir else None
    return Accelerator(
        mixed_precision=mixed,
        cpu=not cuda,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        log_with=list(log_with) or None,
        project_config=project,
    )


@torch.no_grad()
def predict_loader(model, loader: DataLoader, accelerator: Accelerator) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, K) and labels of a whole loader, gathered from every process."""
    model.eval()
    all_logits, all_labels = [], []
    for batch in loader:
        with accelerator.autocast():
            logits = model(pixel_values(batch), batch["input_ids"], batch["attention_mask"])
        logits, labels = accelerator.gather_for_metrics((logits.float(), batch["labels"]))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    return torch.cat(all_logits).numpy(), torch.cat(all_labels).numpy()


def evaluate_loader(model, loader: DataLoader, accelerator: Accelerator, task: str) -> dict[str, Any]:
    """Metrics over a whole loader."""
    return classification_metrics(task, *predict_loader(model, loader, accelerator))


def has_gates(model: PromptedCLIP) -> bool:
    return model.exchange is not None and model.exchange.has_gates


@contextmanager
def gates_observed(model: PromptedCLIP) -> Iterator[GateStatistics | None]:
    """Collect the memory hub's gate statistics while the block runs (None for a run without a memory
    hub); the hub stops reporting when the block ends, however it ends."""
    exchange = model.exchange
    if exchange is None or not exchange.has_gates:
        yield None
        return
    exchange.observer = GateStatistics()
    try:
        yield exchange.observer
    finally:
        exchange.observer = None


def low_spread_gates(summary: dict[str, dict[str, float]]) -> list[str]:
    """The gates (`<layer>.<modality>.<z|r>`) whose per-sample spread is below GATE_SPREAD_FLOOR."""
    return [
        f"{where}.{gate}" for where, row in summary.items() for gate in ("z", "r")
        if row.get(f"{gate}_spread", 1.0) < GATE_SPREAD_FLOOR
    ]


def memory_ablation(
    model, loader: DataLoader, accelerator: Accelerator, task: str, gate_means: dict[str, list], logits: np.ndarray, labels: np.ndarray,
    live: dict[str, Any],
) -> dict[str, Any]:
    """The memory strategy's contribution: the same checkpoint with every gate frozen at its training mean,
    against its live `logits` and metrics `live` on the same loader. Returns the primary metric both ways,
    their difference and the share of samples whose decision stays the same."""
    hub = accelerator.unwrap_model(model).exchange
    hub.freeze_gates(gate_means)
    try:
        frozen_logits, _ = predict_loader(model, loader, accelerator)
    finally:
        hub.freeze_gates(None)
    if task == "multi-label":
        same = (multilabel_decisions(logits) == multilabel_decisions(frozen_logits)).all(axis=1)
    else:
        same = logits.argmax(1) == frozen_logits.argmax(1)
    metric = PRIMARY_METRIC[task]
    frozen = classification_metrics(task, frozen_logits, labels)
    return {
        "metric": metric,
        "live": live[metric],
        "frozen_gates": frozen[metric],
        "contribution": live[metric] - frozen[metric],
        "predictions_unchanged": float(same.mean()),
        "frozen_metrics": frozen,
    }
