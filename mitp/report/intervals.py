"""95% intervals for the report: over seeds (Student's t), over the test set (percentile bootstrap) when a
cell has one seed, and paired bootstrap comparisons of two runs on the same test pairs.

Scores are in percent and follow the report's components: (accuracy,) for single-label data sets and
(F1-micro, F1-macro) for multi-label ones. A run's per-sample decisions come from its metrics file
(`per_sample`, written by `mitp evaluate`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..runtime.decision import MULTILABEL_THRESHOLD, multilabel_decisions
from .metrics import multilabel_f1

LEVEL = 0.95
RESAMPLES = 1000
# Two-sided 95% critical values of Student's t by degrees of freedom (seeds - 1); 1.96 beyond 30.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    kind: str  # "seeds" (t over seeds) or "bootstrap" (over the test set)

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high


def t_critical(df: int) -> float:
    """The 97.5% quantile of t with `df` degrees of freedom (the nearest tabulated df at or below)."""
    if df > 30:
        return 1.960
    return T95[max(k for k in T95 if k <= df)]


def seed_interval(values: list[float]) -> Interval | None:
    """mean ± t * sd / sqrt(n) over seeds; None for fewer than two."""
    if len(values) < 2:
        return None
    mean, half = statistics.fmean(values), t_critical(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, "seeds")


class Decisions:
    """One run's per-sample decisions on a test split, scored on any resample of its indices."""

    def __init__(self, task: str, per_sample: dict[str, Any]):
        self.task = task
        if task == "multi-label":
            self.predicted = _multi_hot(per_sample["predicted"], per_sample["num_classes"])  # (N, K) bool
            self.truth = _multi_hot(per_sample["labels"], per_sample["num_classes"])
        else:
            self.correct = np.asarray(per_sample["predicted"]) == np.asarray(per_sample["labels"])  # (N,) bool
        self.size = len(per_sample["labels"])

    def score(self, index: np.ndarray | None = None) -> tuple[float, ...]:
        """The report's components in percent, on `index` (a resample; None = every sample)."""
        if self.task == "multi-label":
            predicted, truth = (self.predicted, self.truth) if index is None else (self.predicted[index], self.truth[index])
            f1 = multilabel_f1(predicted, truth)
            return 100 * f1["f1_micro"], 100 * f1["f1_macro"]
        correct = self.correct if index is None else self.correct[index]
        return (100 * float(correct.mean()),)


def bootstrap_interval(decisions: Decisions, resamples: int = RESAMPLES, seed: int = 0) -> list[Interval]:
    """A percentile bootstrap interval per component, resampling the test pairs with replacement."""
    rng = np.random.default_rng(seed)
    draws = np.array([decisions.score(rng.integers(0, decisions.size, decisions.size)) for _ in range(resamples)])  # (R, C)
    whole = decisions.score()
    low, high = np.percentile(draws, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2], axis=0)
    return [Interval(whole[c], float(low[c]), float(high[c]), "bootstrap") for c in range(len(whole))]


@dataclass(frozen=True)
class Comparison:
    difference: float  # a - b, first component, in points, averaged over the seeds both have
    low: float
    high: float
    p_value: float  # one-sided: the share of resamples where a does not beat b
    seeds: int


def paired_bootstrap(a: list[Decisions], b: list[Decisions], resamples: int = RESAMPLES, seed: int = 0) -> Comparison:
    """Does a beat b on the same test pairs? For each resample of the test indices (the same for a and b,
    and for every seed), the mean over seeds of a's score minus b's (first component)."""
    if not a or len(a) != len(b) or any(x.size != y.size for x, y in zip(a, b, strict=True)):
        raise ValueError("paired runs need the same seeds and the same test pairs")
    rng = np.random.default_rng(seed)
    size = a[0].size
    whole = statistics.fmean(x.score()[0] - y.score()[0] for x, y in zip(a, b, strict=True))
    draws = []
    for _ in range(resamples):
        index = rng.integers(0, size, size)
        draws.append(statistics.fmean(x.score(index)[0] - y.score(index)[0] for x, y in zip(a, b, strict=True)))
    low, high = np.percentile(draws, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return Comparison(whole, float(low), float(high), float(np.mean(np.asarray(draws) <= 0)), len(a))


def per_sample_decisions(task: str, logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """What `mitp evaluate` keeps of each test pair for the intervals: the predicted class and the label, or
    the predicted and true label sets (class indices), decided by the bundle's rule as the metrics are."""
    if task == "multi-label":
        predicted = multilabel_decisions(logits, MULTILABEL_THRESHOLD)  # (N, K) bool
        return {"num_classes": int(logits.shape[1]), "predicted": [np.flatnonzero(row).tolist() for row in predicted], "labels": [np.flatnonzero(row > 0.5).tolist() for row in labels]}
    return {"num_classes": int(logits.shape[1]), "predicted": logits.argmax(axis=1).tolist(), "labels": np.asarray(labels).astype(int).tolist()}


def _multi_hot(rows: list[list[int]], num_classes: int) -> np.ndarray:
    out = np.zeros((len(rows), num_classes), dtype=bool)
    for i, row in enumerate(rows):
        out[i, row] = True
    return out
