"""Finished runs as typed records: result.json merged with its test metrics and history.

A record is one run folder `<runs>/<dataset>/<run>/seed<n>/`; the tables (mitp.report.tables) and the
figures (mitp.report.figures) read nothing else. What a run is (its setting, head, reading, layers,
similarity, fraction) comes from what the run recorded, never from its folder's name."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.models import grid_setting

RESULT_KEYS = ("dataset", "seed", "trainable_params", "backbone_params", "epochs", "train_seconds", "peak_memory_gib", "metric", "fraction")


def paper_column(dataset: str) -> str:
    """The paper's column of a data set: a demo twin `demo-<x>` sits in `<x>`'s."""
    return dataset.removeprefix("demo-")


@dataclass(frozen=True)
class RunRecord:
    """One finished seed of one setting on one data set, as its files recorded it."""

    dataset: str
    setting: str  # the config's setting (recorded since the first release; the folder's name before)
    run: str  # the folder under its data set: the setting, or the setting and its data fraction
    seed: int
    fraction: float  # share of the training split the run trained on
    metric: str  # the validation metric that chose the best epoch: accuracy or f1_micro
    trainable_params: int
    backbone_params: int
    epochs: int
    train_seconds: float
    peak_memory_gib: float
    peak_memory_kind: str = ""
    device: str = ""
    variant: str | None = None
    head: str = "image"  # runs from before heads were recorded read the image embedding
    reading: dict[str, Any] | None = None  # the exchange, map, gate, scale, similarity and head it was read with
    layers: tuple[int, ...] = ()
    similarity: str | None = None
    gates: dict[str, Any] | None = None  # the best epoch's gate statistics (memory hub runs)
    low_spread_gates: tuple[str, ...] = ()
    test: dict[str, float] | None = None  # test metrics; None before evaluation
    ablation: dict[str, float] | None = None  # the memory strategy's contribution (frozen gates), when measured
    per_sample: Any = None  # per-sample test decisions, for bootstrap intervals and paired comparisons
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def score(self) -> tuple[float, ...] | None:
        """Test score(s) in percent: (accuracy,) or (F1-micro, F1-macro); None before evaluation."""
        if not self.test:
            return None
        if "accuracy" in self.test:
            return (100 * self.test["accuracy"],)
        return (100 * self.test["f1_micro"], 100 * self.test["f1_macro"])

    @property
    def primary_score(self) -> float | None:
        """The first test score (accuracy, or F1-micro) in percent."""
        return None if self.score is None else self.score[0]

    @property
    def memory_contribution(self) -> float | None:
        """Points the live gates add over gates frozen at their training mean (docs/readings.md)."""
        return None if not self.ablation else 100 * self.ablation["contribution"]

    @property
    def task(self) -> str:
        return "multi-label" if self.metric == "f1_micro" else "single-label"

    @property
    def full_data(self) -> bool:
        return math.isclose(self.fraction, 1.0)

    @property
    def grid_point(self) -> tuple[tuple[int, ...], str] | None:
        """(layers, similarity) when this run is the Fig. 4 grid's setting for its recorded layers and
        similarity (config.models.grid_setting), at full data; None for every other run."""
        if not self.layers or self.similarity is None or not self.full_data:
            return None
        return (self.layers, self.similarity) if self.setting == grid_setting(self.layers, self.similarity) else None

    def model_apart_from_head(self) -> tuple[Any, ...]:
        """What the run trained, all but how its logits are read: runs equal here differ only in head."""
        reading = {k: v for k, v in (self.reading or {}).items() if k != "head"}
        return (self.dataset, self.fraction, self.variant, self.layers, self.similarity, json.dumps(reading, sort_keys=True))


def collect_runs(runs: Path, warn: Callable[[str], object] = print) -> tuple[list[RunRecord], list[str]]:
    """One record per finished run, and the folders of runs whose files could not be read: those are
    reported, and the report is still written."""
    records, unreadable = [], []
    for result_path in sorted(Path(runs).glob("*/*/seed*/result.json")):
        folder = result_path.parent
        try:
            records.append(read_record(folder))
        except (OSError, ValueError, KeyError, TypeError) as err:
            warn(f"run {folder} is unreadable and shown as such: {err}")
            unreadable.append(str(folder))
    return records, unreadable


def read_record(folder: Path) -> RunRecord:
    """The record of one run folder: result.json, metrics-test.json (when evaluated), history.json."""
    result_path = folder / "result.json"
    result = read_json(result_path, dict)
    missing = [key for key in RESULT_KEYS if key not in result]
    if missing:
        raise ValueError(f"{result_path} lacks {', '.join(missing)}")
    metrics_path, history_path = folder / "metrics-test.json", folder / "history.json"
    metrics = read_json(metrics_path, dict) if metrics_path.is_file() else None
    optional = {key: result[key] for key in ("peak_memory_kind", "device", "variant", "head", "reading", "similarity", "gates") if key in result}
    return RunRecord(
        dataset=str(result["dataset"]),
        setting=str(result.get("setting", folder.parent.name)),
        run=folder.parent.name,
        seed=int(result["seed"]),
        fraction=float(result["fraction"]),
        metric=str(result["metric"]),
        trainable_params=int(result["trainable_params"]),
        backbone_params=int(result["backbone_params"]),
        epochs=int(result["epochs"]),
        train_seconds=float(result["train_seconds"]),
        peak_memory_gib=float(result["peak_memory_gib"]),
        layers=tuple(int(n) for n in result.get("layers") or ()),
        low_spread_gates=tuple(result.get("low_spread_gates") or ()),
        test=metrics["metrics"] if metrics else None,
        ablation=metrics.get("memory_ablation") if metrics else None,
        per_sample=metrics.get("per_sample") if metrics else None,
        history=read_json(history_path, list) if history_path.is_file() else [],
        **optional,
    )


def read_json(path: Path, kind: type) -> Any:
    try:
        value = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(value, kind):
        raise ValueError(f"{path} does not hold a JSON {kind.__name__}")
    return value


def seeds_of(records: list[RunRecord], dataset: str, setting: str, fraction: float = 1.0) -> list[RunRecord]:
    """The seeds of one setting on one data set, trained on `fraction` of the training split (as recorded)."""
    return [r for r in records if r.dataset == dataset and r.setting == setting and math.isclose(r.fraction, fraction)]
