"""`mitp score`: a collection of image-caption pairs scored in shards, resumable (torch-free)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .common import _model_folder, _require, app, console


@app.command("score")
def score(
    source: Annotated[Path, typer.Argument(help="A parquet, CSV or JSON-lines file, a folder of parquet shards, or WebDataset tar shards.", show_default=False)],
    model: Annotated[Path, typer.Option("--model", "-m", help="Bundle folder or release.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the scores: shards/<shard>.parquet and manifest.json.", show_default=False)],
    variant: Annotated[str, typer.Option(help="fp32 | fp16 (GPUs) | int8 (CPUs).")] = "fp32",
    provider: Annotated[str, typer.Option(help="auto (CUDA when it runs) | cuda | cpu.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Pairs per model call.", min=1, max=4096)] = 32,
    workers: Annotated[int | None, typer.Option(help="Decoding processes ahead of the model; 0 decodes in this process. Default: one per core but one, at most 4.", min=0, max=64, show_default=False)] = None,
    shard: Annotated[list[str] | None, typer.Option("--shard", help="Score only this input shard (repeatable): how the workflow spreads a collection over jobs.", show_default=False)] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="A progress bar with rows per second.")] = True,
) -> None:
    """Score every pair of a collection with a bundle: one parquet file per input shard (id, label, score,
    probabilities, error) and a manifest. A rerun after a kill scores only the shards that are missing; a
    row that cannot be scored is recorded with its reason and the rest go on."""
    _require("pyarrow", extra="score")
    from ..score.engine import ScoreOptions, score_collection

    options = ScoreOptions(variant=variant, provider=provider, batch_size=batch_size, workers=workers)
    bar = Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"), TimeElapsedColumn(), TextColumn("{task.fields[rate]}"), console=console, disable=not progress)
    with bar:
        task = bar.add_task("rows", total=None, rate="")

        def advance(rows: int) -> None:
            bar.advance(task, rows)
            elapsed = bar.tasks[task].elapsed or 0.0
            bar.update(task, rate=f"{bar.tasks[task].completed / elapsed:,.1f} rows/s" if elapsed else "")

        manifest = score_collection(source, _model_folder(model), out, options, advance, only=shard)
    failed = manifest["rows_failed"]
    console.print(
        f"[bold green]scored[/] {manifest['rows_in'] - failed:,} of {manifest['rows_in']:,} rows in {len(manifest['shards'])} shards into {escape(str(out))}"
        + ("" if manifest["complete"] else " (more shards to score)")
        + (f"; {failed:,} could not be scored (their reasons are in manifest.json and each shard's `error` column)" if failed else ""),
        soft_wrap=True,
    )
