"""Finished runs as records: result.json merged with its test metrics and history, and their scores.

A record is one run folder `<runs>/<dataset>/<run>/seed<n>/`; the tables (mitp.report.tables) and the
figures (mitp.report.figures) read nothing else."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def paper_column(dataset: str) -> str:
    return dataset.removeprefix("demo-")

RESULT_KEYS = ("dataset", "seed", "trainable_params", "backbone_params", "epochs", "train_seconds", "peak_memory_gib", "metric", "fraction")

def collect_runs(runs: Path, warn: Callable[[str], object] = print) -> tuple[list[dict[str, Any]], list[str]]:
    """One record per finished run (result.json merged with its test metrics and history), and the
    folders of runs whose files could not be read: those are reported, and the report is still written."""
    records, unreadable = [], []
    for result_path in sorted(Path(runs).glob("*/*/seed*/result.json")):
        folder = result_path.parent
        try:
            record = read_json(result_path, dict)
            missing = [key for key in RESULT_KEYS if key not in record]
            if missing:
                raise ValueError(f"{result_path} lacks {', '.join(missing)}")
            record["run"] = folder.parent.name  # the run's folder: its setting, or the setting and its fraction
            record.setdefault("setting", record["run"])  # recorded since the first release; a folder name before
            metrics_path = folder / "metrics-test.json"
            metrics = read_json(metrics_path, dict) if metrics_path.is_file() else None
            record["test"] = metrics["metrics"] if metrics else None
            record["ablation"] = metrics.get("memory_ablation") if metrics else None
            record["per_sample"] = metrics.get("per_sample") if metrics else None
            history_path = folder / "history.json"
            record["history"] = read_json(history_path, list) if history_path.is_file() else []
        except (OSError, ValueError, KeyError, TypeError) as err:
            warn(f"run {folder} is unreadable and shown as such: {err}")
            unreadable.append(str(folder))
            continue
        records.append(record)
    return records, unreadable

def read_json(path: Path, kind: type) -> Any:
    try:
        value = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(value, kind):
        raise ValueError(f"{path} does not hold a JSON {kind.__name__}")
    return value

def score_of(record: dict[str, Any]) -> tuple[float, ...] | None:
    """Test score(s) in percent: (accuracy,) or (F1-micro, F1-macro)."""
    test = record.get("test")
    if not test:
        return None
    if "accuracy" in test:
        return (100 * test["accuracy"],)
    return (100 * test["f1_micro"], 100 * test["f1_macro"])

def primary_score(record: dict[str, Any]) -> float | None:
    """The first test score (accuracy, or F1-micro) in percent; None before evaluation."""
    score = score_of(record)
    return None if score is None else score[0]

def grid_point(run: str) -> tuple[str, str] | None:
    """("4-5-6", "cov-pearson") for a grid setting named like l4-5-6-cov-pearson; None for other runs."""
    for similarity in ("cov-pearson", "mmd", "cos"):
        if run.startswith("l") and run[1:2].isdigit() and run.endswith(f"-{similarity}"):
            return run[1 : -len(similarity) - 1], similarity
    return None
