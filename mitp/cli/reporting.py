"""The paper's tables from finished runs: mitp report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .common import (
    _fail,
    _require,
    app,
    console,
)


@app.command()
def report(
    runs: Annotated[Path, typer.Option(help="Runs folder: <runs>/<dataset>/<run>/seed<n>/result.json.")] = Path("results/runs"),
    paper: Annotated[Path | None, typer.Option(help="The paper's numbers (YAML); default: the packaged copy.", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")] = Path("results/report"),
    datasets: Annotated[str, typer.Option(help="Comma-separated data sets, in column order.")] = "food101,mmimdb,snlive",
) -> None:
    """Rebuild Tables 1-3, parameter/time/memory per run, Fig. 3, Fig. 4 and training curves beside the paper."""
    _require("yaml", "pyarrow", "matplotlib", extra="workflow")
    from ..report.tables import write_report
    from ..resources import PAPER, resource

    paper = paper or resource(PAPER)
    if not paper.is_file():
        _fail(f"paper numbers not found: {paper}")
    summary = write_report(runs, paper, out, [d for d in datasets.split(",") if d], warn=lambda m: console.print(f"[bold yellow]warning:[/] {escape(m)}", soft_wrap=True))
    console.print(f"[bold green]report[/] {out}: {summary['runs_evaluated']} evaluated of {summary['runs_found']} finished runs")
