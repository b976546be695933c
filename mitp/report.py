"""Rebuild the paper's tables and figures from finished runs, beside the paper's own numbers.

Reads every `result.json` (written when a training run finishes), the `metrics-test.json` beside it and
`history.json`, under a runs folder laid out as `<runs>/<dataset>/<run>/seed<n>/`. Writes Markdown and
CSV tables (Table 1, 2, 3, parameters/time/memory per run) and PNG plots (Fig. 3, Fig. 4, training
curves). A run that is not there shows as `missing`, never as a zero. Data sets named `demo-<x>` are
placed in the paper's `<x>` column (the offline twins), so the demo report has the paper's shape.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .atomic import atomic_write_json, atomic_write_text, atomic_writer
from .outputs import claim, mark

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
            record["test"] = _read_json(metrics_path, dict)["metrics"] if metrics_path.is_file() else None
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
    return _aggregate([r for r in records if r["dataset"] == dataset and r["run"] == run])


def build_tables(records: list[dict[str, Any]], paper: dict[str, Any], datasets: list[str]) -> dict[str, list[dict[str, str]]]:
    """Rows (dicts of column -> text) of each table; every dataset gets an `ours` and a `paper` column."""
    columns = {d: paper_column(d) for d in datasets}
    table1 = []
    for method, values in paper["table1"].items():
        row = {"method": method}
        ours_setting = TABLE1_OURS.get(method)
        for dataset, column in columns.items():
            # a peer method of the paper has no run of ours: "-" (not applicable), unlike a missing run
            row[f"{dataset} (ours)"] = _fmt(_cell(records, dataset, ours_setting)) if ours_setting else "-"
            row[f"{column} (paper)"] = _fmt(values.get(column))
        table1.append(row)
    table2 = []
    for model, setting in TABLE2_SETTINGS.items():
        row = {"model": model, "setting": setting}
        for dataset, column in columns.items():
            row[f"{dataset} (ours)"] = _fmt(_cell(records, dataset, setting))
            row[f"{column} (paper)"] = _fmt(paper["table2"][model].get(column))
        table2.append(row)
    table3 = []
    food = next((d for d in datasets if paper_column(d) == "food101"), None)
    full = _cell(records, food, "mitp") if food else None
    for percent, paper_acc in paper["table3"].items():
        ours = _cell(records, food, f"mitp-frac{percent}") if food else None
        table3.append({
            "training data (%)": str(percent),
            "ours acc (%)": _fmt(ours),
            "ours degradation (%)": _fmt((full[0] - ours[0],)) if ours and full else MISSING,
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


def table_notes(records: list[dict[str, Any]], datasets: list[str]) -> list[str]:
    """What differs from the paper, said under every table: the head behind our numbers and Food101's split."""
    heads = sorted({r.get("head", "image") for r in records if not r["run"].endswith(IMAGE_HEAD_SUFFIX)} - {"linear"})
    notes = [
        f"Head of our runs: {', '.join(heads) or 'none yet'} (DESIGN.md 3.7: `fused` = image and caption embeddings, "
        "`image` = image embedding alone; the linear probe has a linear head of its own; runs named `<setting>-image` "
        "use the image head and are compared in heads.md)."
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


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    columns = list(dict.fromkeys(key for row in rows for key in row))
    table = pa.table({c: pa.array([row.get(c, MISSING) for row in rows], pa.string()) for c in columns})
    with atomic_writer(path, "wb") as f:
        pacsv.write_csv(table, f)


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


def plot_fig3(records: list[dict[str, Any]], path: Path, datasets: list[str]) -> None:
    """Fig. 3: test score against trainable parameters and against peak training memory, per setting."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for dataset in datasets:
        chosen = [r for r in records if r["dataset"] == dataset and _score(r) and r["fraction"] == 1.0]
        for axis, key, label in ((axes[0], "trainable_params", "trainable parameters"), (axes[1], "peak_memory_gib", "peak training memory (GiB)")):
            xs = [r[key] for r in chosen]
            ys = [_score(r)[0] for r in chosen]
            axis.scatter(xs, ys, label=dataset)
            for r, x, y in zip(chosen, xs, ys, strict=True):
                axis.annotate(r["run"], (x, y), fontsize=7, alpha=0.8)
            axis.set_xlabel(label)
            axis.set_ylabel("test accuracy / F1-micro (%)")
    axes[0].set_xscale("log")
    if any(_score(r) for r in records):
        axes[0].legend(fontsize=8)
    else:
        fig.text(0.5, 0.5, "no evaluated runs yet", ha="center")
    fig.suptitle("Fig. 3: score vs trainable parameters and memory (ours)")
    fig.tight_layout()
    with atomic_writer(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def grid_point(run: str) -> tuple[str, str] | None:
    """("4-5-6", "cov-pearson") for a grid setting named like l4-5-6-cov-pearson; None for other runs."""
    for similarity in ("cov-pearson", "mmd", "cos"):
        if run.startswith("l") and run[1:2].isdigit() and run.endswith(f"-{similarity}"):
            return run[1 : -len(similarity) - 1], similarity
    return None


def plot_fig4(records: list[dict[str, Any]], path: Path, datasets: list[str]) -> None:
    """Fig. 4: test score per interaction-layer set and similarity (the grid settings named l<layers>-<sim>)."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(9, 4.2))
    by_similarity: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for r in records:
        point = grid_point(r["run"])
        if point and _score(r):
            layers, similarity = point
            by_similarity[(r["dataset"], similarity)][layers] = _score(r)[0]
    for (dataset, similarity), points in sorted(by_similarity.items()):
        names = list(points)
        axis.plot(names, [points[n] for n in names], marker="o", label=f"{dataset} {similarity}")
    axis.set_xlabel("interaction layers")
    axis.set_ylabel("test accuracy / F1-micro (%)")
    if by_similarity:
        axis.legend(fontsize=8)
    else:
        axis.text(0.5, 0.5, "no grid runs evaluated yet", ha="center", transform=axis.transAxes)
    axis.set_title("Fig. 4: interaction layers x similarity (ours)")
    fig.tight_layout()
    with atomic_writer(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def plot_curves(records: list[dict[str, Any]], path: Path) -> None:
    """Training curves: validation metric per epoch, one line per run."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(9, 4.2))
    for r in records:
        history = r["history"]
        if history:
            axis.plot([h["epoch"] for h in history], [100 * h["val"][r["metric"]] for h in history], label=f"{r['dataset']}/{r['run']}")
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation accuracy / F1-micro (%)")
    if records:
        axis.legend(fontsize=6, ncol=2)
    axis.set_title("Training curves")
    fig.tight_layout()
    with atomic_writer(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
