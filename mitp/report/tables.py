"""Rebuild the paper's tables from finished runs, beside the paper's own numbers.

Reads the run records (mitp.report.records) under a runs folder laid out as `<runs>/<dataset>/<run>/seed<n>/`
and writes Markdown and CSV tables: one function per table (Table 1, 2, 3, heads, parameters/time/memory
per run), the readings (mitp.report.readings) and comparisons (mitp.report.comparisons); `write_report`
also draws the figures (mitp.report.figures). A run that is not there shows as `missing`, never as a zero.
Data sets named `demo-<x>` are placed in the paper's `<x>` column (the offline twins), so the demo report
has the paper's shape.
"""

from __future__ import annotations

import collections
import functools
import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..files.atomic import atomic_write_json, atomic_write_text
from ..files.outputs import claim, mark
from .comparisons import comparison_rows, comparisons_markdown
from .figures import plot_curves, plot_fig3, plot_fig4
from .formats import MISSING, fmt_score, fmt_with_sd, markdown, mean, sd, write_numeric_csv, write_table_csv
from .intervals import Decisions, Interval, bootstrap_interval, seed_interval
from .readings import reading_rows, readings_markdown
from .records import RunRecord, collect_runs, paper_column, seeds_of

TABLE2_SETTINGS = {"Model 1": "mitp", "Model 2": "mlp-interaction", "Model 3": "prompts-only", "Baseline": "linear-probe"}
TABLE1_OURS = {"MITP-base": "mitp", "MITP-small": "mitp-small", "P-CLIP": "p-clip"}
PAPER_DATASETS = ("food101", "mmimdb", "snlive")

IntervalOf = Callable[[str, str], "list[Interval] | None"]


# ---------------------------------------------------------------------------------------------------
# cells


def _cell(records: list[RunRecord], dataset: str, setting: str, fraction: float = 1.0) -> tuple[float, ...] | None:
    """Mean over seeds of each score component (None when no seed of this cell finished evaluation)."""
    scores = [s for s in (r.score for r in seeds_of(records, dataset, setting, fraction)) if s is not None]
    if not scores:
        return None
    return tuple(statistics.fmean(values) for values in zip(*scores, strict=True))


def cell_interval(records: list[RunRecord], dataset: str, setting: str) -> list[Interval] | None:
    """A 95% interval per score component: over seeds (t) with two or more, else a bootstrap over the test
    pairs of the one seed (from its per-sample decisions); None when neither is possible."""
    members = [r for r in seeds_of(records, dataset, setting) if r.score is not None]
    if len(members) >= 2:
        scores = [r.score for r in members]
        intervals = [seed_interval([s[c] for s in scores if s is not None]) for c in range(len(scores[0] or ()))]
        return [i for i in intervals if i is not None] or None
    if len(members) == 1 and members[0].per_sample:
        return bootstrap_interval(Decisions(members[0].task, members[0].per_sample))
    return None


def _fmt_interval(intervals: list[Interval] | None, seeds: int) -> str:
    if not intervals:
        return MISSING
    how = f"{seeds} seeds" if intervals[0].kind == "seeds" else "bootstrap, 1 seed"
    return " / ".join(f"{i.low:.2f} to {i.high:.2f}" for i in intervals) + f" ({how})"


def _paper_inside(intervals: list[Interval] | None, paper: Any) -> str:
    """yes / no: whether the paper's value(s) lie inside our interval(s); '-' where either is missing."""
    if not intervals or not paper:
        return "-"
    return "yes" if all(i.holds(float(v)) for i, v in zip(intervals, paper, strict=False)) else "no"


def _interval_columns(row: dict[str, str], records: list[RunRecord], dataset: str, setting: str | None, paper: Any, interval_of: IntervalOf) -> None:
    """Beside an `ours` cell: its 95% interval (`interval_of(dataset, setting)`, memoised: Tables 1 and 2
    share cells, and a bootstrap is 1,000 resamples) and whether the paper's value lies inside it."""
    if setting is None:
        row[f"{dataset} (ours, 95% interval)"], row[f"{dataset} paper inside"] = "-", "-"
        return
    intervals = interval_of(dataset, setting)
    seeds = len([r for r in seeds_of(records, dataset, setting) if r.score is not None])
    row[f"{dataset} (ours, 95% interval)"] = _fmt_interval(intervals, seeds)
    row[f"{dataset} paper inside"] = _paper_inside(intervals, paper)


def table1_average(scores: dict[str, tuple[float, ...] | None]) -> float | None:
    """Table 1's Avg.: the mean of Food101 accuracy, MM-IMDB (F1-micro + F1-macro) / 2 and SNLI-VE
    accuracy (None unless all three are there). The paper prints this mean cut to two decimals for every
    row but MITP-base, whose 76.17 is rounded (truncation gives 76.16)."""
    food, imdb, snli = (scores.get(d) for d in PAPER_DATASETS)
    if food is None or imdb is None or snli is None:
        return None
    return statistics.fmean([food[0], statistics.fmean(imdb), snli[0]])


# ---------------------------------------------------------------------------------------------------
# one function per table


def table1_rows(records: list[RunRecord], paper: dict[str, Any], datasets: list[str], interval_of: IntervalOf) -> list[dict[str, str]]:
    """Table 1: the paper's methods, ours where we run one (MITP-base, MITP-small, P-CLIP), and Avg."""
    columns = _paper_columns(datasets)
    rows = []
    for method, values in paper["table1"].items():
        row = {"method": method}
        ours = TABLE1_OURS.get(method)
        for dataset in datasets:
            # a peer method of the paper has no run of ours: "-" (not applicable), unlike a missing run
            row[f"{dataset} (ours)"] = fmt_score(_cell(records, dataset, ours)) if ours else "-"
            if dataset in columns:
                row[f"{columns[dataset]} (paper)"] = fmt_score(values.get(columns[dataset]))
            _interval_columns(row, records, dataset, ours, values.get(columns.get(dataset, "")), interval_of)
        if len(columns) == len(PAPER_DATASETS):
            average = table1_average({columns[d]: _cell(records, d, ours) for d in columns}) if ours else None
            row["Avg. (ours)"] = "-" if not ours else fmt_score((average,) if average is not None else None)
            row["Avg. (paper)"] = fmt_score((values["avg"],)) if "avg" in values else "-"
        rows.append(row)
    return rows


def table2_rows(records: list[RunRecord], paper: dict[str, Any], datasets: list[str], interval_of: IntervalOf) -> list[dict[str, str]]:
    """Table 2: the ablation of the memory strategy, with what MITP's memory contributes per sample."""
    columns = _paper_columns(datasets)
    rows = []
    for model, setting in TABLE2_SETTINGS.items():
        row = {"model": model, "setting": setting}
        for dataset in datasets:
            row[f"{dataset} (ours)"] = fmt_score(_cell(records, dataset, setting))
            if dataset in columns:
                row[f"{columns[dataset]} (paper)"] = fmt_score(paper["table2"][model].get(columns[dataset]))
            _interval_columns(row, records, dataset, setting, paper["table2"][model].get(columns.get(dataset, "")), interval_of)
            # beside Table 2: what the memory strategy adds per sample (docs/readings.md); only MITP has one
            row[f"{dataset} memory contribution"] = _fmt_contribution(records, dataset, setting) if setting == "mitp" else "-"
        rows.append(row)
    return rows


def _fmt_contribution(records: list[RunRecord], dataset: str, setting: str) -> str:
    values = [c for c in (r.memory_contribution for r in seeds_of(records, dataset, setting)) if c is not None]
    return fmt_with_sd(mean(values), sd(values), sign=True)


def table3_rows(records: list[RunRecord], paper: dict[str, Any], datasets: list[str]) -> list[dict[str, str]]:
    """Table 3: MITP on Food101 trained on a fraction of the training split, against all of it."""
    food = next((d for d in datasets if paper_column(d) == "food101"), None)
    all_data = _cell(records, food, "mitp") if food else None
    rows = []
    for percent, paper_acc in paper["table3"].items():
        ours = _cell(records, food, "mitp", int(percent) / 100) if food else None
        rows.append({
            "training data (%)": str(percent),
            "ours acc (%)": fmt_score(ours),
            "ours degradation (%)": fmt_score((all_data[0] - ours[0],)) if ours and all_data else MISSING,
            "paper acc (%)": fmt_score((paper_acc,)),
            "paper degradation (%)": fmt_score((paper["table1"]["MITP-base"]["food101"][0] - paper_acc,)),
        })
    return rows


def head_pairs(records: list[RunRecord]) -> dict[tuple[str, str], set[str]]:
    """{(fused setting, image setting): data sets} for every two settings that trained the same model on
    the same data set and fraction and differ only in how the logits are read (Fig. 4's grid points aside:
    they are that figure's study, not a setting of their own)."""
    by_model: dict[tuple[Any, ...], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in records:
        if r.grid_point is None:
            by_model[r.model_apart_from_head()][r.head].add(r.setting)
    pairs: dict[tuple[str, str], set[str]] = defaultdict(set)
    for model, heads in by_model.items():
        for pair in itertools.product(heads["fused"], heads["image"]):
            pairs[pair].add(model[0])  # the model's data set
    return dict(sorted(pairs.items()))


def heads_rows(records: list[RunRecord], datasets: list[str]) -> list[dict[str, str]]:
    """The heads table: each setting beside the same setting read with the image head (decisions.md §7),
    on the data sets where both ran."""
    pairs = head_pairs(records)
    partners = collections.Counter(fused for fused, _ in pairs)
    rows = []
    for (fused, image), both in pairs.items():
        row = {"setting": fused if partners[fused] == 1 else f"{fused} (image: {image})"}
        for dataset in datasets:
            row[f"{dataset} fused"] = fmt_score(_cell(records, dataset, fused) if dataset in both else None)
            row[f"{dataset} image"] = fmt_score(_cell(records, dataset, image) if dataset in both else None)
        rows.append(row)
    return rows


def runs_rows(records: list[RunRecord]) -> list[dict[str, str]]:
    """Parameters, time and memory of every finished run."""
    return [{
        "dataset": r.dataset, "run": r.run, "seed": str(r.seed), "head": r.head, "test score": fmt_score(r.score),
        "trainable params": f"{r.trainable_params:,}", "backbone params": f"{r.backbone_params:,}",
        "epochs": str(r.epochs), "train time (s)": f"{r.train_seconds:.1f}",
        "peak memory (GiB)": f"{r.peak_memory_gib:.2f}" if math.isfinite(r.peak_memory_gib) else MISSING,
        "memory kind": r.peak_memory_kind, "device": r.device,
    } for r in sorted(records, key=lambda r: (r.dataset, r.run, r.seed))]


def build_tables(records: list[RunRecord], paper: dict[str, Any], datasets: list[str]) -> dict[str, list[dict[str, str]]]:
    """Rows (dicts of column -> text) of each table; every dataset gets an `ours` column, and a `paper`
    column where the paper has that data set (the demo twins sit in their real data set's column)."""
    interval_of = functools.cache(lambda dataset, setting: cell_interval(records, dataset, setting))
    return {
        "table1": table1_rows(records, paper, datasets, interval_of),
        "table2": table2_rows(records, paper, datasets, interval_of),
        "table3": table3_rows(records, paper, datasets),
        "heads": heads_rows(records, datasets),
        "runs": runs_rows(records),
    }


def _paper_columns(datasets: list[str]) -> dict[str, str]:
    return {d: paper_column(d) for d in datasets if paper_column(d) in PAPER_DATASETS}


def table_notes(records: list[RunRecord], datasets: list[str]) -> list[str]:
    """What differs from the paper, said under every table: the head behind our numbers and Food101's split."""
    heads = sorted({r.head for r in records if r.setting in (*TABLE1_OURS.values(), *TABLE2_SETTINGS.values())} - {"linear"})
    notes = [
        f"Head of our runs: {', '.join(heads) or 'none yet'} (docs/decisions.md §7: `fused` = image and caption embeddings, "
        "`image` = image embedding alone, `per-class` = the text tower once per class; the linear probe has a linear head "
        "of its own; a setting also trained with the image head is compared with it in heads.md; MITP read other ways, "
        "and what its memory strategy contributes, are in readings.md)."
    ]
    if any(paper_column(d) == "food101" for d in datasets):
        notes.append(
            "Food101 has no validation split: our runs train on 90% of the paper's training pairs (10% per class, "
            "seed 0, validates), so their training sets are 10% smaller than the paper's."
        )
    return notes


def write_report(runs: Path, paper_file: Path, out: Path, datasets: list[str], warn: Callable[[str], object] = print) -> dict[str, Any]:
    """Write tables (.md, .csv) and plots (.png) into `out`, each file atomically; returns counts of what was found."""
    paper = yaml.safe_load(Path(paper_file).read_text())
    out = claim(Path(out), "report")
    records, unreadable = collect_runs(runs, warn)
    out.mkdir(parents=True, exist_ok=True)
    mark(out, "report")
    notes = "".join(f"\n{note}\n" for note in table_notes(records, datasets))
    if unreadable:
        notes += f"\nUnreadable runs (damaged result or metrics files, left out): {', '.join(unreadable)}\n"
    for name, rows in build_tables(records, paper, datasets).items():
        write_table_csv(out / f"{name}.csv", rows)
        atomic_write_text(out / f"{name}.md", markdown(rows) + ("" if name == "runs" else notes))
    comparisons = comparison_rows(records, datasets)
    write_numeric_csv(out / "comparisons.csv", comparisons)
    atomic_write_text(out / "comparisons.md", comparisons_markdown(comparisons))
    readings = reading_rows(records, datasets)
    write_numeric_csv(out / "readings.csv", readings)
    atomic_write_text(out / "readings.md", readings_markdown(readings))
    plot_fig3(records, out / "fig3.png", datasets)
    plot_fig4(records, out / "fig4.png", datasets)
    plot_curves(records, out / "curves.png")
    summary = {
        "runs_found": len(records) + len(unreadable),
        "runs_evaluated": sum(r.test is not None for r in records),
        "runs_unreadable": unreadable,
        "datasets": datasets,
    }
    atomic_write_json(out / "summary.json", summary)
    return summary
