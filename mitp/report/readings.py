"""The readings comparison (readings.md): MITP's family read each way the paper leaves open, with what its
memory strategy contributes per sample and how its gates behaved (docs/readings.md)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ..config.variants import VARIANTS
from .formats import fmt_number, fmt_with_sd, markdown, mean, sd
from .records import RunRecord


def _has_interaction(name: str | None) -> bool:
    """Whether a recorded variant carries temporal prompts between interaction layers (readings.md compares these)."""
    spec = VARIANTS.get(str(name))
    return spec is not None and spec.has_interaction


def describe_reading(reading: dict[str, Any] | None) -> str:
    """`memory hub: pairwise map, softmax gate, learned scale, cos; fused head`."""
    if not reading:
        return "unrecorded"
    exchange = {"memory-hub": "memory hub", "mlp": "MLP exchange", "none": "no exchange"}.get(str(reading.get("exchange")), "?")
    if reading.get("exchange") == "memory-hub":
        exchange += f": {reading['map']} map, {reading['gate']} gate, {reading['scale']} scale, {reading['similarity']}"
    return f"{exchange}; {reading.get('head', '?')} head"


def reading_rows(records: list[RunRecord], datasets: list[str]) -> list[dict[str, Any]]:
    """One row per data set and MITP-family setting (full data, not the Fig. 4 grid): the score over seeds,
    what freezing the gates at their training means costs (the memory strategy's contribution), and the
    gates' statistics at the best epoch. Numbers stay numbers here; readings.md formats them."""
    groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for r in records:
        if r.dataset in datasets and _has_interaction(r.variant) and r.full_data and r.grid_point is None:
            groups[(r.dataset, r.setting)].append(r)
    rows = []
    for (dataset, setting), members in sorted(groups.items(), key=lambda item: (datasets.index(item[0][0]), item[0][1])):
        scores = [s for s in (r.primary_score for r in members) if s is not None]
        contributions = [c for c in (r.memory_contribution for r in members) if c is not None]
        unchanged = [100 * r.ablation["predictions_unchanged"] for r in members if r.ablation]
        spreads = [row[f"{g}_spread"] for r in members for row in (r.gates or {}).values() for g in ("z", "r")]
        zeros = [row[f"zero_{m}_maps"] for r in members for row in (r.gates or {}).values() for m in ("self", "cross")]
        flagged = sorted({gate for r in members for gate in r.low_spread_gates})
        rows.append({
            "dataset": dataset,
            "run": setting,
            "reading": describe_reading(members[0].reading),
            "seeds": len(scores),
            "score": mean(scores),
            "score sd": sd(scores),
            "memory contribution": mean(contributions),
            "memory contribution sd": sd(contributions),
            "decisions unchanged (%)": mean(unchanged),
            "gate spread (mean)": mean(spreads),
            "gate spread (min)": min(spreads) if spreads else None,
            "all-zero maps (%)": mean([100 * z for z in zeros]),
            "near-constant gates": len(flagged) if spreads else None,
        })
    return rows


def readings_markdown(rows: list[dict[str, Any]]) -> str:
    """readings.md: the numeric rows, formatted (mean ± sd over seeds; '-' where a run has no gates)."""
    shown = [{
        "data set": r["dataset"], "run": r["run"], "reading": r["reading"], "seeds": str(r["seeds"]),
        "score": fmt_with_sd(r["score"], r["score sd"]),
        "memory contribution (points)": fmt_with_sd(r["memory contribution"], r["memory contribution sd"], sign=True),
        "decisions unchanged (%)": fmt_number(r["decisions unchanged (%)"], 1),
        "gate spread mean / min": "-" if r["gate spread (mean)"] is None else f"{r['gate spread (mean)']:.3f} / {r['gate spread (min)']:.3f}",
        "all-zero maps (%)": fmt_number(r["all-zero maps (%)"], 1),
        "near-constant gates": "-" if r["near-constant gates"] is None else str(r["near-constant gates"]),
    } for r in rows]
    return markdown(shown) + READINGS_NOTE


READINGS_NOTE = """
Score: test accuracy or F1-micro (%), mean ± standard deviation over seeds. Memory contribution: the score of
the same checkpoint with every gate (z and r, per interaction layer and modality) frozen at its training
mean, subtracted from the live score: what the memory strategy does per sample. Decisions unchanged: the
share of test samples whose decision is the same with frozen gates. Gate spread: the standard deviation of a
gate over training samples, averaged over its elements, at the best epoch; a gate below 0.02 is counted as
near-constant. All-zero maps: the share of samples whose similarity map is zero after the ReLU (no gradient
reaches W_m through them). Runs without a memory hub show '-'.
"""
