"""mitp's one Rich progress bar (training epochs, downloads, image checks, batch prediction)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def progress_bar(console: Console, unit_bytes: bool = False, enabled: bool = True) -> Progress:
    """Description, bar, done/total (items, or bytes with `unit_bytes`) and time left; gone when finished."""
    count = DownloadColumn() if unit_bytes else MofNCompleteColumn()
    return Progress(
        TextColumn("{task.description}"), BarColumn(), count, TimeRemainingColumn(),
        console=console, transient=True, disable=not enabled,
    )
