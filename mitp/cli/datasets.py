"""The data sets: mitp data download, prepare, import and cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from .common import (
    _fail,
    _require,
    app,
    console,
)

data_app = typer.Typer(help="Download and prepare the data sets (real ones and the offline twins).", no_args_is_help=True)
app.add_typer(data_app, name="data")
DATASETS_HELP = "food101 | mmimdb | snlive | demo-food101 | demo-mmimdb | demo-snlive | demo-cue"


@data_app.command("download")
def data_download(
    dataset: Annotated[str, typer.Argument(help=DATASETS_HELP)],
    raw: Annotated[Path | None, typer.Option(help="Raw folder; default data/raw/<dataset>.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the offline twins.")] = 0,
    retries: Annotated[int, typer.Option(min=0, help="Resume an interrupted download this many times (1, 2, 4... s apart).")] = 3,
) -> None:
    """Fetch a data set in its upstream layout (resumable, checksummed); twins are generated offline.
    Only interruptions are retried: a refusal, a missing credential or an unreachable host is said at once."""
    from ..data.download import download_dataset_resuming
    from ..files.progress import progress_bar

    raw = raw or Path("data/raw") / dataset
    with progress_bar(console, unit_bytes=True) as bar:
        task = bar.add_task(f"download {dataset}", total=None)
        root = download_dataset_resuming(
            dataset, raw, retries, seed=seed,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            on_retry=lambda err, attempt: console.print(f"[yellow]interrupted[/] ({escape(str(err))}); resuming, try {attempt} of {retries + 1}", soft_wrap=True),
        )
    console.print(f"[bold green]ready[/]: {dataset} in {root}")


@data_app.command("prepare")
def data_prepare(
    dataset: Annotated[str, typer.Argument(help=DATASETS_HELP)],
    raw: Annotated[Path | None, typer.Option(help="Raw folder in the upstream layout; default data/raw/<dataset>.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Prepared folder; default data/<dataset>.")] = None,
    workers: Annotated[int, typer.Option(help="Threads that decode images.")] = 8,
    cache_size: Annotated[int | None, typer.Option("--cache-size", min=1, help="Also cache every image as its uint8 CLIP crop of this size (the backbone's input size), for fast training.")] = None,
) -> None:
    """Write {train,val,test}.parquet, classes.json and prepare_report.json; bad pairs are dropped and counted."""
    _require("pyarrow")
    from ..data.prepare import prepare_dataset
    from ..files.progress import progress_bar

    raw, out = raw or Path("data/raw") / dataset, out or Path("data") / dataset
    with progress_bar(console) as bar:
        task = bar.add_task(f"{'cache' if cache_size else 'check'} images of {dataset}", total=None)
        report = prepare_dataset(
            dataset, raw, out, workers, progress=lambda done, total: bar.update(task, completed=done, total=total), cache_size=cache_size
        )
    _say_prepared(dataset, report, out)


def _say_prepared(name: str, report: dict[str, Any], out: Path) -> None:
    counts = ", ".join(f"{split} {n:,}" for split, n in report["counts"].items())
    cache = report.get("image_cache")
    cached = f"; image cache {cache['images']:,} images, {cache['bytes_on_disk'] / 2**30:.2f} GiB" if cache else ""
    console.print(f"[bold green]prepared[/] {escape(name)}: {counts}; dropped {report['dropped_total']:,}{cached} (see {escape(str(out))}/prepare_report.json)")


@data_app.command("import")
def data_import(
    pairs: Annotated[Path, typer.Argument(help="A .csv, .jsonl or .parquet file: image (a path under its folder), text, label or labels, optional split.")],
    name: Annotated[str, typer.Option("--name", help="The data set's name (config: datasets.<name>).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Prepared folder; default data/<name>.")] = None,
    task: Annotated[str | None, typer.Option(help="single-label or multi-label; default: multi-label when the file has a labels column.")] = None,
    workers: Annotated[int, typer.Option(help="Threads that decode images.")] = 8,
    cache_size: Annotated[int | None, typer.Option("--cache-size", min=1, help="Also cache every image as its uint8 CLIP crop of this size.")] = None,
) -> None:
    """Prepare a data set of your own with the checks and report of the upstream ones."""
    _require("pyarrow")
    from ..config import READING_NAME
    from ..data.importer import import_pairs
    from ..files.progress import progress_bar

    if not READING_NAME.match(name):
        _fail(f"--name {name!r}: a data set name is lower-case words joined by '-' (it names a folder and a config key)")
    if task not in (None, "single-label", "multi-label"):
        _fail(f"--task {task!r} is not one of single-label, multi-label")
    out = out or Path("data") / name
    with progress_bar(console) as bar:
        bar_task = bar.add_task(f"check images of {name}", total=None)
        report = import_pairs(pairs, name, out, task, workers, lambda done, total: bar.update(bar_task, completed=done, total=total), cache_size)
    _say_prepared(name, report, out)
    console.print(f"add to config.yaml:  datasets: {{{name}: {{task: {report['task']}, data_dir: {out}}}}}", soft_wrap=True, markup=False)


@data_app.command("cache")
def data_cache(
    data_dir: Annotated[Path, typer.Argument(help="A prepared folder (mitp data prepare).")],
    size: Annotated[int, typer.Option("--size", min=1, help="Crop size: the backbone's input size (224 for CLIP ViT-L/14).")],
    workers: Annotated[int, typer.Option(help="Threads that decode images.")] = 8,
) -> None:
    """Cache every image of a prepared data set once, as its uint8 CLIP crop (memory-mapped by the loader)."""
    _require("pyarrow")
    from ..data.cache import build_cache
    from ..files.progress import progress_bar

    with progress_bar(console) as bar:
        task = bar.add_task(f"cache images of {data_dir}", total=None)
        summary = build_cache(data_dir, size, workers, progress=lambda done, total: bar.update(task, completed=done, total=total))
    console.print(f"[bold green]cached[/] {summary['images']:,} images of {data_dir} at {size} px: {summary['bytes_on_disk'] / 2**30:.2f} GiB")
