"""Evaluate a trained checkpoint on one split and write `metrics.json` atomically.

For a run with a memory hub the same checkpoint is evaluated a second time with every gate frozen at its
training mean: the difference is what the memory strategy contributes per sample (docs/readings.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from .. import __version__
from ..config import RunConfig
from ..data.dataset import DataError, build_split, collate_pairs, data_fingerprint
from ..files.atomic import atomic_write_json
from ..files.outputs import OutputError
from ..report.intervals import per_sample_decisions
from ..report.metrics import PRIMARY_METRIC, classification_metrics
from ..runtime.tokenizer import ClipTokenizer
from .engine import has_gates, make_accelerator, memory_ablation, predict_loader, worker_count
from .factory import image_size, load_trained
from .provenance import environment_record


def evaluate_checkpoint(checkpoint: str | Path, split: str = "test", batch_size: int | None = None, num_workers: int | None = None) -> dict[str, Any]:
    """Metrics of a checkpoint on a split, with counts, the split, the checkpoint and its config."""
    model, run, backbone, state = load_trained(checkpoint)
    accelerator = make_accelerator(run.train.precision)
    model = accelerator.prepare(model)
    return evaluate_model(model, run, backbone.tokenizer, image_size(backbone), state, accelerator, split, batch_size, num_workers)


def evaluate_model(
    model, run: RunConfig, tokenizer: ClipTokenizer, size: int, state: dict[str, Any], accelerator: Accelerator, split: str = "test",
    batch_size: int | None = None, num_workers: int | None = None,
) -> dict[str, Any]:
    """Metrics of `model` (prepared by `accelerator`, holding the trained weights of checkpoint `state`) on a
    split: what `evaluate_checkpoint` computes, shared with `mitp train --evaluate`, which evaluates the best
    checkpoint in the process that trained it instead of loading the backbone again in a new one."""
    dataset = build_split(run, split, tokenizer, size)
    if dataset.classes != state["classes"]:
        raise DataError(f"the {split} split's classes differ from the ones the checkpoint was trained on")
    loader = DataLoader(
        dataset,
        batch_size=batch_size or run.train.eval_batch_size,
        num_workers=worker_count(run.train.num_workers if num_workers is None else num_workers),
        pin_memory=torch.cuda.is_available(),
        collate_fn=collate_pairs,
    )
    loader = accelerator.prepare(loader)
    core = accelerator.unwrap_model(model)
    logits, labels = predict_loader(model, loader, accelerator)
    metrics = classification_metrics(run.dataset.task, logits, labels)
    ablation = None
    if has_gates(core) and state.get("gate_means"):
        ablation = memory_ablation(model, loader, accelerator, run.dataset.task, state["gate_means"], logits, labels, metrics)
    return {
        "dataset": run.dataset_name,
        "setting": run.setting_name,
        "split": split,
        "task": run.dataset.task,
        "primary_metric": PRIMARY_METRIC[run.dataset.task],
        "metrics": metrics,
        "checkpoint": state["checkpoint"],
        "epoch": state["epoch"],
        "memory_ablation": ablation,  # None without a memory hub
        "per_sample": per_sample_decisions(run.dataset.task, logits, labels),  # for the report's intervals
        "reading": run.model.reading(),
        "trainable_params": core.count_trainable(),
        "device": str(accelerator.device) + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else ""),
        "mitp_version": __version__,
        "environment": environment_record(run, core.clip, accelerator.mixed_precision, data_fingerprint(run)),
        "trained_on_data": state.get("data_fingerprint"),  # the run's; differs from environment.data when re-prepared since
        "config": run.to_dict(),
    }


def check_metrics_target(path: Path, given_as: str = "--out", instead: str = "name another file") -> None:
    """The metrics file may be new or an earlier metrics file of mitp's, nothing else (checked before any
    work). `given_as` and `instead` say in the message how the user named it and what to do."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{given_as} {path} is a folder: {instead}")
    if path.exists():
        try:
            earlier = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            earlier = None
        if not (isinstance(earlier, dict) and "mitp_version" in earlier and "metrics" in earlier):
            raise OutputError(f"{given_as} {path} exists and is not a metrics file written by mitp evaluate; it is left as it is: {instead}")


def metrics_line(metrics: dict[str, Any]) -> str:
    """The metrics of an evaluation in a few words (accuracy, or the F1 scores) with the number of samples."""
    values = metrics["metrics"]
    shown = ", ".join(f"{k} {values[k]:.4f}" for k in ("accuracy", "f1_micro", "f1_macro") if k in values)
    return f"{shown} (n={values['num_samples']})"


def ablation_line(ablation: dict[str, Any]) -> str:
    """What the memory strategy contributed (docs/readings.md), in one line."""
    return (
        f"memory strategy: {ablation['metric']} {ablation['live']:.4f} with the gates, {ablation['frozen_gates']:.4f} with "
        f"them frozen at their training means (contribution {ablation['contribution']:+.4f}; "
        f"{100 * ablation['predictions_unchanged']:.1f}% of decisions unchanged)"
    )


def write_metrics(metrics: dict[str, Any], path: str | Path) -> None:
    atomic_write_json(Path(path), metrics)
