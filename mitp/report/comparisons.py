"""comparisons.md: does MITP-base beat each baseline on the same test pairs (a paired bootstrap)?"""

from __future__ import annotations

from typing import Any

from .formats import markdown
from .intervals import Decisions, paired_bootstrap
from .records import RunRecord, seeds_of

COMPARED_WITH_MITP = ("mitp-small", "mlp-interaction", "prompts-only", "p-clip", "linear-probe")


def comparison_rows(records: list[RunRecord], datasets: list[str]) -> list[dict[str, Any]]:
    """A paired bootstrap per data set and baseline over the seeds both have (first score component:
    accuracy, or F1-micro); pairs with different test pairs are left out, not compared."""
    rows = []
    for dataset in datasets:
        ours = {r.seed: r for r in seeds_of(records, dataset, "mitp") if r.per_sample}
        for baseline in COMPARED_WITH_MITP:
            theirs = {r.seed: r for r in seeds_of(records, dataset, baseline) if r.per_sample}
            seeds = sorted(set(ours) & set(theirs))
            if not seeds:
                continue
            task = ours[seeds[0]].task
            try:
                comparison = paired_bootstrap([Decisions(task, ours[s].per_sample) for s in seeds], [Decisions(task, theirs[s].per_sample) for s in seeds])
            except ValueError:
                continue  # different test pairs: not comparable
            rows.append({
                "dataset": dataset, "mitp vs": baseline, "seeds": comparison.seeds,
                "difference (points)": round(comparison.difference, 2),
                "95% low": round(comparison.low, 2), "95% high": round(comparison.high, 2),
                "p (mitp not better)": round(comparison.p_value, 4),
                "mitp better": "yes" if comparison.low > 0 else "no",
            })
    return rows


def comparisons_markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "# MITP-base against each baseline, on the same test pairs\n\nPaired bootstrap (1,000 resamples of the test "
        "pairs, the same for both runs and every seed both have): the difference in points of the first score "
        "(accuracy, or F1-micro), its 95% interval, and the share of resamples in which MITP does not beat the "
        "baseline. 'better' means the interval lies above zero.\n\n"
    )
    if not rows:
        return head + "No pair of evaluated runs with per-sample decisions yet.\n"
    return head + markdown([{k: str(v) for k, v in row.items()} for row in rows])
