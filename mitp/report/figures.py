"""The paper's figures from run records: Fig. 3 (score against parameters and memory), Fig. 4 (the layer
and similarity grid) and the training curves, as PNG files written whole."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..files.atomic import atomic_writer
from .records import RunRecord


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

PAPER_BUDGET = 2.0e6  # MITP's trainable parameters on ViT-L/14, as the paper states

def plot_fig3(records: list[RunRecord], path: Path, datasets: list[str]) -> None:
    """Fig. 3: test score against trainable parameters, one panel per data set, the paper's 2.0M marked;
    for runs that measured GPU memory, a second row against peak training memory (a CPU process's RSS
    says nothing about a GPU's memory, so CPU runs get the parameter panels alone). Labels do not overlap."""
    plt = _pyplot()
    chosen = [r for r in records if r.dataset in datasets and r.score and r.full_data and r.grid_point is None]
    gpu = [r for r in chosen if r.peak_memory_kind.startswith("cuda") and math.isfinite(r.peak_memory_gib)]
    shown = [d for d in datasets if any(r.dataset == d for r in chosen)] or datasets[:1]
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
            points = _mean_by_run([r for r in records_here if r.dataset == dataset], key)
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

def _mean_by_run(rows: list[RunRecord], key: str) -> list[tuple[str, float, float]]:
    """(run, x, mean score over seeds) per run."""
    by_run: dict[str, list[RunRecord]] = defaultdict(list)
    for r in rows:
        by_run[r.run].append(r)
    means = []
    for run, rs in sorted(by_run.items()):
        scores = [s for s in (r.primary_score for r in rs) if s is not None]
        if scores:
            means.append((run, statistics.fmean(getattr(r, key) for r in rs), statistics.fmean(scores)))
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

FIG4_PANELS = ("one layer (MITP-small)", "interval 1", "interval 2")

def fig4_panel(layers: tuple[int, ...]) -> str:
    """Which of the paper's Fig. 4 panels a layer set belongs to: one layer, or layers 1 or 2 apart."""
    if len(layers) == 1:
        return FIG4_PANELS[0]
    gaps = {b - a for a, b in zip(layers, layers[1:], strict=False)}
    return FIG4_PANELS[1] if gaps == {1} else FIG4_PANELS[2] if gaps == {2} else "layers " + "-".join(map(str, layers))

def plot_fig4(records: list[RunRecord], path: Path, datasets: list[str]) -> None:
    """Fig. 4: test score per interaction-layer set and similarity, one panel per layer spacing (as the
    paper's three panels), layer sets in numeric order, one line per data set and similarity."""
    plt = _pyplot()
    points: dict[str, dict[tuple[str, str], dict[tuple[int, ...], list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in records:
        point, score = r.grid_point, r.primary_score
        if point and score is not None and r.dataset in datasets:
            layers, similarity = point
            points[fig4_panel(layers)][(r.dataset, similarity)][layers].append(score)
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

def plot_curves(records: list[RunRecord], path: Path) -> None:
    """Training curves: validation metric per epoch, one panel per data set, one line per run (mean over
    seeds), distinct colours and the legend beside the panel, not over the data."""
    plt = _pyplot()
    by_dataset: dict[str, dict[str, list[list[dict[str, Any]]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.history:
            by_dataset[r.dataset][r.run].append(r.history)
    names = sorted(by_dataset) or ["(none)"]
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 3.2 * len(names)), squeeze=False)
    for axis, dataset in zip(axes[:, 0], names, strict=True):
        runs = by_dataset.get(dataset, {})
        colours = plt.get_cmap("tab20" if len(runs) > 10 else "tab10")
        for i, (run, histories) in enumerate(sorted(runs.items())):
            metric = next(iter(histories[0][0]["val"]), None)
            metric = next((r.metric for r in records if r.dataset == dataset and r.run == run), metric)
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
