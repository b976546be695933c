"""Classification metrics: accuracy (single-label), F1-micro and F1-macro (multi-label), deciding labels
by the bundle's own rule (`sigmoid(logit) >= 0.5`, mitp.runtime.decision), so that the scores measure
what `mitp predict` would answer."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..runtime.decision import MULTILABEL_THRESHOLD, multilabel_decisions

PRIMARY_METRIC = {"single-label": "accuracy", "multi-label": "f1_micro"}


def classification_metrics(task: str, logits: np.ndarray, labels: np.ndarray, threshold: float = MULTILABEL_THRESHOLD) -> dict[str, Any]:
    """Metrics with the counts behind them. `logits` (N, K); `labels` (N,) ints or (N, K) multi-hot."""
    if len(logits) == 0:
        raise ValueError("no samples to evaluate")
    if task == "multi-label":
        return multilabel_f1(multilabel_decisions(logits, threshold), labels > 0.5)
    predicted = logits.argmax(axis=1)
    correct = int((predicted == labels).sum())
    return {"accuracy": correct / len(labels), "correct": correct, "num_samples": int(len(labels))}


def multilabel_f1(predicted: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Micro F1 pools all (sample, class) decisions; macro F1 averages per-class F1, a class with no
    positives and no predictions scoring 0 (as scikit-learn's default)."""
    tp = (predicted & truth).sum(axis=0)  # (K,)
    fp = (predicted & ~truth).sum(axis=0)
    fn = (~predicted & truth).sum(axis=0)
    micro_den = 2 * tp.sum() + fp.sum() + fn.sum()
    f1_micro = float(2 * tp.sum() / micro_den) if micro_den else 0.0
    per_class_den = 2 * tp + fp + fn
    per_class = np.divide(2 * tp, per_class_den, out=np.zeros(len(tp), dtype=float), where=per_class_den > 0)
    return {
        "f1_micro": f1_micro,
        "f1_macro": float(per_class.mean()),
        "num_samples": int(len(truth)),
        "true_positives": int(tp.sum()),
        "false_positives": int(fp.sum()),
        "false_negatives": int(fn.sum()),
        "per_class_f1": [float(x) for x in per_class],
        "per_class_support": [int(x) for x in truth.sum(axis=0)],
    }
