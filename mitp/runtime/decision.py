"""How logits become a decision: the one rule shared by metrics, export checks and `mitp predict`.

Single-label: softmax over the classes, the argmax is the prediction. Multi-label: a sigmoid per label,
each label with `sigmoid(logit) >= threshold` is predicted. `labels[i]` goes with `logits[:, i]`.
Computed in float32 numpy, so training metrics and the bundle decide identical logits identically.
"""

from __future__ import annotations

import numpy as np

MULTILABEL_THRESHOLD = 0.5
SOFTMAX_ARGMAX, SIGMOID_THRESHOLD = "softmax-argmax", "sigmoid-threshold"


def sigmoid(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float32)
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float32)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


def multilabel_decisions(logits: np.ndarray, threshold: float = MULTILABEL_THRESHOLD) -> np.ndarray:
    """(N, K) bool: which labels are predicted."""
    return sigmoid(logits) >= np.float32(threshold)


def decision_rule(task: str, threshold: float = MULTILABEL_THRESHOLD) -> dict[str, object]:
    """The rule as written into a bundle."""
    if task == "multi-label":
        return {"rule": SIGMOID_THRESHOLD, "threshold": threshold}
    return {"rule": SOFTMAX_ARGMAX}
