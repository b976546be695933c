"""Rebuild the paper's tables and figures from finished runs, beside the paper's own numbers.

Reads every `result.json` (written when a training run finishes), the `metrics-test.json` beside it and
`history.json`, under a runs folder laid out as `<runs>/<dataset>/<run>/seed<n>/`. Writes Markdown and
CSV tables (Table 1, 2, 3, parameters/time/memory per run) and PNG plots (Fig. 3, Fig. 4, training
curves). A run that is not there shows as `missing`, never as a zero. Data sets named `demo-<x>` are
placed in the paper's `<x>` column (the offline twins), so the demo report has the paper's shape.
"""

from __future__ import annotations

import functools
import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..config.variants import VARIANTS
from ..files.atomic import atomic_write_json, atomic_write_text, atomic_writer
from ..files.outputs import claim, mark
from .intervals import Decisions, Interval, bootstrap_interval, paired_bootstrap, seed_interval

MISSING = "missing"
IMAGE_HEAD_SUFFIX = "-image"  # a setting named <s>-image is setting <s> read with the image head (heads table)
TABLE2_SETTINGS = {"Model 1": "mitp", "Model 2": "mlp-interaction", "Model 3": "prompts-only", "Baseline": "linear-probe"}
TABLE1_OURS = {"MITP-base": "mitp", "MITP-small": "mitp-small", "P-CLIP": "p-clip"}


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
            record = _read_json(result_path, dict)
            missing = [key for key in RESULT_KEYS if key not in record]
            if missing:
                raise ValueError(f"{result_path} lacks {', '.join(missing)}")
            record["run"] = folder.parent.name
            metrics_path = folder / "metrics-test.json"
            metrics = _read_json(metrics_path, dict) if metrics_path.is_file() else None
            record["test"] = metrics["metrics"] if metrics else None
            record["ablation"] = metrics.get("memory_ablation") if metrics else None
            record["per_sample"] = metrics.get("per_sample") if metrics else None
            history_path = folder / "history.json"
            record["history"] = _read_json(history_path, list) if history_path.is_file() else []
        except (OSError, ValueError, KeyError, TypeError) as err:
            warn(f"run {folder} is unreadable and shown as such: {err}")
            unreadable.append(str(folder))
            continue
        records.append(record)
    return records, unreadable


def _read_json(path: Path, kind: type) -> Any:
    try:
        value = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(value, kind):
        raise ValueError(f"{path} does not hold a JSON {kind.__name__}")
    return value


def _score(record: dict[str, Any]) -> tuple[float, ...] | None:
    """Test score(s) in percent: (accuracy,) or (F1-micro, F1-macro)."""
    test = record.get("test")
    if not test:
        return None
    if "accuracy" in test:
        return (100 * test["accuracy"],)
    return (100 * test["f1_micro"], 100 * test["f1_macro"])


def _primary(record: dict[str, Any]) -> float | None:
    """The first test score (accuracy, or F1-micro) in percent; None before evaluation."""
    score = _score(record)
    return None if score is None else score[0]


def _aggregate(records: list[dict[str, Any]]) -> tuple[float, ...] | None:
    """Mean over seeds of each score component (None when no run of this cell finished evaluation)."""
    scores = [s for s in (_score(r) for r in records) if s is not None]
    if not scores:
        return None
    return tuple(statistics.fmean(values) for values in zip(*scores, strict=True))


def _fmt(value: tuple[float, ...] | list[float] | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, list | tuple) and not value):
        return MISSING
    return " / ".join(f"{v:.{digits}f}" for v in value)


def _cell(records: list[dict[str, Any]], dataset: str, run: str) -> tuple[float, ...] | None:
    return _aggregate(_members(records, dataset, run))


def _members(records: list[dict[str, Any]], dataset: str, run: str) -> list[dict[str, Any]]:
    return [r for r in records if r["dataset"] == dataset and r["run"] == run]


def _task(record: dict[str, Any]) -> str:
    return "multi-label" if record.get("metric") == "f1_micro" else "single-label"


def cell_interval(records: list[dict[str, Any]], dataset: str, run: str) -> list[Interval] | None:
    """A 95% interval per score component: over seeds (t) with two or more, else a bootstrap over the test
    pairs of the one seed (from its per-sample decisions); None when neither is possible."""
    members = [r for r in _members(records, dataset, run) if _score(r) is not None]
    if len(members) >= 2:
        scores = [_score(r) for r in members]
        intervals = [seed_interval([s[c] for s in scores if s is not None]) for c in range(len(scores[0] or ()))]
        return [i for i in intervals if i is not None] or None
    if len(members) == 1 and members[0].get("per_sample"):
        return bootstrap_interval(Decisions(_task(members[0]), members[0]["per_sample"]))
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


def _interval_columns(row: dict[str, str], records: list[dict[str, Any]], dataset: str, run: str | None, paper: Any, interval_of: Callable) -> None:
    """Beside an `ours` cell: its 95% interval (`interval_of(dataset, run)`, memoised: Tables 1 and 2 share
    cells, and a bootstrap is 1,000 resamples) and whether the paper's value lies inside it."""
    if run is None:
        row[f"{dataset} (ours, 95% interval)"], row[f"{dataset} paper inside"] = "-", "-"
        return
    intervals = interval_of(dataset, run)
    seeds = len([r for r in _members(records, dataset, run) if _score(r) is not None])
    row[f"{dataset} (ours, 95% interval)"] = _fmt_interval(intervals, seeds)
    row[f"{dataset} paper inside"] = _paper_inside(intervals, paper)


PAPER_DATASETS = ("food101", "mmimdb", "snlive")


def table1_average(scores: dict[str, tuple[float, ...] | None]) -> float | None:
    """Table 1's Avg.: the mean of Food101 accuracy, MM-IMDB (F1-micro + F1-macro) / 2 and SNLI-VE
    accuracy (None unless all three are there). The paper prints this mean cut to two decimals for every
    row but MITP-base, whose 76.17 is rounded (truncation gives 76.16)."""
    food, imdb, snli = (scores.get(d) for d in PAPER_DATASETS)
    if food is None or imdb is None or snli is None:
        return None
    return statistics.fmean([food[0], statistics.fmean(imdb), snli[0]])


def build_tables(records: list[dict[str, Any]], paper: dict[str, Any], datasets: list[str]) -> dict[str, list[dict[str, str]]]:
    """Rows (dicts of column -> text) of each table; every dataset gets an `ours` column, and a `paper`
    column where the paper has that data set (the demo twins sit in their real data set's column)."""
    columns = {d: paper_column(d) for d in datasets if paper_column(d) in PAPER_DATASETS}
    interval_of = functools.cache(lambda dataset, run: cell_interval(records, dataset, run))
    table1 = []
    for method, values in paper["table1"].items():
        row = {"method": method}
        ours_setting = TABLE1_OURS.get(method)
        for dataset in datasets:
            # a peer method of the paper has no run of ours: "-" (not applicable), unlike a missing run
            row[f"{dataset} (ours)"] = _fmt(_cell(records, dataset, ours_setting)) if ours_setting else "-"
            if dataset in columns:
                row[f"{columns[dataset]} (paper)"] = _fmt(values.get(columns[dataset]))
            _interval_columns(row, records, dataset, ours_setting, values.get(columns.get(dataset, "")), interval_of)
        if len(columns) == len(PAPER_DATASETS):
            by_dataset = {columns[d]: _cell(records, d, ours_setting) for d in columns} if ours_setting else None
            average = table1_average(by_dataset) if by_dataset else None
            row["Avg. (ours)"] = "-" if not ours_setting else _fmt((average,) if average is not None else None)
            row["Avg. (paper)"] = _fmt((values["avg"],)) if "avg" in values else "-"
        table1.append(row)
    table2 = []
    for model, setting in TABLE2_SETTINGS.items():
        row = {"model": model, "setting": setting}
        for dataset in datasets:
            row[f"{dataset} (ours)"] = _fmt(_cell(records, dataset, setting))
            if dataset in columns:
                row[f"{columns[dataset]} (paper)"] = _fmt(paper["table2"][model].get(columns[dataset]))
            _interval_columns(row, records, dataset, setting, paper["table2"][model].get(columns.get(dataset, "")), interval_of)
            # beside Table 2: what the memory strategy adds per sample (docs/readings.md); only MITP has one
            row[f"{dataset} memory contribution"] = _fmt_contribution(records, dataset, setting) if setting == "mitp" else "-"
        table2.append(row)
    table3 = []
    food = next((d for d in datasets if paper_column(d) == "food101"), None)
    all_data = _cell(records, food, "mitp") if food else None
    for percent, paper_acc in paper["table3"].items():
        ours = _cell(records, food, f"mitp-frac{percent}") if food else None
        table3.append({
            "training data (%)": str(percent),
            "ours acc (%)": _fmt(ours),
            "ours degradation (%)": _fmt((all_data[0] - ours[0],)) if ours and all_data else MISSING,
            "paper acc (%)": _fmt((paper_acc,)),
            "paper degradation (%)": _fmt((paper["table1"]["MITP-base"]["food101"][0] - paper_acc,)),
        })
    heads = []
    names = {r["run"] for r in records}
    for image_run in sorted(n for n in names if n.endswith(IMAGE_HEAD_SUFFIX) and n.removesuffix(IMAGE_HEAD_SUFFIX) in names):
        fused_run = image_run.removesuffix(IMAGE_HEAD_SUFFIX)
        row = {"setting": fused_run}
        for dataset in datasets:
            row[f"{dataset} fused"] = _fmt(_cell(records, dataset, fused_run))
            row[f"{dataset} image"] = _fmt(_cell(records, dataset, image_run))
        heads.append(row)
    runs = []
    for r in sorted(records, key=lambda r: (r["dataset"], r["run"], r["seed"])):
        runs.append({
            "dataset": r["dataset"], "run": r["run"], "seed": str(r["seed"]), "head": r.get("head", "image"), "test score": _fmt(_score(r)),
            "trainable params": f"{r['trainable_params']:,}", "backbone params": f"{r['backbone_params']:,}",
            "epochs": str(r["epochs"]), "train time (s)": f"{r['train_seconds']:.1f}",
            "peak memory (GiB)": f"{r['peak_memory_gib']:.2f}" if math.isfinite(r["peak_memory_gib"]) else MISSING,
            "memory kind": r.get("peak_memory_kind", ""), "device": r.get("device", ""),
        })
    return {"table1": table1, "table2": table2, "table3": table3, "heads": heads, "runs": runs}


def _fmt_contribution(records: list[dict[str, Any]], dataset: str, run: str) -> str:
    values = [100 * r["ablation"]["contribution"] for r in records if r["dataset"] == dataset and r["run"] == run and r.get("ablation")]
    return _with_sd(_mean(values), _sd(values), sign=True)




def _has_interaction(name: Any) -> bool:
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


def reading_rows(records: list[dict[str, Any]], datasets: list[str]) -> list[dict[str, Any]]:
    """One row per data set and MITP-family run (full data, not the Fig. 4 grid): the score over seeds,
    what freezing the gates at their training means costs (the memory strategy's contribution), and the
    gates' statistics at the best epoch. Numbers stay numbers here; readings.md formats them."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["dataset"] in datasets and _has_interaction(r.get("variant")) and r["fraction"] == 1.0 and grid_point(r["run"]) is None:
            groups[(r["dataset"], r["run"])].append(r)
    rows = []
    for (dataset, run), members in sorted(groups.items(), key=lambda item: (datasets.index(item[0][0]), item[0][1])):
        scores = [s for s in map(_primary, members) if s is not None]
        contributions = [100 * r["ablation"]["contribution"] for r in members if r.get("ablation")]
        unchanged = [100 * r["ablation"]["predictions_unchanged"] for r in members if r.get("ablation")]
        spreads = [row[f"{g}_spread"] for r in members for row in (r.get("gates") or {}).values() for g in ("z", "r")]
        zeros = [row[f"zero_{m}_maps"] for r in members for row in (r.get("gates") or {}).values() for m in ("self", "cross")]
        flagged = sorted({gate for r in members for gate in (r.get("low_spread_gates") or [])})
        rows.append({
            "dataset": dataset,
            "run": run,
            "reading": describe_reading(members[0].get("reading")),
            "seeds": len(scores),
            "score": _mean(scores),
            "score sd": _sd(scores),
            "memory contribution": _mean(contributions),
            "memory contribution sd": _sd(contributions),
            "decisions unchanged (%)": _mean(unchanged),
            "gate spread (mean)": _mean(spreads),
            "gate spread (min)": min(spreads) if spreads else None,
            "all-zero maps (%)": _mean([100 * z for z in zeros]),
            "near-constant gates": len(flagged) if spreads else None,
        })
    return rows


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _sd(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def _num(value: float | None, digits: int = 2, sign: bool = False) -> str:
    return "-" if value is None else f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _with_sd(mean: float | None, sd: float | None, sign: bool = False) -> str:
    """`85.00 ± 7.07` (mean ± standard deviation over seeds), `85.00` for one seed, `-` for none."""
    return _num(mean, sign=sign) + ("" if sd is None or mean is None else f" ± {sd:.2f}")


def readings_markdown(rows: list[dict[str, Any]]) -> str:
    """readings.md: the numeric rows, formatted (mean ± sd over seeds; '-' where a run has no gates)."""
    shown = [{
        "data set": r["dataset"], "run": r["run"], "reading": r["reading"], "seeds": str(r["seeds"]),
        "score": _with_sd(r["score"], r["score sd"]),
        "memory contribution (points)": _with_sd(r["memory contribution"], r["memory contribution sd"], sign=True),
        "decisions unchanged (%)": _num(r["decisions unchanged (%)"], 1),
        "gate spread mean / min": "-" if r["gate spread (mean)"] is None else f"{r['gate spread (mean)']:.3f} / {r['gate spread (min)']:.3f}",
        "all-zero maps (%)": _num(r["all-zero maps (%)"], 1),
        "near-constant gates": "-" if r["near-constant gates"] is None else str(r["near-constant gates"]),
    } for r in rows]
    return _markdown(shown) + READINGS_NOTE


READINGS_NOTE = """
Score: test accuracy or F1-micro (%), mean ± standard deviation over seeds. Memory contribution: the score of
the same checkpoint with every gate (z and r, per interaction layer and modality) frozen at its training
mean, subtracted from the live score: what the memory strategy does per sample. Decisions unchanged: the
share of test samples whose decision is the same with frozen gates. Gate spread: the standard deviation of a
gate over training samples, averaged over its elements, at the best epoch; a gate below 0.02 is counted as
near-constant. All-zero maps: the share of samples whose similarity map is zero after the ReLU (no gradient
reaches W_m through them). Runs without a memory hub show '-'.
"""


def table_notes(records: list[dict[str, Any]], datasets: list[str]) -> list[str]:
    """What differs from the paper, said under every table: the head behind our numbers and Food101's split."""
    heads = sorted({r.get("head", "image") for r in records if r["run"] in (*TABLE1_OURS.values(), *TABLE2_SETTINGS.values())} - {"linear"})
    notes = [
        f"Head of our runs: {', '.join(heads) or 'none yet'} (docs/decisions.md §7: `fused` = image and caption embeddings, "
        "`image` = image embedding alone, `per-class` = the text tower once per class; the linear probe has a linear head "
        "of its own; runs named `<setting>-image` use the image head and are compared in heads.md; MITP read other ways, "
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
    tables = build_tables(records, paper, datasets)
    notes = "".join(f"\n{note}\n" for note in table_notes(records, datasets))
    if unreadable:
        notes += f"\nUnreadable runs (damaged result or metrics files, left out): {', '.join(unreadable)}\n"
    for name, rows in tables.items():
        _write_csv(out / f"{name}.csv", rows)
        atomic_write_text(out / f"{name}.md", _markdown(rows) + ("" if name == "runs" else notes))
    comparisons = comparison_rows(records, datasets)
    _write_numeric_csv(out / "comparisons.csv", comparisons)
    atomic_write_text(out / "comparisons.md", comparisons_markdown(comparisons))
    readings = reading_rows(records, datasets)
    _write_numeric_csv(out / "readings.csv", readings)
    atomic_write_text(out / "readings.md", readings_markdown(readings))
    plot_fig3(records, out / "fig3.png", datasets)
    plot_fig4(records, out / "fig4.png", datasets)
    plot_curves(records, out / "curves.png")
    summary = {
        "runs_found": len(records) + len(unreadable),
        "runs_evaluated": sum(r["test"] is not None for r in records),
        "runs_unreadable": unreadable,
        "datasets": datasets,
    }
    atomic_write_json(out / "summary.json", summary)
    return summary


COMPARED_WITH_MITP = ("mitp-small", "mlp-interaction", "prompts-only", "p-clip", "linear-probe")


def comparison_rows(records: list[dict[str, Any]], datasets: list[str]) -> list[dict[str, Any]]:
    """Does MITP-base beat each baseline on the same test pairs? A paired bootstrap per data set over the
    seeds both have (first score component: accuracy, or F1-micro)."""
    rows = []
    for dataset in datasets:
        ours = {r["seed"]: r for r in _members(records, dataset, "mitp") if r.get("per_sample")}
        for baseline in COMPARED_WITH_MITP:
            theirs = {r["seed"]: r for r in _members(records, dataset, baseline) if r.get("per_sample")}
            seeds = sorted(set(ours) & set(theirs))
            if not seeds:
                continue
            task = _task(ours[seeds[0]])
            try:
                comparison = paired_bootstrap([Decisions(task, ours[s]["per_sample"]) for s in seeds], [Decisions(task, theirs[s]["per_sample"]) for s in seeds])
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
    return head + _markdown([{k: str(v) for k, v in row.items()} for row in rows])


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    """The table as a CSV of numbers: a formatted cell becomes its number (empty where the Markdown says
    `missing` or `-`), a pair `micro / macro` becomes two columns, and `± sd` its own column."""
    numeric = [numeric_row(row) for row in rows]
    present = {key for row in numeric for key in row}
    order = [c for column in dict.fromkeys(k for row in rows for k in row) for c in (column, f"{column} F1-macro", f"{column} sd") if c in present]
    _write_numeric_csv(path, [{c: row.get(c) for c in order} for row in numeric])


NUMBER = re.compile(r"^[+-]?\d[\d,]*(\.\d+)?$")


def _number(text: str) -> int | float:
    text = text.replace(",", "")
    return float(text) if "." in text else int(text)


def numeric_row(row: dict[str, str]) -> dict[str, Any]:
    """{"demo-mmimdb (ours)": "60.00 / 50.00", "x": "+1.00 ± 1.41", "n": "12,208"} ->
    {"demo-mmimdb (ours)": 60.0, "demo-mmimdb (ours) F1-macro": 50.0, "x": 1.0, "x sd": 1.41, "n": 12208}."""
    out: dict[str, Any] = {}
    for column, text in row.items():
        value, _, spread = text.partition(" ± ")
        parts = [p.strip() for p in value.split(" / ")]
        if text in (MISSING, "-", ""):
            out[column] = None
        elif all(NUMBER.match(p) for p in parts) and (not spread or NUMBER.match(spread)):
            out[column] = _number(parts[0])
            if len(parts) == 2:
                out[f"{column} F1-macro"] = _number(parts[1])
            if spread:
                out[f"{column} sd"] = float(spread)
        else:
            out[column] = text
    return out


def _write_numeric_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """A CSV whose number columns hold numbers (empty where there is none)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    columns = list(dict.fromkeys(key for row in rows for key in row))
    table = pa.table({c: _column([row.get(c) for row in rows]) for c in columns}) if rows else pa.table({"dataset": pa.array([], pa.string())})
    with atomic_writer(path, "wb") as f:
        pacsv.write_csv(table, f)


def _column(values: list[Any]):
    """A pyarrow column of numbers where every value is one (or None), else of text."""
    import pyarrow as pa

    if all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values):
        return pa.array(values, pa.float64() if any(isinstance(v, float) for v in values) else pa.int64())
    return pa.array([None if v is None else str(v) for v in values], pa.string())


def _markdown(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "_no rows_\n"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row.get(c, MISSING) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


PAPER_BUDGET = 2.0e6  # MITP's trainable parameters on ViT-L/14, as the paper states


def plot_fig3(records: list[dict[str, Any]], path: Path, datasets: list[str]) -> None:
    """Fig. 3: test score against trainable parameters, one panel per data set, the paper's 2.0M marked;
    for runs that measured GPU memory, a second row against peak training memory (a CPU process's RSS
    says nothing about a GPU's memory, so CPU runs get the parameter panels alone). Labels do not overlap."""
    plt = _pyplot()
    chosen = [r for r in records if r["dataset"] in datasets and _score(r) and r["fraction"] == 1.0 and grid_point(r["run"]) is None]
    gpu = [r for r in chosen if str(r.get("peak_memory_kind", "")).startswith("cuda") and math.isfinite(r["peak_memory_gib"])]
    shown = [d for d in datasets if any(r["dataset"] == d for r in chosen)] or datasets[:1]
    rows = [("trainable_params", "trainable parameters (log)", chosen)] + ([("peak_memory_gib", "peak GPU training memory (GiB)", gpu)] if gpu else [])
    columns = min(2, len(shown))
    grid_rows = -(-len(shown) // columns)  # data sets, two to a row
    fig, axes = plt.subplots(
        grid_rows * len(rows), columns, figsize=(6.4 * columns, 4.4 * grid_rows * len(rows)), squeeze=False, dpi=DPI
    )
    for block in range(len(rows)):  # an odd number of data sets leaves one panel per row of panels empty
        for index in range(len(shown), grid_rows * columns):
            axes[block * grid_rows + index // columns][index % columns].set_visible(False)
    for row, (key, label, records_here) in enumerate(rows):
        for index, dataset in enumerate(shown):
            axis = axes[row * grid_rows + index // columns][index % columns]
            points = _mean_by_run([r for r in records_here if r["dataset"] == dataset], key)
            axis.set_title(dataset)
            axis.set_xlabel(label)
            axis.set_ylabel("test accuracy / F1-micro (%)")
            axis.grid(alpha=0.3)
            if key == "trainable_params":
                axis.set_xscale("log")
                axis.axvline(PAPER_BUDGET, color="grey", linestyle="--", linewidth=1)
                axis.text(PAPER_BUDGET, 0.98, "paper: 2.0M ", transform=axis.get_xaxis_transform(), color="grey", fontsize=8, ha="right", va="top")
            if points:
                axis.scatter([x for _, x, _ in points], [y for _, _, y in points], color="tab:blue", zorder=3)
                _pad_limits(axis)
                _place_labels(axis, points)  # last: it needs the final limits
            else:
                axis.text(0.5, 0.5, "no evaluated runs yet", ha="center", transform=axis.transAxes)
    fig.suptitle("Fig. 3: score against trainable parameters" + (" and GPU memory" if gpu else "") + " (ours, mean over seeds)")
    fig.tight_layout()
    _save_figure(fig, path)


def _mean_by_run(rows: list[dict[str, Any]], key: str) -> list[tuple[str, float, float]]:
    """(run, x, mean score over seeds) per run."""
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_run[r["run"]].append(r)
    means = []
    for run, rs in sorted(by_run.items()):
        scores = [s for s in map(_primary, rs) if s is not None]
        if scores:
            means.append((run, statistics.fmean(r[key] for r in rs), statistics.fmean(scores)))
    return means


def _place_labels(axis, points: list[tuple[str, float, float]]) -> None:
    """Label each point to its right; where labels would overlap, later ones move down one text line at a
    time (greedy, in display coordinates), with a thin line back to their point."""
    axis.figure.canvas.draw()  # the transforms below need the final limits
    transform = axis.transData
    taken: list[tuple[float, float, float]] = []  # (x, y, width) of placed labels, in pixels
    font = 7 * axis.figure.dpi / 72  # pixels of a 7 pt font
    line = 1.25 * font
    for name, x, y in sorted(points, key=lambda p: -p[2]):
        px, py = transform.transform((x, y))
        width = 0.62 * font * len(name) + 6
        ty = py
        while any(abs(ty - oy) < line and px < ox + ow and ox < px + width for ox, oy, ow in taken):
            ty -= line
        taken.append((px, ty, width))
        axis.annotate(
            name, (x, y), xytext=(6, ty - py), textcoords="offset pixels", fontsize=7, va="center",
            arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5} if ty != py else None,
        )


def _pad_limits(axis, minimum_span: float = 2.0) -> None:
    """At least `minimum_span` points on the score axis, so that two close points do not look far apart."""
    low, high = axis.get_ylim()
    if high - low < minimum_span:
        middle = (low + high) / 2
        axis.set_ylim(middle - minimum_span / 2, middle + minimum_span / 2)


DPI = 120  # figures are drawn and saved at one resolution, so that label offsets in pixels hold


def _save_figure(fig, path: Path) -> None:
    plt = _pyplot()
    with atomic_writer(path, "wb") as f:
        fig.savefig(f, format="png", dpi=DPI)
    plt.close(fig)


def grid_point(run: str) -> tuple[str, str] | None:
    """("4-5-6", "cov-pearson") for a grid setting named like l4-5-6-cov-pearson; None for other runs."""
    for similarity in ("cov-pearson", "mmd", "cos"):
        if run.startswith("l") and run[1:2].isdigit() and run.endswith(f"-{similarity}"):
            return run[1 : -len(similarity) - 1], similarity
    return None


FIG4_PANELS = ("one layer (MITP-small)", "interval 1", "interval 2")


def fig4_panel(layers: str) -> str:
    """Which of the paper's Fig. 4 panels a layer set belongs to: one layer, or layers 1 or 2 apart."""
    numbers = [int(n) for n in layers.split("-")]
    if len(numbers) == 1:
        return FIG4_PANELS[0]
    gaps = {b - a for a, b in zip(numbers, numbers[1:], strict=False)}
    return FIG4_PANELS[1] if gaps == {1} else FIG4_PANELS[2] if gaps == {2} else f"layers {layers}"


def plot_fig4(records: list[dict[str, Any]], path: Path, datasets: list[str]) -> None:
    """Fig. 4: test score per interaction-layer set and similarity, one panel per layer spacing (as the
    paper's three panels), layer sets in numeric order, one line per data set and similarity."""
    plt = _pyplot()
    points: dict[str, dict[tuple[str, str], dict[tuple[int, ...], list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in records:
        point, score = grid_point(r["run"]), _primary(r)
        if point and score is not None and r["dataset"] in datasets:
            layers, similarity = point
            key = tuple(int(n) for n in layers.split("-"))
            points[fig4_panel(layers)][(r["dataset"], similarity)][key].append(score)
    panels = [p for p in FIG4_PANELS if p in points] + sorted(p for p in points if p not in FIG4_PANELS)
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 4.2), squeeze=False)
    for axis, panel in zip(axes[0], panels, strict=False):
        lines = points[panel]
        ticks = sorted({layers for series in lines.values() for layers in series})
        for (dataset, similarity), series in sorted(lines.items()):
            xs = [ticks.index(layers) for layers in sorted(series)]
            axis.plot(xs, [statistics.fmean(series[layers]) for layers in sorted(series)], marker="o", label=f"{dataset} {similarity}")
        axis.set_xticks(range(len(ticks)), ["-".join(map(str, t)) for t in ticks])
        axis.set_title(panel)
        axis.set_xlabel("interaction layers")
        axis.set_ylabel("test accuracy / F1-micro (%)")
        axis.grid(alpha=0.3)
        _pad_limits(axis)
        axis.legend(fontsize=7)
    if not panels:
        axes[0][0].text(0.5, 0.5, "no grid runs evaluated yet", ha="center", transform=axes[0][0].transAxes)
    fig.suptitle("Fig. 4: interaction layers x similarity (ours, mean over seeds)")
    fig.tight_layout()
    _save_figure(fig, path)


def plot_curves(records: list[dict[str, Any]], path: Path) -> None:
    """Training curves: validation metric per epoch, one panel per data set, one line per run (mean over
    seeds), distinct colours and the legend beside the panel, not over the data."""
    plt = _pyplot()
    by_dataset: dict[str, dict[str, list[list[dict[str, Any]]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["history"]:
            by_dataset[r["dataset"]][r["run"]].append(r["history"])
    names = sorted(by_dataset) or ["(none)"]
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 3.2 * len(names)), squeeze=False)
    for axis, dataset in zip(axes[:, 0], names, strict=True):
        runs = by_dataset.get(dataset, {})
        colours = plt.get_cmap("tab20" if len(runs) > 10 else "tab10")
        for i, (run, histories) in enumerate(sorted(runs.items())):
            metric = next(iter(histories[0][0]["val"]), None)
            metric = next((r["metric"] for r in records if r["dataset"] == dataset and r["run"] == run), metric)
            epochs = sorted({h["epoch"] for history in histories for h in history})
            means = [statistics.fmean(100 * h["val"][metric] for history in histories for h in history if h["epoch"] == e) for e in epochs]
            axis.plot(epochs, means, marker=".", color=colours(i % colours.N), linestyle="-" if i < colours.N else "--", label=run)
        axis.set_title(dataset)
        axis.set_xlabel("epoch")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.set_ylabel("val accuracy / F1-micro (%)")
        axis.grid(alpha=0.3)
        if runs:
            axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=1 + len(runs) // 14)
        else:
            axis.text(0.5, 0.5, "no runs yet", ha="center", transform=axis.transAxes)
    fig.tight_layout()
    _save_figure(fig, path)
